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
from pipeline import alerts, engine
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
    """Gates waiting past their timeout: escalate once; approve by the system where auto_approve."""
    escalated, auto_approved, anomalies = [], [], []
    overdue = PipelineJob.objects.filter(
        status=t.NEEDS_APPROVAL, gate_deadline__lt=ctx.now, escalated_at__isnull=True
    ).values_list("pk", "stage", "slug", "waiting_since", "config")[:BATCH]
    for pk, stage, slug, waiting_since, config in overdue:
        # The claim: one loop (of several) escalates each wait exactly once.
        if not PipelineJob.objects.filter(
            pk=pk, status=t.NEEDS_APPROVAL, stage=stage, escalated_at__isnull=True
        ).update(escalated_at=ctx.now):
            continue
        gate = config.get("gates", {}).get(stage, {})
        minutes = round((ctx.now - waiting_since).total_seconds() / 60, 1) if waiting_since else None
        escalated.append(pk)
        record(
            "pipeline.gate_escalated",
            f"Pipeline job {pk} ({slug}) has waited {minutes} min at the {stage} gate "
            f"(timeout {gate.get('timeout_minutes')} min)",
            severity=Severity.WARNING,
            subject=f"pipeline:{pk}",
            data={
                "pipeline_job": pk,
                "stage": stage,
                "waited_minutes": minutes,
                "auto_approve": gate.get("auto_approve"),
            },
            actor=ctx.actor,
        )
        log.warning("gate %s of pipeline job %s overdue", stage, pk, extra={"pipeline_job": pk, "stage": stage})
        anomalies.append(
            alerts.open_gate_anomaly(
                pk, {"stage": stage, "waited_minutes": minutes, "timeout_minutes": gate.get("timeout_minutes")}
            )
        )
        if gate.get("auto_approve"):
            try:
                engine.apply(
                    pk,
                    "approve",
                    stage=stage,
                    actor="system",
                    automatic=True,
                    notes=f"Approved automatically: no decision within {gate.get('timeout_minutes')} minutes",
                )
                auto_approved.append(pk)
            except t.TransitionError:
                pass  # a person decided in the meantime
    return {"escalated": escalated, "auto_approved": auto_approved, "anomalies": anomalies}


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
