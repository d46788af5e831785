"""Anomalies: something wrong with a worker, a service, a pipeline or the fleet.

The worker and run it is about are named by string: the fleet's models sit in a layer
above this one, and an anomaly about a service or a gate has neither.
"""

from __future__ import annotations

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from orchestration.core.choices import AlertState, AnomalySeverity
from orchestration.core.models.ledger import record
from orchestration.core.storedjson import JSONField


class AnomalyStateError(Exception):
    """The anomaly is not in a state this write needs (a 409)."""


class Anomaly(models.Model):
    """Something wrong with a worker or the fleet; at most one open per (code, subject)."""

    code = models.CharField(max_length=32)
    severity = models.CharField(max_length=10, choices=AnomalySeverity.choices)
    subject = models.CharField(max_length=200, help_text="worker:<name> or fleet")
    worker = models.ForeignKey(
        "orchestration.Worker", null=True, blank=True, on_delete=models.CASCADE, related_name="anomalies"
    )
    run = models.ForeignKey(
        "orchestration.WorkerRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    details = JSONField(default=dict, blank=True)
    detected_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    occurrences = models.PositiveIntegerField(default=1)
    resolved_at = models.DateTimeField(null=True, blank=True)
    recovery = JSONField(default=list, blank=True, help_text="Recoveries tried, with their outcome.")
    recovery_attempts = models.PositiveIntegerField(default=0)
    last_recovery_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    alert_state = models.CharField(max_length=12, choices=AlertState.choices, default=AlertState.PENDING)
    alert_due_at = models.DateTimeField(null=True, blank=True)
    alerted_at = models.DateTimeField(null=True, blank=True)
    alert_result = JSONField(default=dict, blank=True)
    # People and escalation: who took it on, who closed it, how far it escalated.
    acknowledged_by = models.CharField(max_length=150, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledge_notes = models.TextField(blank=True)
    resolved_by = models.CharField(max_length=150, blank=True, help_text="Empty: the condition cleared by itself.")
    resolve_notes = models.TextField(blank=True)
    escalation_tier = models.PositiveSmallIntegerField(default=0, help_text="Highest escalation tier notified.")
    last_escalation_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-detected_at", "-id"]
        verbose_name_plural = "anomalies"
        constraints = [
            models.UniqueConstraint(
                fields=["code", "subject"], condition=Q(resolved_at__isnull=True), name="anomaly_one_open_per_subject"
            )
        ]
        indexes = [
            # snapshot and alert delivery: open anomalies by alert state.
            models.Index(fields=["resolved_at", "alert_state", "alert_due_at"], name="anomaly_open_idx"),
            # The list's default order (-detected_at, -id).
            models.Index(fields=["detected_at", "id"], name="anomaly_detected_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.subject}"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    # --- a person's writes (API, console and admin) ------------------------------------------
    def acknowledge(self, *, actor: str, notes: str = "") -> Anomaly:
        """Someone is on it: escalation stops (the anomaly stays open until resolved)."""
        now = timezone.now()
        with transaction.atomic():
            done = (
                type(self)
                .objects.filter(pk=self.pk, resolved_at__isnull=True, acknowledged_at__isnull=True)
                .update(acknowledged_by=actor[:150], acknowledged_at=now, acknowledge_notes=notes)
            )
            self.refresh_from_db()
            if not done:
                state = "resolved" if self.resolved_at else f"already acknowledged by {self.acknowledged_by}"
                raise AnomalyStateError(f"anomaly {self.pk} is {state}")
            record(
                "anomaly.acknowledged",
                f"{self.code} on {self.subject} acknowledged by {actor}" + (f": {notes}" if notes else ""),
                subject=self.subject,
                data={"anomaly_id": self.pk, "escalation_tier": self.escalation_tier, "notes": notes},
                actor=actor,
            )
        return self

    def resolve_by(self, *, actor: str, notes: str = "") -> Anomaly:
        """A person closes it; an alert not sent yet is not sent."""
        now = timezone.now()
        with transaction.atomic():
            rows = type(self).objects.filter(pk=self.pk, resolved_at__isnull=True)
            rows.filter(alert_state=AlertState.PENDING).update(alert_state=AlertState.SUPPRESSED)
            done = rows.update(resolved_at=now, resolved_by=actor[:150], resolve_notes=notes)
            self.refresh_from_db()
            if not done:
                raise AnomalyStateError(f"anomaly {self.pk} is already resolved")
            record(
                "anomaly.resolved",
                f"{self.code} on {self.subject} resolved by {actor}" + (f": {notes}" if notes else ""),
                subject=self.subject,
                data={"anomaly_id": self.pk, "notes": notes},
                actor=actor,
            )
        return self
