"""Demo data: one pipeline job that ran its first stages and waits at its first gate."""

from __future__ import annotations

from orchestration.demo import DEMO_PREFIX, register_demo


def run_inline(job_id: int, *, until=None) -> None:
    """Execute the queued stage jobs of this process right here (no cluster needed),
    until ``until(job)`` is true or nothing is runnable. For the demo and the tour."""
    from django_q.conf import Conf

    from orchestration.jobs import queue
    from pipeline.models import PipelineJob

    previous = Conf.SYNC
    Conf.SYNC = True  # django-q2 runs dispatched tasks in this process
    try:
        for _ in range(200):
            job = PipelineJob.objects.get(pk=job_id)
            if (until and until(job)) or job.status != "running":
                return
            if not queue.dispatch():
                queue.reclaim_expired()
                if not queue.dispatch():
                    return
    finally:
        Conf.SYNC = previous


class PipelineDemo:
    slug = f"{DEMO_PREFIX}-explainer-video"

    def load(self) -> str:
        from pipeline import engine
        from pipeline.models import PipelineJob

        if PipelineJob.objects.filter(slug=self.slug).exists():
            return "already loaded"
        job = engine.create_job(self.slug, "A two-minute explainer about how the orchestrator works", actor="demo")
        run_inline(job.pk)
        job.refresh_from_db()
        return f"pipeline job #{job.pk} {job.status} at {job.stage}"

    def remove(self) -> int:
        from pipeline.models import PipelineJob

        return PipelineJob.objects.filter(slug__startswith=f"{DEMO_PREFIX}-").delete()[0]


register_demo("pipeline", PipelineDemo())
