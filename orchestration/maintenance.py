"""Housekeeping tasks run by schedules."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from orchestration.models import Action, IdempotencyKey, LedgerEntry


def prune_ledger(days: int | None = None, batch: int = 5000) -> dict[str, int]:
    """Delete ledger entries and actions older than the retention period, in batches
    so SQLite writers are never blocked for long, and idempotency keys past their 24 h."""
    cutoff = timezone.now() - timedelta(days=days or settings.LEDGER_RETENTION_DAYS)
    deleted = {"ledger": 0, "actions": 0}
    for key, model in (("ledger", LedgerEntry), ("actions", Action)):
        while True:
            ids = list(model.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
            if not ids:
                break
            deleted[key] += model.objects.filter(pk__in=ids).delete()[0]
    # Idempotency keys stand for their first answer for 24 h only (API.md "Job queue").
    deleted["idempotency_keys"] = IdempotencyKey.objects.expired().delete()[0]
    return deleted
