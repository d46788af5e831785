"""The ``/health/status`` body, built from the counters on Service (one query)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from health import status as pure
from health.choices import BreakerState, ServiceHealth
from health.models import Service


def display_health(service: Service) -> str:
    # The breaker is the authority on "no requests are being sent".
    if service.breaker_state == BreakerState.OPEN:
        return ServiceHealth.CIRCUIT_OPEN
    return service.health


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


def status_report() -> dict[str, Any]:
    services = list(Service.objects.enabled().select_related("circuit").prefetch_related("depends_on"))
    body = {s.name: service_status(s) for s in services}
    return {
        "timestamp": timezone.now().isoformat(),
        "services": body,
        "overall_health": pure.overall_health(entry["health"] for entry in body.values()),
    }
