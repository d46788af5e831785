"""Driving routed tasks through the real queue in tests."""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.routing import executor


def drain(max_rounds: int = 200) -> None:
    """Run the queue to quiescence, jumping the clock over retry delays."""
    with time_machine.travel(timezone.now(), tick=True) as clock:
        for _ in range(max_rounds):
            claimed = queue.claim(100, owner="test:1")
            ids = [pk for pk, _ in claimed]
            for pk, token in claimed:
                queue.execute(pk, token)
            waiting = Job.objects.filter(status=JobStatus.RETRY).order_by("not_before").first()
            if not ids and waiting is None:
                return
            if not ids and waiting:
                clock.move_to(waiting.not_before + timedelta(milliseconds=1))
    raise AssertionError("queue did not settle")


def run_task(task_type="email_campaign", priority="normal", strategy=None, data=None) -> Job:
    job, _ = executor.submit(task_type, priority, data or {"n": 1}, strategy=strategy)
    drain()
    job.refresh_from_db()
    return job
