"""Keep each worker's schedule cursor (``next_due_at``) in step with its row.

The fleet schedules its workers itself (fleet/firing.py), not through django-q2
Schedules: a cron is read in the worker's zone, missed due times are caught up
within a window, and each due time is claimed once with a conditional UPDATE.
"""

from __future__ import annotations

from django.utils import timezone

from orchestration.core.schedules import delete_schedule
from orchestration.fleet import cadence
from orchestration.fleet.models import Worker

# Kept so a django-q2 schedule stored before the fleet scheduled itself still resolves.
SCHEDULE_FUNC = "orchestration.fleet.runner.scheduled_run"


def wants_schedule(worker: Worker) -> bool:
    return bool(worker.enabled and worker.scheduled)


def cadence_key(worker: Worker) -> str:
    rate = worker.rate_factor if worker.interval_seconds else 1.0
    return f"{worker.interval_seconds or ''}|{worker.cron}|{worker.timezone}|{rate:g}"


def sync_schedule(worker: Worker, *, restart: bool = False):
    """Set or clear the worker's next due time; returns it (or None).

    Only recomputed when the cadence itself changed (or ``restart``), so saving an
    unrelated field never skips or doubles a pending due time.
    """
    delete_schedule(worker.schedule_name)  # a leftover django-q2 schedule would fire it twice
    if not wants_schedule(worker):
        if worker.next_due_at is not None or worker.cadence_key:
            Worker.objects.filter(pk=worker.pk).update(next_due_at=None, cadence_key="")
            worker.next_due_at, worker.cadence_key = None, ""
        return None
    key = cadence_key(worker)
    if not restart and worker.next_due_at is not None and worker.cadence_key == key:
        return worker.next_due_at
    spec = cadence.validate(worker.interval_seconds, worker.cron, worker.timezone)
    due = cadence.next_run(spec, timezone.now(), rate_factor=worker.rate_factor if worker.interval_seconds else 1.0)
    Worker.objects.filter(pk=worker.pk).update(next_due_at=due, cadence_key=key)
    worker.next_due_at, worker.cadence_key = due, key
    return due


def next_run_at(worker: Worker):
    return Worker.objects.filter(pk=worker.pk).values_list("next_due_at", flat=True).first()


def on_worker_saved(sender, instance: Worker, **kwargs) -> None:
    if kwargs.get("raw"):
        return
    sync_schedule(instance)


def on_worker_deleted(sender, instance: Worker, **kwargs) -> None:
    delete_schedule(instance.schedule_name)
