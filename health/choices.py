"""States of service health and breakers, with labels; colours come from BADGE_COLORS."""

from __future__ import annotations

from django.db import models

from health import breaker


class BreakerState(models.TextChoices):
    CLOSED = breaker.CLOSED, "Closed"
    OPEN = breaker.OPEN, "Open"
    HALF_OPEN = breaker.HALF_OPEN, "Half-open"


class ServiceHealth(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    UNHEALTHY = "unhealthy", "Unhealthy"
    UNKNOWN = "unknown", "Unknown (not checked yet)"
    CIRCUIT_OPEN = "circuit_open", "Circuit open"


class OverallHealth(models.TextChoices):
    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    UNHEALTHY = "unhealthy", "Unhealthy"
