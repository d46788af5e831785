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


class CheckKindChoice(models.TextChoices):
    HTTP = "http", "HTTP request"
    TCP = "tcp", "TCP connect"
    DNS = "dns", "DNS lookup"
    TLS = "tls", "TLS certificate expiry"
    HEARTBEAT = "heartbeat", "Heartbeat (pinged by a job)"


class PingKind(models.TextChoices):
    START = "start", "Started"
    SUCCESS = "success", "Success"
    FAIL = "fail", "Failure"
