"""Keep each worker's django-q2 Schedule in step with its row (by name, idempotent)."""

from __future__ import annotations

from django.utils import timezone

from orchestration.core.schedules import delete_schedule, ensure_schedule
from orchestration.fleet import cadence
from orchestration.fleet.choices import ExecutionModel
from orchestration.fleet.models import Worker

SCHEDULE_FUNC = "orchestration.fleet.runner.scheduled_run"


def wants_schedule(worker: Worker) -> bool:
    return bool(
        worker.enabled
        and worker.execution_model != ExecutionModel.ON_DEMAND
        and (worker.interval_seconds or worker.cron)
    )


def sync_schedule(worker: Worker):
    """Create, update or delete the worker's schedule; returns it (or None).

    The next due time is only recomputed when the cadence itself changed, so saving
    an unrelated field never skips or doubles a pending due time.
    """
    from django_q.models import Schedule

    if not wants_schedule(worker):
        delete_schedule(worker.schedule_name)
        return None
    spec = cadence.validate(worker.interval_seconds, worker.cron)
    fields = cadence.schedule_fields(spec, timezone.now(), rate_factor=worker.rate_factor)
    assert fields is not None
    existing = Schedule.objects.filter(name=worker.schedule_name).order_by("id").first()
    same_cadence = (
        existing is not None
        and existing.schedule_type == fields["schedule_type"]
        and (existing.cron or None) == fields["cron"]
        and (existing.minutes or None) == fields["minutes"]
        and existing.repeats != 0
    )
    if same_cadence:
        fields.pop("next_run")
    return ensure_schedule(
        worker.schedule_name,
        SCHEDULE_FUNC,
        args=repr(worker.name),
        intended_date_kwarg="due_at",
        repeats=-1,
        **fields,
    )


def next_run_at(worker: Worker):
    from django_q.models import Schedule

    return Schedule.objects.filter(name=worker.schedule_name).values_list("next_run", flat=True).first()


def on_worker_saved(sender, instance: Worker, **kwargs) -> None:
    if kwargs.get("raw"):
        return
    sync_schedule(instance)


def on_worker_deleted(sender, instance: Worker, **kwargs) -> None:
    delete_schedule(instance.schedule_name)
