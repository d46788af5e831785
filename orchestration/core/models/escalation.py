"""Escalation policies: who hears of an open, unacknowledged anomaly, and when."""

from __future__ import annotations

from django.db import models

from orchestration.core.storedjson import JSONField


class EscalationPolicy(models.Model):
    """Tiers for the anomalies of some severities (see ``core.escalation_rules``). The
    first enabled policy by name that covers a severity applies."""

    name = models.SlugField(max_length=80, unique=True)
    severities = JSONField(default=list, blank=True, help_text="Anomaly severities covered; empty: all.")
    tiers = JSONField(
        default=list,
        help_text='[{"after_minutes": 10, "channels": ["ops"], "repeat_minutes": 30}, …]; channels name '
        "notification channels (empty: the escalation alert route).",
    )
    after_recovery = models.BooleanField(
        default=False, help_text="Only anomalies that a recovery strategy tried and did not clear."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "orchestration"
        ordering = ["name"]
        verbose_name_plural = "escalation policies"

    def __str__(self) -> str:
        return self.name
