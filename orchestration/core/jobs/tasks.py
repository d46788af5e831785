"""django-q2 entry points. Kept tiny: the broker only carries ids and tokens."""

from __future__ import annotations

from orchestration.core.jobs import broker, queue


def execute_job(job_id: int, token: str, node: str | None = None) -> str:
    with broker.running(job_id):
        return queue.execute(job_id, token, node)


def execute_jobs(claims: tuple[tuple[int, str], ...], node: str | None = None) -> list[str]:
    return broker.run_chunk(list(claims), node)


def maintain_queue() -> dict:
    return queue.maintain()
