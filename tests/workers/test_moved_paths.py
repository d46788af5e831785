"""Paths stored before the modules moved into layers are brought to the new modules."""

from __future__ import annotations

from django_q.models import Schedule
from django_q.signing import SignedPackage

from orchestration.core.choices import JobStatus
from orchestration.core.jobs.broker import TASK_KIND
from orchestration.core.models import Job
from orchestration.fleet.models import Worker
from orchestration.fleet.moved_paths import moved, update_moved_paths

OLD_TARGET = "orchestration.workers.demo_targets.collect_trending"
NEW_TARGET = "orchestration.fleet.demo_targets.collect_trending"
OLD_RUN = "orchestration.workers.runner.scheduled_run"
NEW_RUN = "orchestration.fleet.runner.scheduled_run"


def test_it_maps_only_moved_modules():
    assert moved(OLD_TARGET) == NEW_TARGET
    assert moved("orchestration.jobs.kinds.mark_schedule") == "orchestration.core.jobs.kinds.mark_schedule"
    assert moved(NEW_TARGET) is None
    assert moved("health.tasks.sweep_due") is None
    assert moved(None) is None


def test_it_updates_targets_schedules_and_waiting_jobs(make_worker):
    worker = make_worker("old-path", target={"type": "python", "path": OLD_TARGET})
    schedule = Schedule.objects.create(name="fleet.old-path", func=OLD_RUN, schedule_type=Schedule.MINUTES, minutes=5)
    call = Job.objects.create(kind="python.call", payload={"path": "orchestration.jobs.kinds.mark_schedule"})
    package = {"id": "x", "name": "n", "func": OLD_RUN, "args": ("old-path",), "kwargs": {}}
    task = Job.objects.create(kind=TASK_KIND, payload={"func": OLD_RUN, "package": SignedPackage.dumps(package)})
    done = Job.objects.create(
        kind="python.call", status=JobStatus.COMPLETED, payload={"path": "orchestration.jobs.kinds.mark_schedule"}
    )

    assert update_moved_paths() == {"workers": 1, "schedules": 1, "jobs": 2}

    assert Worker.objects.get(pk=worker.pk).target == {"type": "python", "path": NEW_TARGET}
    assert Schedule.objects.get(pk=schedule.pk).func == NEW_RUN
    assert Job.objects.get(pk=call.pk).payload["path"] == "orchestration.core.jobs.kinds.mark_schedule"
    task.refresh_from_db()
    assert task.payload["func"] == NEW_RUN
    assert SignedPackage.loads(task.payload["package"])["func"] == NEW_RUN
    # A finished job is history: it keeps the path it ran with.
    assert Job.objects.get(pk=done.pk).payload["path"] == "orchestration.jobs.kinds.mark_schedule"
    assert update_moved_paths() == {"workers": 0, "schedules": 0, "jobs": 0}
