"""Pipeline's part of the control loop: the ``pipeline`` snapshot section and the
actions its default rules trigger (overdue gates, overdue stages)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db.models import Count, Min, Q

from orchestration.core.choices import Severity
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.core.models.ledger import record
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionContext, action_handler
from orchestration.loop.monitor import Aggregation, aggregate_section
from pipeline import engine
from pipeline import transitions as t
from pipeline.models import PipelineJob

log = logging.getLogger("pipeline.gates")
BATCH = 200


def _pipeline_parts(now: datetime) -> list[Aggregation]:
    """One aggregate whatever the number of jobs."""
    return [
        (
            PipelineJob.objects.all(),
            {
                "total": Count("id"),
                **{status: Count("id", filter=Q(status=status)) for status in t.STATUSES},
                "oldest_waiting": Min("waiting_since", filter=Q(status=t.NEEDS_APPROVAL)),
                "overdue_gates": Count(
                    "id", filter=Q(status=t.NEEDS_APPROVAL, gate_deadline__lt=now, escalated_at__isnull=True)
                ),
                "escalated_gates": Count("id", filter=Q(status=t.NEEDS_APPROVAL, escalated_at__isnull=False)),
                "overdue_stages": Count("id", filter=Q(status=t.RUNNING, stage_deadline__lt=now)),
            },
        )
    ]


@aggregate_section("pipeline", _pipeline_parts)
def pipeline_section(now: datetime, results: list[dict[str, Any]]) -> dict[str, Any]:
    (counts,) = results
    oldest = counts.pop("oldest_waiting")
    by_status = {status: counts.pop(status) for status in t.STATUSES}
    return {
        **counts,
        "by_status": by_status,
        "active": sum(by_status[s] for s in t.ACTIVE),
        "awaiting_approval": by_status[t.NEEDS_APPROVAL],
        "oldest_waiting_minutes": round((now - oldest).total_seconds() / 60, 1) if oldest else 0,
    }


@action_handler("escalate_pipeline_gates")
def escalate_pipeline_gates(action: PlannedAction, ctx: ActionContext) -> dict:
    """Gates waiting past their timeout: each gets its policy (approve with the input's
    defaults, reject, fail, or escalate a tier / open an anomaly), settled under the
    job's lock so a person deciding at the same moment and the loop never both win."""
    done: dict[str, list[int]] = {}
    overdue = PipelineJob.objects.filter(
        status=t.NEEDS_APPROVAL, gate_deadline__lt=ctx.now, escalated_at__isnull=True
    ).values_list("pk", "stage", "stage_run")[:BATCH]
    for pk, stage, run in overdue:
        try:
            what = engine.settle_timeout(pk, stage, run, now=ctx.now, actor=ctx.actor)
        except t.TransitionError:
            continue  # a person decided in the meantime
        if what:
            done.setdefault(what, []).append(pk)
            log.warning("gate %s of pipeline job %s timed out: %s", stage, pk, what, extra={"pipeline_job": pk})
    return {
        "escalated": done.get("escalate", []) + done.get("escalated", []),
        "auto_approved": done.get("approve_with_defaults", []),
        "rejected": done.get("reject", []),
        "failed": done.get("fail", []),
    }


@action_handler("fail_overdue_pipeline_stages")
def fail_overdue_pipeline_stages(action: PlannedAction, ctx: ActionContext) -> dict:
    """Stages running past their timeout: stage_failed, then the job fails (or the stage
    runs again where the definition retries timed-out stages)."""
    failed, retried = [], []
    overdue = PipelineJob.objects.filter(status=t.RUNNING, stage_deadline__lt=ctx.now).values_list(
        "pk", "stage", "stage_run", "stage_job_id", "config"
    )[:BATCH]
    for pk, stage, run, stage_job_id, config in overdue:
        minutes = config.get("stage_timeouts", {}).get(stage)
        timeouts_so_far = (
            PipelineJob.objects.get(pk=pk).events.filter(type="stage_failed", stage=stage, data__timeout=True).count()
        )
        retry = bool(config.get("retry_timed_out_stages")) and timeouts_so_far + 1 < config.get("stage_attempts", 1)
        try:
            engine.apply(
                pk,
                "stage_failed",
                stage=stage,
                run=run,
                retry=retry,
                actor=ctx.actor,
                data={"error": f"stage {stage} timed out after {minutes} minutes", "timeout": True},
            )
        except t.TransitionError:
            continue
        _stop_stage_job(stage_job_id, ctx.actor)
        (retried if retry else failed).append(pk)
        record(
            "pipeline.stage_timeout",
            f"Pipeline job {pk}: stage {stage} ran past its {minutes} min timeout"
            + ("; running it again" if retry else "; job failed"),
            severity=Severity.WARNING,
            subject=f"pipeline:{pk}",
            data={"pipeline_job": pk, "stage": stage, "retried": retry},
            actor=ctx.actor,
        )
    return {"failed": failed, "retried": retried}


def _stop_stage_job(stage_job_id: int | None, actor: str) -> None:
    job = Job.objects.filter(pk=stage_job_id).first() if stage_job_id else None
    if job is not None:
        try:
            queue.cancel(job, actor=actor)
        except queue.JobStateError:
            pass
