"""Validation shared by the API, the admin and the fleet file: a worker's target, its
cadence and the dependency graph it joins."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from orchestration.core import outbound, runnables
from orchestration.fleet import cadence, graph, output_schema
from orchestration.fleet.choices import OverlapPolicy

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}


class SpecError(ValueError):
    """``errors`` maps a field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def validate_target(target: Any) -> dict[str, Any]:
    if not isinstance(target, Mapping):
        raise SpecError({"target": 'must be an object such as {"type": "python", "path": "pkg.module.func"}'})
    kind = target.get("type")
    if kind == "python":
        path = target.get("path")
        if not isinstance(path, str) or "." not in path or not all(p.isidentifier() for p in path.split(".")):
            raise SpecError({"target": "python target needs a dotted path, e.g. pkg.module.func"})
        unrunnable = runnables.problem(path)
        if unrunnable:
            raise SpecError({"target": f"path: {unrunnable}"})
        if "kwargs" in target and not isinstance(target["kwargs"], Mapping):
            raise SpecError({"target": "kwargs must be an object"})
        return dict(target)
    if kind == "http":
        url, method = target.get("url"), str(target.get("method", "POST")).upper()
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "{base_url}")):
            raise SpecError({"target": "http target needs a url starting with http://, https:// or {base_url}"})
        if method not in HTTP_METHODS:
            raise SpecError({"target": f"method must be one of {', '.join(sorted(HTTP_METHODS))}"})
        if "headers" in target and not isinstance(target["headers"], Mapping):
            raise SpecError({"target": "headers must be an object"})
        expected = target.get("expected_status")
        if expected is not None and (not isinstance(expected, int) or not 100 <= expected <= 599):
            raise SpecError({"target": "expected_status must be an HTTP status code"})
        refused = outbound.url_problem(url.replace("{base_url}", settings.FLEET_BASE_URL))
        if refused:
            raise SpecError({"target": f"url: outbound call refused: {refused}"})
        return {**target, "method": method}
    raise SpecError({"target": "type must be 'python' or 'http'"})


def defines_code(target: Mapping[str, Any], stored: Any) -> bool:
    """True when saving ``target`` over ``stored`` sets what python code runs (a new python
    target, or another path or kwargs): that needs the run_code permission, not only staff."""
    return target.get("type") == "python" and (
        not isinstance(stored, Mapping)
        or stored.get("type") != "python"
        or (stored.get("path"), stored.get("kwargs") or {}) != (target.get("path"), target.get("kwargs") or {})
    )


def validate_cadence(
    interval_seconds: int | None, cron: str, execution_model: str, timezone: str = "UTC", jitter_seconds: int = 0
) -> None:
    """Time-triggered workers fire at exact clock times: a cron, no jitter, no rate
    reduction. Scheduled workers take an interval or a cron, and may be jittered."""
    try:
        cadence.validate_timezone(timezone)
    except cadence.CadenceError as exc:
        raise SpecError({"timezone": str(exc)}) from None
    try:
        spec = cadence.validate(interval_seconds, cron, timezone)
    except cadence.CadenceError as exc:
        raise SpecError({"cron" if cron else "interval_seconds": str(exc)}) from None
    if execution_model != "on_demand" and spec.kind == "none":
        raise SpecError({"interval_seconds": "a scheduled or time-triggered worker needs interval_seconds or cron"})
    if execution_model == "time_triggered":
        if spec.kind != "cron":
            raise SpecError(
                {"interval_seconds": "a time-triggered worker fires at exact clock times: give a cron, not an interval"}
            )
        if jitter_seconds:
            raise SpecError({"jitter_seconds": "a time-triggered worker fires at exact clock times: jitter must be 0"})


def validate_schedule_options(overlap: Any, catch_up: Any, jitter: Any, pause_after: Any, schema: Any) -> None:

    if overlap not in OverlapPolicy.values:
        raise SpecError({"overlap": f"must be one of {', '.join(OverlapPolicy.values)}"})
    for field, value, top in (
        ("catch_up_seconds", catch_up, 366 * 86400),
        ("jitter_seconds", jitter, 86400),
        ("pause_after_failures", pause_after, 1000),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise SpecError({field: f"must be a whole number from 0 to {top}"})
    problem = output_schema.schema_problem(schema)
    if problem:
        raise SpecError({"output_schema": problem})


def validate_timeouts(timeout: int, cap: int | None, task_timeout: int) -> None:
    """A run may last up to its cap (``cap``, else twice ``timeout``: recovery raises a
    slow worker's timeout that far). The cluster kills any task older than
    ``task_timeout`` (Q_TIMEOUT), so a run allowed longer would be cut off by it instead
    of ending as timed out, and retried into the same wall."""
    if cap is not None and cap < timeout:
        raise SpecError({"max_timeout_seconds": "must be at least timeout_seconds"})
    longest, why = (cap, "max_timeout_seconds") if cap is not None else (timeout * 2, "twice timeout_seconds")
    if longest >= task_timeout:
        raise SpecError(
            {
                "max_timeout_seconds" if cap is not None else "timeout_seconds": (
                    f"a run may last up to {longest} s ({why}), which the cluster's task timeout "
                    f"(Q_TIMEOUT = {task_timeout} s) would cut off; lower it or raise Q_TIMEOUT"
                )
            }
        )


def validate_names(value: Any, field: str) -> list[str]:
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SpecError({field: "must be a list of worker names"})
    return list(dict.fromkeys(value))


def validate_graph(name: str, upstreams: list[str], edges: Mapping[str, list[str]], known: set[str]) -> None:
    """``edges`` is the rest of the fleet (worker → upstreams); ``known`` all names."""
    missing = sorted(set(upstreams) - known - {name})
    if missing:
        raise SpecError({"depends_on": f"unknown worker(s): {', '.join(missing)}"})
    if name in upstreams:
        raise SpecError({"depends_on": "a worker cannot depend on itself"})
    try:
        graph.check_acyclic({**edges, name: upstreams})
    except graph.DependencyCycle as exc:
        raise SpecError({"depends_on": str(exc)}) from None
