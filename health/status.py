"""Pure health arithmetic: response classification, uptime, overall health, root causes.

No ORM here; the sweep and the views feed plain values in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
UNKNOWN = "unknown"
CIRCUIT_OPEN = "circuit_open"
DEGRADED = "degraded"

DOWN = frozenset({UNHEALTHY, CIRCUIT_OPEN})

# A JSON body may report its own status; these words mean "I am not fine".
FAILING_STATUS_WORDS = frozenset({"fail", "failed", "failing", "error", "down", "unhealthy", "critical"})


def classify_response(status_code: int, content_type: str, body: bytes) -> str | None:
    """None when the response means healthy, else the error message to record."""
    if not 200 <= status_code < 300:
        return f"HTTP {status_code}"
    if "json" not in (content_type or "").lower():
        return None
    if not body.strip():
        return "invalid response: empty JSON body"
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"invalid response: body is not valid JSON ({str(exc)[:80]})"
    if isinstance(document, dict) and isinstance(document.get("status"), str):
        word = document["status"].strip().lower()
        if word in FAILING_STATUS_WORDS:
            return f"service reports status {document['status']!r}"
    return None


def uptime_percentage(total_checks: int, successful_checks: int) -> float | None:
    """Share of successful checks, two decimals; None before the first check."""
    if total_checks <= 0:
        return None
    return round(100.0 * min(successful_checks, total_checks) / total_checks, 2)


def overall_health(healths: Iterable[str]) -> str:
    """healthy when every service is healthy, unhealthy when none is, else degraded.

    With nothing to monitor nothing is failing, so that reads healthy.
    """
    values = list(healths)
    healthy = sum(1 for h in values if h == HEALTHY)
    if healthy == len(values):
        return HEALTHY
    if healthy == 0:
        return UNHEALTHY
    return DEGRADED


def root_causes(depends_on: Mapping[str, Iterable[str]], down: Iterable[str]) -> dict[str, list[str]]:
    """For every down service, the down services at the bottom of its failure.

    A down service none of whose dependencies is down is its own root cause. A down
    service with down dependencies is blamed on the deepest down services reachable
    through down dependencies only (a healthy link breaks the chain). In a cycle of
    down services with nothing deeper, the alphabetically first member is named, so
    every member of that cycle names the same one.
    """
    down_set = set(down)
    deps = {name: sorted(set(depends_on.get(name, ())) & down_set) for name in down_set}
    result: dict[str, list[str]] = {}
    for name in sorted(down_set):
        if not deps[name]:
            result[name] = [name]
            continue
        seen: set[str] = set()
        stack = list(deps[name])
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack.extend(deps[node])
        roots = sorted(node for node in seen if not deps[node])
        # Only cycles below: every member reaches the same set, so all name one.
        result[name] = roots or [min(seen)]
    return result


def cycle_path(depends_on: Mapping[str, Iterable[str]], name: str, new_deps: Iterable[str]) -> list[str]:
    """The dependency path back to ``name`` if it were given ``new_deps``; [] if none."""
    graph = {k: list(v) for k, v in depends_on.items()}
    graph[name] = list(new_deps)
    seen: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str]:
        for nxt in sorted(graph.get(node, ())):
            if nxt == name:
                return [*path, nxt]
            if nxt not in seen:
                seen.add(nxt)
                found = walk(nxt, [*path, nxt])
                if found:
                    return found
        return []

    return walk(name, [name])
