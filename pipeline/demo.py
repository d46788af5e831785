"""Demo data: one pipeline job that ran its first stages and waits at its first gate."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from orchestration.core.demo import DEMO_PREFIX, register_demo
from orchestration.core.jobs import queue
from pipeline import engine
from pipeline.models import PipelineJob


@contextmanager
def inline_execution() -> Iterator[None]:
    """Within the block django-q2 runs dispatched tasks in this process, so stages run
    here through the real queue and lane without a cluster (demo and tour only)."""
    from django_q.conf import Conf

    previous = Conf.SYNC
    Conf.SYNC = True
    try:
        yield
    finally:
        Conf.SYNC = previous


def run_inline(job_id: int) -> None:
    """Claim and execute this job's queued stage runs here until it waits or ends."""

    with inline_execution():
        for _ in range(200):
            if PipelineJob.objects.get(pk=job_id).status != "running" or not queue.wake():
                return


class PipelineDemo:
    slug = f"{DEMO_PREFIX}-explainer-video"

    def load(self) -> str:

        if PipelineJob.objects.filter(slug=self.slug).exists():
            return "already loaded"
        with inline_execution():
            job = engine.create_job(self.slug, "A two-minute explainer about how the orchestrator works", actor="demo")
        run_inline(job.pk)
        job.refresh_from_db()
        return f"pipeline job #{job.pk} {job.status} at {job.stage}"

    def remove(self) -> int:

        return PipelineJob.objects.filter(slug__startswith=f"{DEMO_PREFIX}-").delete()[0]


register_demo("pipeline", PipelineDemo())
