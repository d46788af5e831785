"""The ``pipeline.stage`` job kind: one run of one stage, executed by the job queue in
the pipeline's lane (single-lane by default, so one stage at a time everywhere).

Delivery is at-least-once: a run whose (status, stage, run) no longer matches the job
does nothing, and artifacts are registered once per path.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from orchestration.core.choices import JobStatus
from orchestration.core.jobs.queue import JobContext, job_finished
from orchestration.core.jobs.registry import PermanentJobError, job_kind
from orchestration.core.models import Job
from pipeline import disk, engine, runners
from pipeline import transitions as t
from pipeline.models import PipelineJob

log = logging.getLogger("pipeline")


def _current(payload: dict[str, Any]) -> PipelineJob | None:
    return (
        PipelineJob.objects.filter(
            pk=payload.get("pipeline_job"), status=t.RUNNING, stage=payload.get("stage"), stage_run=payload.get("run")
        )
        .select_related("definition")
        .first()
    )


@job_kind(engine.STAGE_KIND, description="Run one stage of a pipeline job")
def run_stage(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    if not isinstance(payload.get("pipeline_job"), int) or not isinstance(payload.get("stage"), str):
        raise PermanentJobError("payload needs pipeline_job (id) and stage")
    job = _current(payload)
    if job is None:
        return {"skipped": "the pipeline job moved on; this run is stale"}
    stage, run = payload["stage"], payload["run"]
    engine.add_event(job, "stage_started", stage, {"run": run, "attempt": ctx.job.attempts, "queue_job": ctx.job.pk})
    context = runners.StageContext(job, stage, run, disk.run_dir(job.pk), queue_should_stop=ctx.should_stop)
    result = runners.resolve(job, stage)(context) or {}
    if context.should_stop():
        return {"stopped": True, "artifacts": context.created}
    engine.apply(
        job.pk,
        "stage_completed",
        stage=stage,
        run=run,
        data={
            "artifacts": context.created,
            "reused_artifacts": context.reused,
            **({"notes": context.notes} if context.notes else {}),
        },
    )
    return {"stage": stage, "run": run, "artifacts": context.created, "reused": context.reused, **result}


@receiver(job_finished, dispatch_uid="pipeline.stage_job_finished")
def stage_job_finished(sender, job: Job, **kwargs) -> None:
    """A stage job that failed for good (attempts used up, lease lost), or was canceled
    from the job queue rather than through the pipeline, fails its stage. Pipeline
    cancels and timeouts move the pipeline job first, so their stage job is stale here."""
    if job.kind != engine.STAGE_KIND or job.status not in (JobStatus.FAILED, JobStatus.CANCELED):
        return
    payload = job.payload or {}
    if _current(payload) is None:
        return
    if job.status == JobStatus.CANCELED:
        error = f"stage job {job.pk} was canceled in the job queue"
    else:
        error = (job.error or "stage failed").splitlines()[0]
    engine.apply(
        payload["pipeline_job"],
        "stage_failed",
        stage=payload["stage"],
        run=payload["run"],
        data={"error": error, "queue_job": job.pk, "attempts": job.attempts},
    )
