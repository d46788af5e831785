"""The router: capable, healthy services → a strategy's order → primary + fallbacks.

Reads services from the service-health capability (``health.Service``): a service is
capable when ``capabilities`` lists the task type, and routable when it is enabled,
not unhealthy and its circuit is not open. A routable service that outlier detection
ejected (or that asked for a cooldown) for this task type goes last, after every other
one: tried only when all the others failed, where a success brings it back early.
Once its ejection's time is up it stays last until its one probe try succeeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from django.db.models import Count
from django.utils import timezone

from health.models import Service
from orchestration.core.choices import JobStatus
from orchestration.core.models import Job
from orchestration.routing.learning import confidence
from orchestration.routing.models import OutlierState, RotationCursor, RouteStat, TypeMultiplier
from orchestration.routing.priority import priority_level, priority_score
from orchestration.routing.strategies import StrategyContext, get_strategy

ROUTED_KIND = "routing.task"
REFERENCE_PREFIX = "route:"

# Retry strategy per priority (seed: exponential 3 retries / 30 s, linear 3 / 60 s).
RETRY_STRATEGIES = {
    "critical": {"max_retries": 3, "backoff": "exponential", "timeout": 30},
    "high": {"max_retries": 3, "backoff": "exponential", "timeout": 30},
    "normal": {"max_retries": 3, "backoff": "linear", "timeout": 60},
    "low": {"max_retries": 2, "backoff": "linear", "timeout": 60},
}
MAX_FALLBACKS = 3
# Strategies that read the tasks in flight per service (one aggregate query).
LOAD_AWARE = frozenset({"least_loaded", "least_request", "ewma", "best"})


class NoRoute(Exception):
    """No enabled, healthy, closed-circuit service can take this task type (409)."""


@dataclass
class RouteDecision:
    task_type: str
    priority: str
    strategy: str
    primary_service: str
    endpoint: str
    fallback_services: list[str]
    retry_strategy: dict[str, Any]
    priority_score: float
    priority_level: int
    confidence: float
    reasoning: str
    excluded: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def in_flight_by_service() -> dict[str, int]:
    """Routed tasks not yet finished, per service they are currently assigned to."""

    rows = (
        Job.objects.filter(kind=ROUTED_KIND, status__in=(JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.RETRY))
        .values_list("reference")
        .annotate(n=Count("id"))
    )
    return {ref.removeprefix(REFERENCE_PREFIX): n for ref, n in rows if ref.startswith(REFERENCE_PREFIX)}


def routable_services(task_type: str) -> tuple[list[Any], dict[str, str]]:
    """(capable routable services, {excluded service: why})."""

    capable, excluded = [], {}
    for service in Service.objects.select_related("circuit").order_by("name"):
        if task_type not in (service.capabilities or []):
            continue
        if not service.enabled:
            excluded[service.name] = "disabled"
        elif service.health == "unhealthy":
            excluded[service.name] = "unhealthy"
        elif service.circuit_id and service.circuit.state == "open":
            excluded[service.name] = "circuit open"
        else:
            capable.append(service)
    return capable, excluded


def capable_count(task_type: str) -> int:
    """Enabled services that list this task type (the share cap's denominator)."""

    return sum(
        1
        for caps in Service.objects.filter(enabled=True).values_list("capabilities", flat=True)
        if task_type in (caps or [])
    )


def route(
    task_type: str,
    priority: str = "normal",
    *,
    strategy: str | None = None,
    requirements: dict[str, Any] | None = None,
    advance: bool = False,
) -> RouteDecision:
    """Decide where a task goes. ``advance`` moves the round-robin cursor (executions
    do; a routing preview does not)."""
    level = priority_level(priority)
    if not isinstance(task_type, str) or not task_type:
        raise ValueError("type must be a non-empty string")
    services, excluded = routable_services(task_type)
    required = set((requirements or {}).get("capabilities", []))
    if required:
        for service in list(services):
            missing = required - set(service.capabilities or [])
            if missing:
                services.remove(service)
                excluded[service.name] = f"lacks {', '.join(sorted(missing))}"
    if not services:
        why = "; ".join(f"{name}: {reason}" for name, reason in excluded.items()) or "no service lists it"
        raise NoRoute(f"no service can take task type {task_type!r} now ({why})")
    stats = {s.service_name: s.as_stats() for s in RouteStat.objects.filter(task_type=task_type)}
    has_history = any(s.count for s in stats.values())
    chosen = strategy or ("best" if has_history else "round_robin")
    balancer = get_strategy(chosen)
    live = OutlierState.live(task_type)
    names = [s.name for s in services if s.name not in live]
    # Everyone out: the soonest back goes first rather than no route at all.
    ejected = sorted((s.name for s in services if s.name in live), key=lambda n: (live[n].until, n))
    ctx = StrategyContext(
        rotation=(RotationCursor.take(task_type) if advance else RotationCursor.peek(task_type))
        if chosen == "round_robin"
        else 0,
        in_flight=in_flight_by_service() if chosen in LOAD_AWARE else {},
        stats=stats,
        weights={s.name: s.weight for s in services},
    )
    order = (balancer(names, ctx) if names else []) + ejected
    now = timezone.now()
    for name in ejected:
        row = live[name]
        if row.awaiting_probe(now):
            ctx.notes[name] = (
                f"ejection over at {row.until:%H:%M:%S} ({row.reason}); back in traffic once one probe try succeeds"
            )
        else:
            ctx.notes[name] = f"ejected until {row.until:%H:%M:%S} ({row.reason}), tried only if all others fail"
    fallbacks = order[1 : 1 + MAX_FALLBACKS]
    # A service waiting for its probe stays within reach, or behind many others it would never get one.
    fallbacks += [n for n in order[1 + MAX_FALLBACKS :] if n in live and live[n].awaiting_probe(now)]
    primary = next(s for s in services if s.name == order[0])
    primary_stats = stats.get(primary.name)
    conf = confidence(primary_stats.successes, primary_stats.count) if primary_stats else confidence(0, 0)
    reasoning = _reasoning(chosen, order, ctx.notes, primary_stats, excluded)
    return RouteDecision(
        task_type=task_type,
        priority=priority,
        strategy=chosen,
        primary_service=primary.name,
        endpoint=primary.base_url.rstrip("/") + "/process",
        fallback_services=fallbacks,
        retry_strategy=dict(RETRY_STRATEGIES[priority]),
        priority_score=priority_score(priority, task_type, TypeMultiplier.table()),
        priority_level=level,
        confidence=conf,
        reasoning=reasoning,
        excluded=excluded,
    )


def _reasoning(strategy: str, order: list[str], notes: dict[str, str], stats, excluded: dict[str, str]) -> str:
    """Why the primary, and why not each of the others."""
    primary, others = order[0], order[1:]
    parts = [f"{len(order)} capable service(s); {strategy} chose {primary}: {notes.get(primary, 'first in order')}"]
    if stats and stats.count:
        parts.append(
            f"{primary} succeeded {stats.successes}/{stats.count} times"
            + (f", {stats.avg_ms:.0f} ms on average" if stats.avg_ms else "")
        )
    else:
        parts.append(f"no history for {primary} on this task type yet")
    for name in others:
        parts.append(f"not {name}: {notes.get(name, 'later in order')}")
    for name, why in excluded.items():
        parts.append(f"not {name}: {why}")
    return "; ".join(parts)
