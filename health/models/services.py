from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from health import status as pure
from health.choices import BreakerState, CheckKindChoice, PingKind, ServiceHealth
from health.kinds import CheckConfigError, Probe, get_kind
from health.models.circuit import CircuitBreaker
from orchestration.core import outbound
from orchestration.core.models.ledger import record as ledger_record
from orchestration.core.storedjson import JSONField

SERVICE_NAME = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "Use letters, digits, '.', '_' and '-' (starting with a letter or digit)."
)


class DependencyError(Exception):
    """Disabling or deleting a service that enabled services depend on (answered 409)."""


def breaker_name(service_name: str) -> str:
    return f"service:{service_name}"


class ServiceQuerySet(models.QuerySet):
    def enabled(self):
        return self.filter(enabled=True)

    def due(self, now):
        # Sweep: enabled services whose next check is due (index service_due_idx).
        return self.filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now), enabled=True)


class Service(models.Model):
    """An HTTP service the orchestrator watches (and routes tasks to).

    Counters are kept on the row so ``/health/status`` reads one row per service and
    never scans the check history.
    """

    name = models.CharField(max_length=100, unique=True, validators=[SERVICE_NAME])
    description = models.CharField(max_length=300, blank=True)
    category = models.SlugField(
        max_length=50, blank=True, help_text="Groups services in the module manager, e.g. storage, ai, media."
    )
    base_url = models.URLField(
        max_length=500, blank=True, help_text="e.g. http://127.0.0.1:8001 (HTTP checks and routed tasks)"
    )
    health_path = models.CharField(max_length=300, default="/health")
    timeout_seconds = models.FloatField(default=5.0, validators=[MinValueValidator(0.05), MaxValueValidator(120)])
    check_interval_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(86400)]
    )
    failure_threshold = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    success_threshold = models.PositiveIntegerField(
        default=2, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    open_timeout_seconds = models.FloatField(default=60.0, validators=[MinValueValidator(0), MaxValueValidator(86400)])
    capabilities = JSONField(default=list, blank=True, help_text="Task types this service can process.")
    weight = models.FloatField(default=1.0, validators=[MinValueValidator(0), MaxValueValidator(1000)])
    depends_on = models.ManyToManyField("self", symmetrical=False, related_name="dependents", blank=True)
    enabled = models.BooleanField(default=True)
    kind = models.CharField(max_length=16, choices=CheckKindChoice.choices, default=CheckKindChoice.HTTP)
    # ``check`` in the API; a model cannot have a field of that name (Model.check() runs Django's system checks).
    check_config = JSONField(default=dict, blank=True, help_text="Settings of the check kind (see the API docs).")
    tags = JSONField(default=list, blank=True, help_text="Labels for filters, notification routes and maintenance.")
    # Heartbeats: the secret in the ping URL, and the pings the sweep judges.
    ping_key = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    last_ping_at = models.DateTimeField(null=True, blank=True)
    last_ping_kind = models.CharField(max_length=10, choices=PingKind.choices, blank=True)
    last_start_at = models.DateTimeField(null=True, blank=True)
    circuit = models.OneToOneField(
        CircuitBreaker, null=True, blank=True, on_delete=models.SET_NULL, related_name="service", editable=False
    )

    # Counters and last result, updated by every check.
    health = models.CharField(max_length=16, choices=ServiceHealth.choices, default=ServiceHealth.UNKNOWN)
    total_checks = models.PositiveBigIntegerField(default=0)
    successful_checks = models.PositiveBigIntegerField(default=0)
    consecutive_failures = models.PositiveIntegerField(default=0)
    last_check_at = models.DateTimeField(null=True, blank=True)
    last_response_time_ms = models.FloatField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_check_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ServiceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["enabled", "next_check_at"], name="service_due_idx"),
            # The services page: counts by health without reading the rows, and each
            # health group paged in name order (orchestration/console/data.py).
            models.Index(fields=["enabled", "health", "name"], name="service_health_name_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.kind == CheckKindChoice.HEARTBEAT and self.ping_key is None:
            self.ping_key = uuid.uuid4()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = [*kwargs["update_fields"], "ping_key"]
        super().save(*args, **kwargs)
        if kwargs.get("update_fields") is None:
            self.ensure_circuit()

    # --- derived ------------------------------------------------------------------
    @property
    def health_url(self) -> str:
        path = self.health_path or "/"
        return self.base_url.rstrip("/") + (path if path.startswith("/") else "/" + path)

    @property
    def uptime_percentage(self) -> float | None:
        return pure.uptime_percentage(self.total_checks, self.successful_checks)

    @property
    def breaker_state(self) -> str:
        return self.circuit.state if self.circuit_id else BreakerState.CLOSED

    # What a sweep reads of a service (probe_item, its breaker through ensure_circuit, and
    # its name in the results): the tick's checks load only these, since the counters,
    # tags and the rest are written in SQL and never read there, and converting them
    # was a tenth of a check's CPU.
    SWEEP_FIELDS = (
        "id",
        "name",
        "base_url",
        "health_path",
        "timeout_seconds",
        "kind",
        "check_config",
        "circuit",
        "failure_threshold",
        "success_threshold",
        "open_timeout_seconds",
        "last_ping_at",
        "last_ping_kind",
        "last_start_at",
        "created_at",
    )

    def probe_item(self) -> Probe:
        """What a pool thread needs to check this service, as plain values."""
        state = {}
        if self.kind == CheckKindChoice.HEARTBEAT:
            state = {
                "last_ping_at": self.last_ping_at,
                "last_ping_kind": self.last_ping_kind,
                "last_start_at": self.last_start_at,
                "created_at": self.created_at,
            }
        return Probe(self.pk, self.health_url, self.timeout_seconds, self.kind, dict(self.check_config or {}), state)

    def clean_check(self) -> None:
        """Normalise ``check`` for the kind; ValidationError naming the setting at fault."""
        try:
            self.check_config = get_kind(self.kind).clean(self.check_config or {})
        except CheckConfigError as exc:
            if exc.field == "kind":
                raise ValidationError({"kind": exc.message}) from None
            raise ValidationError({"check_config": f"{exc.field}: {exc.message}"}) from None

    def clean(self) -> None:
        super().clean()
        if not isinstance(self.check_config, dict):
            raise ValidationError({"check_config": "An object of the kind's settings."})
        self.clean_check()
        if self.kind == CheckKindChoice.HTTP and not self.base_url:
            raise ValidationError({"base_url": "Required for HTTP checks."})
        if not isinstance(self.tags, list) or not all(isinstance(t, str) and t.strip() for t in self.tags):
            raise ValidationError({"tags": "A list of labels (non-empty strings)."})
        if not isinstance(self.capabilities, list) or not all(
            isinstance(c, str) and c.strip() for c in self.capabilities
        ):
            raise ValidationError({"capabilities": "A list of task type names (non-empty strings)."})
        if not (self.health_path or "").startswith("/"):
            raise ValidationError({"health_path": "Must start with '/'."})
        refused = outbound.url_problem(self.base_url or "") if self.base_url else None
        if refused:
            raise ValidationError({"base_url": f"Outbound call refused: {refused}."})

    # --- breaker ------------------------------------------------------------------
    def breaker_defaults(self) -> dict[str, Any]:
        return {
            "failure_threshold": self.failure_threshold,
            "success_threshold": self.success_threshold,
            "open_timeout_seconds": self.open_timeout_seconds,
        }

    def ensure_circuit(self) -> CircuitBreaker:
        """The service's breaker (``service:<name>``), created and kept in line with the
        service's thresholds."""
        circuit = self.circuit if self.circuit_id else None
        if circuit is None:
            circuit = CircuitBreaker.for_name(breaker_name(self.name), **self.breaker_defaults())
            type(self).objects.filter(pk=self.pk).update(circuit=circuit)
            self.circuit = circuit
        wanted = {"name": breaker_name(self.name), **self.breaker_defaults()}
        stale = {k: v for k, v in wanted.items() if getattr(circuit, k) != v}
        if "name" in stale:
            # Renamed service: a leftover breaker of a deleted service may hold the name.
            CircuitBreaker.objects.filter(name=wanted["name"], service__isnull=True).exclude(pk=circuit.pk).delete()
        if stale:
            CircuitBreaker.objects.filter(pk=circuit.pk).update(**stale)
            for key, value in stale.items():
                setattr(circuit, key, value)
        return circuit

    # --- enable / disable with the dependency guard -----------------------------------
    # Fields a person (or an applied suggestion, by a person) may change in place.
    CONFIGURABLE = ("weight", "capabilities")

    def configure(self, *, actor: str, reason: str = "", **fields: Any) -> dict[str, list[Any]]:
        """Change routing settings with their ledger entry; returns {field: [before, after]}."""
        unknown = set(fields) - set(self.CONFIGURABLE)
        if unknown:
            raise ValueError(f"not configurable here: {', '.join(sorted(unknown))}")
        changed = {}
        for name, value in fields.items():
            value = self._meta.get_field(name).clean(value, self)
            changed[name] = [getattr(self, name), value]
            setattr(self, name, value)
        with transaction.atomic():
            type(self).objects.filter(pk=self.pk).update(**{k: v[1] for k, v in changed.items()})
            ledger_record(
                "service.updated",
                f"Service {self.name}: "
                + ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in changed.items())
                + (f" ({reason})" if reason else ""),
                subject=f"service:{self.name}",
                data={"changed": changed, "reason": reason},
                actor=actor,
            )
        return changed

    def enabled_dependents(self) -> list[str]:
        return sorted(self.dependents.filter(enabled=True).values_list("name", flat=True))

    def set_enabled(self, enabled: bool, *, actor: str) -> bool:
        """Enable or disable; refuses to disable while enabled services depend on this
        one. Returns whether anything changed."""
        with transaction.atomic():
            if not enabled:
                blockers = self.enabled_dependents()
                if blockers:
                    raise DependencyError(f"Required by {', '.join(blockers)}")
            changed = (
                type(self)
                .objects.filter(pk=self.pk, enabled=not enabled)
                .update(enabled=enabled, next_check_at=None, updated_at=timezone.now())
            )
            self.enabled = enabled
            if changed:
                ledger_record(
                    f"health.service_{'enabled' if enabled else 'disabled'}",
                    f"Service {self.name} {'enabled' if enabled else 'disabled'} by {actor}",
                    subject=breaker_name(self.name),
                    actor=actor,
                )
        return bool(changed)

    def reset_circuit(self, *, actor: str) -> CircuitBreaker:
        """Close the service's breaker whatever its state (the breaker ledgers the reset
        with the actor); the service then reads as not yet re-checked, and is due for a
        check at once, until its next check says otherwise."""
        circuit = self.ensure_circuit()
        with transaction.atomic():
            circuit.reset(actor=actor)
            type(self).objects.filter(pk=self.pk, health=ServiceHealth.CIRCUIT_OPEN).update(
                health=ServiceHealth.UNKNOWN, next_check_at=None, updated_at=timezone.now()
            )
        self.refresh_from_db(fields=["health", "next_check_at", "updated_at"])
        return circuit

    def remove(self, *, actor: str) -> None:
        """Delete the service, refused while enabled services depend on it (the same
        guard as disabling it)."""
        with transaction.atomic():
            blockers = self.enabled_dependents()
            if blockers:
                raise DependencyError(f"Required by {', '.join(blockers)}")
            ledger_record(
                "service.deleted", f"Service {self.name} deleted", subject=breaker_name(self.name), actor=actor
            )
            self.delete()

    @classmethod
    def record_ping(cls, key: uuid.UUID, kind: str, now: datetime | None = None) -> bool:
        """A heartbeat's ping: one conditional UPDATE, and the service is due for a
        check at once so the sweep judges it (and moves its breaker) within a tick.
        False when no enabled heartbeat has that key."""
        now = now or timezone.now()
        fields: dict[str, Any] = {"next_check_at": None, "updated_at": now}
        if kind == PingKind.START:
            fields["last_start_at"] = now
        else:
            fields.update(last_ping_at=now, last_ping_kind=kind)
        return bool(cls.objects.filter(ping_key=key, kind=CheckKindChoice.HEARTBEAT, enabled=True).update(**fields))

    def check_now(self, *, actor: str = "system"):
        """Check this one service now; a person asking for it is in the ledger, like a
        sweep triggered through /health/trigger."""
        from health.sweep import check_services

        sweep = check_services([self], actor=actor)
        if self.name in sweep.failed:
            outcome = "failed"
        elif self.name in sweep.checked:
            outcome = "passed"
        else:
            outcome = "skipped (circuit open)"
        ledger_record(
            "health.check_triggered",
            f"Health check of {self.name} triggered by {actor}: {outcome}",
            subject=breaker_name(self.name),
            actor=actor,
            data=sweep.as_dict(),
        )
        return sweep


class HealthCheck(models.Model):
    """One health check result. History is bounded: see ``health.tasks.prune_checks``."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="checks")
    checked_at = models.DateTimeField(default=timezone.now)
    success = models.BooleanField()
    health = models.CharField(max_length=16, choices=ServiceHealth.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_time_ms = models.FloatField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    breaker_state = models.CharField(max_length=10, choices=BreakerState.choices, default=BreakerState.CLOSED)

    class Meta:
        ordering = ["-checked_at", "-id"]
        indexes = [
            # checks history endpoint and the per-service retention cap.
            models.Index(fields=["service", "-checked_at"], name="healthcheck_service_idx"),
            # retention by age.
            models.Index(fields=["checked_at"], name="healthcheck_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {'ok' if self.success else 'fail'} @ {self.checked_at:%H:%M:%S}"


class ServiceAlert(models.Model):
    """One alert per root cause: a down service, with the dependents failing because of
    it listed instead of alerted separately. At most one open alert per service."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="alerts")
    opened_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    affected = JSONField(default=list, blank=True, help_text="Dependents failing because of this service.")

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["service"], condition=Q(resolved_at__isnull=True), name="servicealert_one_open_per_service"
            )
        ]

    def __str__(self) -> str:
        return f"{self.service} down since {self.opened_at:%Y-%m-%d %H:%M}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def duration(self) -> timedelta:
        return (self.resolved_at or timezone.now()) - self.opened_at
