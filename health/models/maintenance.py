"""Maintenance windows as rows; when they are on is decided in ``health.maintenance``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from health import maintenance as pure
from orchestration.core.models.ledger import record as ledger_record
from orchestration.core.storedjson import JSONField


class MaintenanceWindowQuerySet(models.QuerySet):
    def current(self, now: datetime):
        # Windows whose span holds now (the recurrence decides the rest, in Python).
        return self.filter(starts_at__lte=now).filter(models.Q(ends_at__isnull=True) | models.Q(ends_at__gt=now))


class MaintenanceWindow(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    starts_at = models.DateTimeField(help_text="When it starts (a recurring window: from when it repeats).")
    ends_at = models.DateTimeField(
        null=True, blank=True, help_text="When it ends (a recurring window: until when it repeats; empty: forever)."
    )
    recurrence = JSONField(
        null=True,
        blank=True,
        help_text='Optional: {"cron": "0 2 * * sun", "duration_minutes": 60, "timezone": "UTC"}; '
        "each firing opens the window for its duration.",
    )
    services = models.ManyToManyField("health.Service", blank=True, related_name="maintenance_windows")
    tags = JSONField(default=list, blank=True, help_text="Services with any of these tags are covered.")
    all_services = models.BooleanField(default=False, help_text="Covers every service.")
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MaintenanceWindowQuerySet.as_manager()

    class Meta:
        app_label = "health"
        ordering = ["-starts_at", "name"]
        indexes = [
            # current(): the windows under way (few rows; starts_at bounds the scan).
            models.Index(fields=["starts_at", "ends_at"], name="maintenance_span_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def spec(self, service_names: list[str] | None = None) -> pure.WindowSpec:
        names = service_names if service_names is not None else [s.name for s in self.services.all()]
        return pure.WindowSpec(
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            recurrence=pure.parse_recurrence(self.recurrence),
            services=frozenset(names),
            tags=frozenset(self.tags or []),
            all_services=self.all_services,
        )

    def occurrence(self, now: datetime | None = None) -> tuple[datetime, datetime] | None:
        return pure.current_occurrence(self.spec(), now or timezone.now())

    def next_occurrence(self, now: datetime | None = None) -> tuple[datetime, datetime] | None:
        return pure.next_occurrence(self.spec(), now or timezone.now())

    def clean(self) -> None:
        super().clean()
        problem = pure.recurrence_problem(self.recurrence)
        if problem:
            raise ValidationError({"recurrence": problem})
        if not self.recurrence:
            self.recurrence = None
            if self.ends_at is None:
                raise ValidationError({"ends_at": "A one-off window needs its end."})
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "Must be after starts_at."})
        if not isinstance(self.tags, list) or not all(isinstance(t, str) and t.strip() for t in self.tags):
            raise ValidationError({"tags": "A list of labels (non-empty strings)."})

    # --- a person's writes: one method each, with its ledger entry -------------------
    def save_by(self, *, actor: str, services: list | None = None, created: bool | None = None) -> None:
        """Save (and set ``services`` when given), recorded with the actor, all or nothing."""
        created = self.pk is None if created is None else created
        with transaction.atomic():
            if created and not self.created_by:
                self.created_by = actor
            self.save()
            if services is not None:
                self.services.set(services)
            ledger_record(
                f"maintenance.{'created' if created else 'updated'}",
                f"Maintenance window {self.name} {'created' if created else 'updated'} by {actor}: {self.describe()}",
                subject=f"maintenance:{self.name}",
                actor=actor,
                data=self.as_record(),
            )

    def remove(self, *, actor: str) -> None:
        with transaction.atomic():
            ledger_record(
                "maintenance.deleted",
                f"Maintenance window {self.name} deleted by {actor}",
                subject=f"maintenance:{self.name}",
                actor=actor,
                data=self.as_record(),
            )
            self.delete()

    def scope(self) -> str:
        if self.all_services:
            return "every service"
        parts = [", ".join(sorted(s.name for s in self.services.all()))] if self.pk else []
        if self.tags:
            parts.append("tags " + ", ".join(self.tags))
        return "; ".join(p for p in parts if p) or "no service"

    def describe(self) -> str:
        when = (
            f"every '{self.recurrence['cron']}' ({self.recurrence.get('timezone', 'UTC')}) "
            f"for {self.recurrence['duration_minutes']} min"
            if self.recurrence
            else f"{self.starts_at:%Y-%m-%d %H:%M} to {self.ends_at:%Y-%m-%d %H:%M} UTC"
            if self.ends_at
            else f"from {self.starts_at:%Y-%m-%d %H:%M} UTC"
        )
        return f"{when}, covering {self.scope()}"

    def as_record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "starts_at": self.starts_at.isoformat() if self.starts_at else None,
            "ends_at": self.ends_at.isoformat() if self.ends_at else None,
            "recurrence": self.recurrence,
            "services": sorted(s.name for s in self.services.all()) if self.pk else [],
            "tags": self.tags,
            "all_services": self.all_services,
        }

    @classmethod
    def quiet_services(cls, services: dict[str, list[str]], now: datetime | None = None) -> set[str]:
        """Which of ``services`` (name → tags) are under maintenance now: one query for
        the windows under way, then the pure decision."""
        now = now or timezone.now()
        windows = list(cls.objects.current(now).prefetch_related("services"))
        return pure.quiet_services([w.spec() for w in windows], services, now)

    @classmethod
    def active(cls, now: datetime | None = None) -> list[MaintenanceWindow]:
        now = now or timezone.now()
        return [w for w in cls.objects.current(now).prefetch_related("services") if w.occurrence(now)]
