from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from orchestration.choices import Severity
from orchestration.redaction import redact, redact_text
from orchestration.storedjson import JSONField


class LedgerEntryQuerySet(models.QuerySet):
    def errors(self):
        return self.filter(severity__in=(Severity.ERROR, Severity.CRITICAL))


class LedgerEntry(models.Model):
    """Append-only audit trail: every decision, action and write, with who did it."""

    event_type = models.CharField(max_length=100)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    subject = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    data = JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, blank=True, default="system")
    created_at = models.DateTimeField(default=timezone.now)

    objects = LedgerEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["-created_at"], name="ledger_created_idx"),
            # monitor: errors in the last hour.
            models.Index(fields=["severity", "created_at"], name="ledger_severity_idx"),
            models.Index(fields=["event_type", "created_at"], name="ledger_event_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.event_type}"


def ledger_entry(
    event_type: str,
    message: str = "",
    *,
    severity: str = Severity.INFO,
    subject: str = "",
    data: dict[str, Any] | None = None,
    actor: str = "system",
) -> LedgerEntry:
    """An unsaved entry, for callers that write several at once with bulk_create."""
    return LedgerEntry(
        event_type=event_type,
        severity=severity,
        # No secret reaches the ledger: not a worker target's Authorization header, nor a
        # webhook's token inside an error text quoted in the message.
        subject=redact_text(subject)[:200],
        message=redact_text(message),
        data=redact(data or {}),
        actor=(actor or "system")[:150],
        created_at=timezone.now(),
    )


def record(event_type: str, message: str = "", **kwargs: Any) -> LedgerEntry:
    """Write one ledger entry now."""
    entry = ledger_entry(event_type, message, **kwargs)
    entry.save(force_insert=True)
    return entry
