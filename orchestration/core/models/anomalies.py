"""Anomalies: something wrong with a worker, a service, a pipeline or the fleet.

The worker and run it is about are named by string: the fleet's models sit in a layer
above this one, and an anomaly about a service or a gate has neither.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from orchestration.core.choices import AlertState, AnomalySeverity
from orchestration.core.storedjson import JSONField


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
