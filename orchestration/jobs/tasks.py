"""django-q2 entry points. Kept tiny: the broker only carries ids and tokens."""

from __future__ import annotations

from orchestration.jobs import queue


def execute_job(job_id: int, token: str) -> str:
    return queue.execute(job_id, token)


def maintain_queue() -> dict:
    return queue.maintain()
