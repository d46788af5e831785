"""Housekeeping tasks run by schedules."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F
from django.db.models.functions import TruncDate
from django.utils import timezone

from orchestration.core.choices import FINAL_STATUSES
from orchestration.core.models import IdempotencyKey, Job, JobRollup, LedgerEntry
from orchestration.loop.models import Action

RollupKey = tuple  # (day, status, lane, kind)


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


def add_to_rollups(counts: dict[RollupKey, int]) -> None:
    """Add ``{(day, status, lane, kind): n}`` to the job rollups (in the caller's
    transaction: the counts land with the delete they describe, or not at all)."""
    for (day, status, lane, kind), n in counts.items():
        updated = JobRollup.objects.filter(day=day, status=status, lane=lane, kind=kind).update(count=F("count") + n)
        if not updated:
            JobRollup.objects.create(day=day, status=status, lane=lane, kind=kind, count=n)


def prune_jobs(days: int | None = None, batch: int = 2000, now=None) -> dict[str, int]:
    """Delete finished jobs older than ``JOB_RETENTION_DAYS``, ``batch`` at a time (a
    range of job_finished_idx), each batch's counts added to the rollups in the
    batch's own transaction; live jobs are never touched whatever their age."""
    cutoff = (now or timezone.now()) - timedelta(days=days or settings.JOB_RETENTION_DAYS)
    old = Job.objects.filter(status__in=FINAL_STATUSES, finished_at__lt=cutoff).order_by()
    deleted = batches = 0
    while True:
        with transaction.atomic():
            ids = list(old.values_list("pk", flat=True)[:batch])
            if not ids:
                break
            rows = (
                Job.objects.filter(pk__in=ids)
                .order_by()
                .values_list(TruncDate("finished_at"), "status", "lane", "kind")
                .annotate(n=Count("id"))
            )
            add_to_rollups({(day, status, lane, kind): n for day, status, lane, kind, n in rows})
            deleted += Job.objects.filter(pk__in=ids).delete()[1].get(Job._meta.label, 0)
            batches += 1
    return {"jobs": deleted, "batches": batches}
