"""The worker's circuit breaker: the persisted breaker of the health app, named
``worker:<name>``. Imported lazily so the fleet works (breaker always closed, nothing
recorded) on an installation without the health app's breaker model."""

from __future__ import annotations

import logging

log = logging.getLogger("orchestration.fleet")


def model():
    """The breaker model, or None without the health app."""
    return _model()


def _model():
    try:
        from health.models import CircuitBreaker
    except (ImportError, AttributeError):
        return None
    return CircuitBreaker


def get(name: str):
    model = _model()
    return model.for_name(name) if model is not None else None


def allows(name: str) -> bool:
    breaker = get(name)
    return True if breaker is None else bool(breaker.allow())


def record(name: str, success: bool) -> None:
    breaker = get(name)
    if breaker is not None:
        breaker.record(success)


def state(name: str) -> str:
    breaker = get(name)
    return "unknown" if breaker is None else str(breaker.state)


def states(names: list[str]) -> dict[str, str]:
    """Breaker states for many workers in one query (admin list, status endpoint)."""
    model = _model()
    if model is None:
        return {}
    try:
        return dict(model.objects.filter(name__in=names).values_list("name", "state"))
    except Exception:  # the table may not exist yet on a half-migrated database
        return {}


def trip(name: str, *, actor: str = "orchestrator") -> str:
    """Open the breaker now: its own ``trip``/``force_open`` if it has one, else by
    recording failures until it opens (bounded by its failure threshold)."""
    breaker = get(name)
    if breaker is None:
        return "unavailable"
    for method in ("trip", "force_open", "open_now"):
        if callable(getattr(breaker, method, None)):
            try:
                getattr(breaker, method)(actor=actor)
            except TypeError:
                getattr(breaker, method)()
            return state(name)
    for _ in range(int(getattr(breaker, "failure_threshold", 5) or 5) + 1):
        if str(breaker.state) == "open":
            break
        breaker.record(False)
        breaker = get(name)
    return str(breaker.state)


def reset(name: str, *, actor: str = "system") -> None:
    breaker = get(name)
    if breaker is not None:
        breaker.reset(actor=actor)


def states_by_prefix(prefix: str) -> dict[str, str]:
    """Every breaker whose name starts with ``prefix`` (one query)."""
    model = _model()
    if model is None:
        return {}
    try:
        return dict(model.objects.filter(name__startswith=prefix).values_list("name", "state"))
    except Exception:  # the table may not exist yet on a half-migrated database
        return {}
