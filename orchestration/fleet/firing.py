"""The fleet's scheduler: turns due times into runs, once each, on whichever node looks.

Every loop tick (and the cluster's one-minute fallback tick) calls ``fire_due``. A
worker's ``next_due_at`` is its cursor: a scheduler claims the due times up to now by
moving the cursor with a conditional UPDATE (old value → new), so of several loop
runners and clusters looking at once exactly one wins, and the unique constraint on
``(worker, due_at)`` backs that up for backfills and replays. What to run is decided
by ``cadence.plan_firing`` (pure): due times inside the catch-up window run once
each, oldest first; older ones are counted as missed; a rate-reduced cron leaves
some out and says so on a skipped run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from orchestration.core.choices import Severity
from orchestration.core.models.ledger import record
from orchestration.fleet import cadence, tally
from orchestration.fleet.choices import ExecutionModel, RunStatus, RunTrigger, SkipReason
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import request_run

log = logging.getLogger("orchestration.fleet")

# Workers fired per tick at most; the rest are fired on the next tick.
BATCH = 200
# A backfill queues this many due times at most (a larger range is a 400).
MAX_BACKFILL = 1000


class BackfillError(ValueError):
    """``field`` names what is wrong (the API answers 400 with it)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def fire_due(now: datetime | None = None) -> dict[str, list[str]]:
    """Fire every worker whose next due time has come; returns what was queued by name."""
    now = now or timezone.now()
    due = list(
        Worker.objects.filter(next_due_at__lte=now, enabled=True, paused=False)
        .exclude(execution_model=ExecutionModel.ON_DEMAND)
        .order_by("next_due_at")[:BATCH]
    )
    fired: dict[str, list[str]] = {}
    for worker in due:
        try:
            queued = fire_worker(worker, now)
        except (ValueError, LookupError):  # a row written around validation (bad zone, cron)
            log.exception("worker %s: its schedule cannot be computed; fix its cadence", worker.name)
            continue
        if queued:
            fired[worker.name] = [d.isoformat() for d in queued]
    return fired


def fire_worker(worker: Worker, now: datetime) -> list[datetime] | None:
    """Claim and queue the worker's due times up to ``now``; None if another node did."""

    cursor = worker.next_due_at
    if cursor is None:
        return None
    spec = worker.cadence_spec()
    # Intervals stretch under a rate reduction; a cron keeps its due times and runs one
    # in N. Time-triggered workers keep their exact clock times whatever the rate.
    rate = 1.0 if worker.execution_model == ExecutionModel.TIME_TRIGGERED else worker.rate_factor
    firing = cadence.plan_firing(
        spec, cursor, now, catch_up_seconds=worker.catch_up_seconds, rate_factor=rate, due_count=worker.due_count
    )
    with transaction.atomic():
        won = Worker.objects.filter(pk=worker.pk, next_due_at=cursor, enabled=True, paused=False).update(
            next_due_at=firing.next_due,
            due_count=firing.due_count,
            missed_runs=F("missed_runs") + len(firing.missed),
        )
        if not won:
            return None  # another scheduler claimed these due times
        jitter = worker.jitter_seconds if worker.execution_model != ExecutionModel.TIME_TRIGGERED else 0
        for due in firing.run:
            wait = cadence.jitter(worker.name, due, jitter)
            request_run(
                worker,
                trigger=RunTrigger.SCHEDULE,
                due_at=due,
                not_before=due + timedelta(seconds=wait) if wait else None,
            )
        for due in firing.rate_skipped:
            _skipped_due_time(worker, due, now, factor=worker.rate_factor)
        if firing.missed:
            record(
                "worker.runs_missed",
                f"Worker {worker.name}: {len(firing.missed)} due time(s) older than its catch-up window "
                f"({worker.catch_up_seconds} s) skipped, from {firing.missed[0].isoformat()} "
                f"to {firing.missed[-1].isoformat()}",
                severity=Severity.WARNING,
                subject=worker.breaker_name,
                data={
                    "missed": len(firing.missed),
                    "oldest": firing.missed[0].isoformat(),
                    "newest": firing.missed[-1].isoformat(),
                    "catch_up_seconds": worker.catch_up_seconds,
                },
            )
    return firing.run


def _skipped_due_time(worker: Worker, due: datetime, now: datetime, *, factor: float) -> None:
    """A due time a rate reduction leaves out, shown as a skipped run that says why."""
    stride = cadence.cron_stride(factor)
    _, created = WorkerRun.objects.get_or_create(
        worker=worker,
        due_at=due,
        defaults={
            "trigger": RunTrigger.SCHEDULE,
            "status": RunStatus.SKIPPED,
            "completed_at": now,
            "skipped_reason": SkipReason.RATE_REDUCED,
            "skipped_detail": {"rate_factor": factor, "runs_one_due_time_in": stride},
        },
    )
    if created:
        tally.count(RunStatus.SKIPPED, now)


def backfill(worker: Worker, start: datetime, end: datetime, *, actor: str) -> int:
    """Queue a run for every due time in [start, end] that has none yet; each runs under
    the worker's overlap policy like any other. Returns how many were queued."""

    if not worker.scheduled:
        raise BackfillError("name", f"worker {worker.name} has no schedule: there are no due times to backfill")
    if start.tzinfo is None or end.tzinfo is None:
        raise BackfillError("start" if start.tzinfo is None else "end", "must include a UTC offset")
    if end < start:
        raise BackfillError("end", "must not be before start")
    if end > timezone.now():
        raise BackfillError("end", "must not be in the future: future due times run on schedule")
    spec = worker.cadence_spec()
    dues = cadence.runs_between(spec, start - timedelta(microseconds=1), end, limit=MAX_BACKFILL + 1)
    if len(dues) > MAX_BACKFILL:
        raise BackfillError("end", f"the range holds more than {MAX_BACKFILL} due times; backfill a shorter range")
    with transaction.atomic():
        existing = set(WorkerRun.objects.filter(worker=worker, due_at__in=dues).values_list("due_at", flat=True))
        fresh = [d for d in dues if d not in existing]
        queued = [request_run(worker, trigger=RunTrigger.BACKFILL, due_at=d, actor=actor) for d in fresh]
        record(
            "worker.backfilled",
            f"Worker {worker.name} backfilled from {start.isoformat()} to {end.isoformat()}: "
            f"{len(queued)} run(s) queued, {len(existing)} due time(s) already had one",
            subject=worker.breaker_name,
            data={"start": start.isoformat(), "end": end.isoformat(), "queued": len(queued), "existing": len(existing)},
            actor=actor,
        )
    return len(queued)


def fire_due_tick() -> Any:
    """Loop runner tick hook."""
    return fire_due()
