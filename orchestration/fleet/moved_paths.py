"""Function paths stored before the modules moved into layers, brought to where the
functions are defined now.

Worker targets, django-q2 schedules and queued jobs name functions by dotted path, and
only the path where a function is defined runs (core/runnables.py), so a row written
before the move would fail for good. Runs after every migrate; once every row is
current it changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django_q.models import Schedule
from django_q.signing import BadSignature, SignedPackage

from orchestration.core.choices import CLAIMABLE_STATUSES
from orchestration.core.jobs.broker import TASK_KIND
from orchestration.core.models import Job
from orchestration.fleet.models import Worker

# The modules whose functions may be stored by path (runnable or scheduled).
MOVED = {
    "orchestration.workers.builtins.": "orchestration.fleet.builtins.",
    "orchestration.workers.demo_targets.": "orchestration.fleet.demo_targets.",
    "orchestration.workers.runner.": "orchestration.fleet.runner.",
    "orchestration.jobs.": "orchestration.core.jobs.",
    "orchestration.maintenance.": "orchestration.loop.maintenance.",
}


def moved(path: Any) -> str | None:
    """The current path of a function stored at ``path`` before the move, else None."""
    if isinstance(path, str):
        for old, new in MOVED.items():
            if path.startswith(old):
                return new + path[len(old) :]
    return None


def _job_payload(job: Job) -> dict[str, Any] | None:
    payload = dict(job.payload or {})
    if job.kind == "python.call":
        new = moved(payload.get("path"))
        return {**payload, "path": new} if new else None
    new = moved(payload.get("func"))
    if new is None:
        return None
    try:
        package = SignedPackage.loads(payload.get("package", ""))
    except (BadSignature, TypeError, ValueError):
        return None  # not this install's package: it fails as it would have
    if isinstance(package.get("func"), str):
        package["func"] = moved(package["func"]) or package["func"]
    return {**payload, "func": new, "package": SignedPackage.dumps(package)}


def update_moved_paths(**kwargs: Any) -> dict[str, int]:
    counts = {"workers": 0, "schedules": 0, "jobs": 0}
    with transaction.atomic():
        for worker in Worker.objects.filter(target__type="python").only("pk", "target"):
            new = moved((worker.target or {}).get("path"))
            if new:
                # update(), not save(): the worker's schedule is brought up to date below.
                counts["workers"] += Worker.objects.filter(pk=worker.pk).update(target={**worker.target, "path": new})
        for schedule in Schedule.objects.filter(func__startswith="orchestration."):
            new = moved(schedule.func)
            if new:
                counts["schedules"] += Schedule.objects.filter(pk=schedule.pk).update(func=new)
        waiting = Job.objects.filter(status__in=CLAIMABLE_STATUSES, kind__in=(TASK_KIND, "python.call")).filter(
            Q(payload__func__startswith="orchestration.") | Q(payload__path__startswith="orchestration.")
        )
        for job in waiting.only("pk", "kind", "payload"):
            payload = _job_payload(job)
            if payload is not None:
                counts["jobs"] += Job.objects.filter(pk=job.pk, status__in=CLAIMABLE_STATUSES).update(payload=payload)
    return counts
