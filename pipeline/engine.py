"""Everything that changes a pipeline job goes through ``apply()``.

``apply`` reads the job under a row lock (PostgreSQL) / inside an IMMEDIATE
transaction (SQLite), asks the pure state machine what comes next, and writes the new
state with a conditional UPDATE on the old (status, stage, run): of two people
approving and rejecting the same gate at once exactly one UPDATE matches, the other
gets ``GateConflict`` (409). Events go to the database in the same transaction and to
the job's files once it commits.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from orchestration.core.jobs import queue
from orchestration.core.models import Job, Lane
from orchestration.core.models.ledger import record
from pipeline import alerts, disk
from pipeline import transitions as t
from pipeline.choices import Decision
from pipeline.models import GateDecision, PipelineDefinition, PipelineEvent, PipelineJob

log = logging.getLogger("pipeline")
gate_log = logging.getLogger("pipeline.gates")

STAGE_KIND = "pipeline.stage"
PERSON_EVENTS = {"start", "approve", "reject", "resume", "cancel"}


class GateConflict(t.TransitionError):
    """Someone else changed the job first (e.g. approve and reject racing)."""


def create_job(
    slug: str,
    intent: str = "",
    *,
    definition: PipelineDefinition | None = None,
    actor: str = "system",
    start: bool = True,
) -> PipelineJob:
    definition = definition or PipelineDefinition.default()
    with transaction.atomic():
        # Single-lane by default: a pipeline lane nobody configured gets limit 1 (the
        # migration creates the default one; people may raise a limit on purpose).
        Lane.objects.get_or_create(name=definition.lane, defaults={"concurrency_limit": 1})
        job = PipelineJob.objects.create(
            slug=slug,
            intent=intent,
            definition=definition,
            config=definition.snapshot(),
            stage=definition.stages[0],
            created_by=actor,
        )
        transaction.on_commit(lambda: _write_state(job.pk))
        if start:
            job = apply(job.pk, "start", actor=actor)
    return job


def apply(
    job_id: int,
    event: str,
    *,
    stage: str | None = None,
    run: int | None = None,
    actor: str = "system",
    notes: str = "",
    automatic: bool = False,
    retry: bool = False,
    data: dict[str, Any] | None = None,
) -> PipelineJob:
    """Apply one event; returns the job as it is afterwards. Raises TransitionError (409)."""
    now = timezone.now()
    with transaction.atomic():
        job = PipelineJob.objects.select_for_update().get(pk=job_id)
        outcome = t.decide(job.state(), event, job.machine(), stage=stage, run=run, retry=retry)
        if not outcome.changed:
            log.info("pipeline job %s: %s ignored (%s)", job_id, event, outcome.ignored)
            return job
        new = outcome.state
        # update() skips auto_now, so updated_at is set here.
        fields: dict[str, Any] = {"status": new.status, "stage": new.stage, "stage_run": new.run, "updated_at": now}
        if new.status == t.NEEDS_APPROVAL:
            minutes = job.config.get("gates", {}).get(new.stage, {}).get("timeout_minutes", 60)
            fields.update(waiting_since=now, gate_deadline=now + timedelta(minutes=minutes), escalated_at=None)
        else:
            fields.update(waiting_since=None, gate_deadline=None, escalated_at=None)
        if new.status != t.RUNNING:
            fields["stage_deadline"] = None
        if new.status in t.FINAL:
            fields["finished_at"] = now
        if event == "stage_failed":
            fields["error"] = (data or {}).get("error", "stage failed")[:4000]
        elif outcome.run_stage:
            fields["error"] = ""
        if outcome.run_stage:
            minutes = job.config.get("stage_timeouts", {}).get(new.stage, 60)
            fields["stage_deadline"] = now + timedelta(minutes=minutes)
        changed = PipelineJob.objects.filter(
            pk=job.pk, status=job.status, stage=job.stage, stage_run=job.stage_run
        ).update(**fields)
        if not changed:
            raise GateConflict(f"pipeline job {job.pk} changed while deciding {event}; reload and try again")

        previous_stage_job = job.stage_job_id
        if outcome.run_stage:
            stage_job = queue.enqueue(
                STAGE_KIND,
                {"pipeline_job": job.pk, "stage": new.stage, "run": new.run},
                lane=job.config.get("lane", "pipeline"),
                max_attempts=job.config.get("stage_attempts", 3),
                reference=f"pipeline:{job.pk}:{new.stage}:{new.run}",
            )
            PipelineJob.objects.filter(pk=job.pk).update(stage_job=stage_job)
        if event == "cancel" and previous_stage_job:
            # A running stage is told to stop; its result will be stale anyway.

            stage_job = Job.objects.filter(pk=previous_stage_job).first()
            if stage_job is not None:
                try:
                    queue.cancel(stage_job, actor=actor)
                except queue.JobStateError:
                    pass  # already finished
        if event in ("approve", "reject"):
            GateDecision.objects.create(
                job=job,
                stage=stage,
                decision=Decision.APPROVED if event == "approve" else Decision.REJECTED,
                decided_by=actor,
                notes=notes,
                automatic=automatic,
            )
            gate_log.info(
                "gate %s of pipeline job %s %s by %s",
                stage,
                job.pk,
                "approved" if event == "approve" else "rejected",
                actor,
                extra={"pipeline_job": job.pk, "stage": stage},
            )
        base = {"actor": actor, "run": new.run, **(data or {})}
        if notes:
            base["notes"] = notes
        if automatic:
            base["automatic"] = True
        for event_type, event_stage in outcome.events:
            _add_event(job.pk, event_type, event_stage, base, now)
        if (event in PERSON_EVENTS and actor != "system") or automatic:
            record(
                f"pipeline.{event}",
                f"Pipeline job {job.pk} ({job.slug}): {event} at {stage or job.stage} → {new.status}",
                subject=f"pipeline:{job.pk}",
                data={"pipeline_job": job.pk, "stage": stage or job.stage, "status": new.status, "notes": notes},
                actor=actor,
            )
        transition = {
            "job_id": job.pk,
            "slug": job.slug,
            "event": event,
            "from_status": job.status,
            "to_status": new.status,
            "from_stage": job.stage,
            "to_stage": new.stage,
            "run": new.run,
            "actor": actor,
            "at": now.isoformat(),
        }
        transaction.on_commit(lambda: _after_transition(job.pk, transition))
        if job.escalated_at is not None:
            # The overdue gate was decided (or the job left it): its anomaly is over.
            transaction.on_commit(lambda: alerts.resolve_gate_anomaly(job.pk))
        job.refresh_from_db()
    return job


def add_event(job: PipelineJob, event_type: str, stage: str, data: dict[str, Any] | None = None) -> None:
    """An event that is not a transition (stage_started)."""
    with transaction.atomic():
        _add_event(job.pk, event_type, stage, data or {}, timezone.now())


def _add_event(job_id: int, event_type: str, stage: str, data: dict[str, Any], now) -> None:
    event = PipelineEvent.objects.create(job_id=job_id, type=event_type, stage=stage, data=data, created_at=now)
    line = {"id": event.pk, "job_id": job_id, **event.as_dict()}
    transaction.on_commit(lambda: disk.append_line(disk.run_dir(job_id) / "events.jsonl", line))
    log.info("pipeline job %s: %s %s", job_id, event_type, stage, extra={"pipeline_job": job_id, "stage": stage})


def _after_transition(job_id: int, transition: dict[str, Any]) -> None:
    disk.append_line(disk.runs_root() / "state.jsonl", transition)
    _write_state(job_id)


def _write_state(job_id: int) -> None:
    job = PipelineJob.objects.filter(pk=job_id).first()
    if job is None:
        return
    disk.write_json_atomic(disk.run_dir(job_id) / "state.json", state_document(job))


def state_document(job: PipelineJob) -> dict[str, Any]:
    done, total = job.progress()
    return {
        "id": job.pk,
        "slug": job.slug,
        "intent": job.intent,
        "status": job.status,
        "stage": job.stage,
        "stage_run": job.stage_run,
        "progress": {"done": done, "total": total},
        "definition": job.config.get("definition"),
        "cfg": job.config,
        "error": job.error,
        "waiting_since": job.waiting_since,
        "gate_deadline": job.gate_deadline,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
    }


# --- convenience for people and the loop ------------------------------------------
def approve(job: PipelineJob, stage: str, *, actor: str, notes: str = "", automatic: bool = False) -> PipelineJob:
    return apply(job.pk, "approve", stage=stage, actor=actor, notes=notes, automatic=automatic)


def reject(job: PipelineJob, stage: str, *, actor: str, notes: str = "") -> PipelineJob:
    return apply(job.pk, "reject", stage=stage, actor=actor, notes=notes)


def resume(job: PipelineJob, *, actor: str) -> PipelineJob:
    return apply(job.pk, "resume", actor=actor)


def cancel(job: PipelineJob, *, actor: str) -> PipelineJob:
    return apply(job.pk, "cancel", actor=actor)
