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
from datetime import datetime, timedelta
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
        _write_transition(job, event, transition_fields(job.config, event, outcome, now, data))
        previous_stage_job = job.stage_job_id
        if outcome.run_stage:
            _queue_stage(job, new)
        if event == "cancel" and previous_stage_job:
            _stop_stage_job(previous_stage_job, actor)
        if event in ("approve", "reject"):
            _record_gate_decision(job, event, stage, actor=actor, notes=notes, automatic=automatic)
        base = event_data(actor, new.run, data, notes=notes, automatic=automatic)
        for event_type, event_stage in outcome.events:
            _add_event(job.pk, event_type, event_stage, base, now)
        if needs_ledger(event, actor, automatic):
            _record_person_event(job, event, stage or job.stage, new.status, actor=actor, notes=notes)
        _after_commit(job, transition_record(job.pk, job.slug, job.state(), new, event, actor, now))
        job.refresh_from_db()
    return job


# --- pure: what a transition writes -----------------------------------------------------
def transition_fields(
    config: dict[str, Any], event: str, outcome: t.Outcome, now: datetime, data: dict[str, Any] | None
) -> dict[str, Any]:
    """The job's columns after a changing transition (deadlines from its config)."""
    new = outcome.state
    # update() skips auto_now, so updated_at is set here.
    fields: dict[str, Any] = {"status": new.status, "stage": new.stage, "stage_run": new.run, "updated_at": now}
    if new.status == t.NEEDS_APPROVAL:
        minutes = config.get("gates", {}).get(new.stage, {}).get("timeout_minutes", 60)
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
        minutes = config.get("stage_timeouts", {}).get(new.stage, 60)
        fields["stage_deadline"] = now + timedelta(minutes=minutes)
    return fields


def event_data(
    actor: str, run: int, data: dict[str, Any] | None, *, notes: str = "", automatic: bool = False
) -> dict[str, Any]:
    """The data every event of one transition carries."""
    base = {"actor": actor, "run": run, **(data or {})}
    if notes:
        base["notes"] = notes
    if automatic:
        base["automatic"] = True
    return base


def needs_ledger(event: str, actor: str, automatic: bool) -> bool:
    """A person's decision (or the loop deciding for one) goes to the ledger; the
    engine's own progress is in the job's events only."""
    return (event in PERSON_EVENTS and actor != "system") or automatic


def transition_record(
    job_id: int, slug: str, old: t.State, new: t.State, event: str, actor: str, now: datetime
) -> dict[str, Any]:
    """One line of ``runs/state.jsonl``."""
    return {
        "job_id": job_id,
        "slug": slug,
        "event": event,
        "from_status": old.status,
        "to_status": new.status,
        "from_stage": old.stage,
        "to_stage": new.stage,
        "run": new.run,
        "actor": actor,
        "at": now.isoformat(),
    }


# --- steps around the database ----------------------------------------------------------
def _write_transition(job: PipelineJob, event: str, fields: dict[str, Any]) -> None:
    """Conditional on the state it was decided from: of two racing decisions one wins."""
    changed = PipelineJob.objects.filter(pk=job.pk, status=job.status, stage=job.stage, stage_run=job.stage_run).update(
        **fields
    )
    if not changed:
        raise GateConflict(f"pipeline job {job.pk} changed while deciding {event}; reload and try again")


def _queue_stage(job: PipelineJob, new: t.State) -> None:
    stage_job = queue.enqueue(
        STAGE_KIND,
        {"pipeline_job": job.pk, "stage": new.stage, "run": new.run},
        lane=job.config.get("lane", "pipeline"),
        max_attempts=job.config.get("stage_attempts", 3),
        reference=f"pipeline:{job.pk}:{new.stage}:{new.run}",
    )
    PipelineJob.objects.filter(pk=job.pk).update(stage_job=stage_job)


def _stop_stage_job(stage_job_id: int, actor: str) -> None:
    """A running stage is told to stop; its result will be stale anyway."""

    stage_job = Job.objects.filter(pk=stage_job_id).first()
    if stage_job is not None:
        try:
            queue.cancel(stage_job, actor=actor)
        except queue.JobStateError:
            pass  # already finished


def _record_gate_decision(
    job: PipelineJob, event: str, stage: str | None, *, actor: str, notes: str, automatic: bool
) -> None:
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


def _record_person_event(job: PipelineJob, event: str, stage: str, status: str, *, actor: str, notes: str) -> None:
    record(
        f"pipeline.{event}",
        f"Pipeline job {job.pk} ({job.slug}): {event} at {stage} → {status}",
        subject=f"pipeline:{job.pk}",
        data={"pipeline_job": job.pk, "stage": stage, "status": status, "notes": notes},
        actor=actor,
    )


def _after_commit(job: PipelineJob, transition: dict[str, Any]) -> None:
    job_id = job.pk
    transaction.on_commit(lambda: _after_transition(job_id, transition))
    if job.escalated_at is not None:
        # The overdue gate was decided (or the job left it): its anomaly is over.
        transaction.on_commit(lambda: alerts.resolve_gate_anomaly(job_id))


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
