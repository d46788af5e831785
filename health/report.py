"""The ``/health/status`` body, built from the counters on Service (one query for the
rows, one for their dependencies, one for the overall health)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from health import status as pure
from health.choices import BreakerState, ServiceHealth
from health.models import Service
from orchestration.core.redaction import Masked, redact_text

# What ?health= may ask for: the health a reader sees (circuit_open when the breaker is open).
HEALTH_FILTERS = tuple(ServiceHealth.values)


class ReportFilterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def display_health(service: Service) -> str:
    # The breaker is the authority on "no requests are being sent".
    if service.breaker_state == BreakerState.OPEN:
        return ServiceHealth.CIRCUIT_OPEN
    return service.health


def shown_health(health: str, breaker: str | None) -> str:
    return ServiceHealth.CIRCUIT_OPEN if breaker == BreakerState.OPEN else health


def health_filter(health: str) -> Q:
    """The rows whose shown health is ``health`` (the same rule as ``shown_health``)."""
    if health == ServiceHealth.CIRCUIT_OPEN:
        return Q(circuit__state=BreakerState.OPEN) | Q(health=ServiceHealth.CIRCUIT_OPEN)
    return Q(health=health) & ~Q(circuit__state=BreakerState.OPEN)


def service_status(service: Service) -> dict[str, Any]:
    return {
        "health": display_health(service),
        "enabled": service.enabled,
        "last_check": service.last_check_at.isoformat() if service.last_check_at else None,
        "response_time_ms": service.last_response_time_ms,
        "status_code": service.last_status_code,
        "error_message": service.last_error or None,
        "consecutive_failures": service.consecutive_failures,
        "total_checks": service.total_checks,
        "successful_checks": service.successful_checks,
        "uptime_percentage": service.uptime_percentage,
        "circuit_breaker_state": service.breaker_state,
        "depends_on": sorted(d.name for d in service.depends_on.all()),
    }


_COLUMNS = (
    "pk",
    "name",
    "health",
    "circuit__state",
    "enabled",
    "last_check_at",
    "last_response_time_ms",
    "last_status_code",
    "last_error",
    "consecutive_failures",
    "total_checks",
    "successful_checks",
)


def _dependencies(ids: Iterable[int]) -> dict[int, list[str]]:
    through = Service.depends_on.through
    found: dict[int, list[str]] = {}
    rows = through.objects.values_list("from_service_id", "to_service__name").order_by("to_service__name")
    ids = set(ids)
    if len(ids) <= 500:  # a filtered report: ask for its rows only
        rows = rows.filter(from_service_id__in=ids)
    for src, name in rows.iterator(chunk_size=5000):
        if src in ids:
            found.setdefault(src, []).append(name)
    return found


def overall(queryset: QuerySet | None = None) -> str:
    """Overall health of every enabled service, from one grouped count."""
    counts = (queryset or Service.objects.enabled()).values("health", "circuit__state").annotate(n=Count("id"))
    healths: list[str] = []
    for row in counts.order_by():
        healths.extend([shown_health(row["health"], row["circuit__state"])] * row["n"])
    return pure.overall_health(healths)


def _raw_rows(queryset: QuerySet) -> list[tuple]:
    """The rows as the database driver gives them: the ORM's converters (a datetime
    parsed per row among them) were 40 % of the read at 20,000 services."""
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _iso(value: datetime | None) -> str | None:
    """A stored time as the model gives it, in ISO form: SQLite's driver hands back the
    stored UTC time without its zone (USE_TZ stores UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _entry(row: tuple, depends_on: list[str]) -> dict[str, Any]:
    _pk, _name, shealth, breaker, enabled, last, rt, code, error, fails, total, ok = row
    return {
        "health": shown_health(shealth, breaker),
        "enabled": bool(enabled),
        "last_check": _iso(last),
        "response_time_ms": rt,
        "status_code": code,
        "error_message": redact_text(error) if error else None,
        "consecutive_failures": fails,
        "total_checks": total,
        "successful_checks": ok,
        "uptime_percentage": pure.uptime_percentage(total, ok),
        "circuit_breaker_state": breaker or BreakerState.CLOSED,
        "depends_on": depends_on,
    }


# Service pk → (its row as read, with its dependencies; its entry encoded): the shared
# body is rebuilt every few seconds, and only the services checked since (a quarter at
# 1,000 checks/s) are built and encoded again.
_encoded: dict[int, tuple[tuple, str]] = {}


def encoded_status(encode: Callable[[Any], str], colon: str) -> tuple[list[str], str]:
    """The unfiltered report's services, each entry ``"name":{...}`` as ``encode`` writes
    JSON (the same entries as ``status_report``'s), and the overall health."""
    global _encoded
    rows = _raw_rows(Service.objects.enabled().order_by("name").values_list(*_COLUMNS))
    depends = _dependencies(row[0] for row in rows)
    kept: dict[int, tuple[tuple, str]] = {}
    entries, healths = [], []
    for row in rows:
        pk, deps = row[0], depends.get(row[0], [])
        key = (row, tuple(deps))
        hit = _encoded.get(pk)
        if hit is None or hit[0] != key:
            hit = (key, encode(row[1]) + colon + encode(_entry(row, deps)))
        kept[pk] = hit
        entries.append(hit[1])
        healths.append(shown_health(row[2], row[3]))
    _encoded = kept
    return entries, pure.overall_health(healths)


def status_report(*, health: str | None = None, name: str | None = None) -> dict[str, Any]:
    """Every enabled service (or those whose shown health is ``health`` and whose name
    holds ``name``), with the overall health of them all. Rows are read as tuples and
    masked field by field: at 10,000 services model instances and a whole-body walk
    cost seconds."""
    queryset = Service.objects.enabled()
    if health:
        if health not in HEALTH_FILTERS:
            raise ReportFilterError("health", f"One of: {', '.join(HEALTH_FILTERS)}.")
        queryset = queryset.filter(health_filter(health))
    if name:
        if len(name) > 100:
            raise ReportFilterError("name", "At most 100 characters.")
        queryset = queryset.filter(name__icontains=name)
    rows = _raw_rows(queryset.order_by("name").values_list(*_COLUMNS))
    depends = _dependencies(row[0] for row in rows)
    body = {row[1]: _entry(row, depends.get(row[0], [])) for row in rows}
    return Masked(
        {
            "timestamp": timezone.now().isoformat(),
            "services": Masked(body),
            "overall_health": overall()
            if (health or name)
            else pure.overall_health(e["health"] for e in body.values()),
        }
    )
