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

from django.db import IntegrityError, transaction
from django.utils import timezone

from orchestration.core.choices import Severity
from orchestration.core.jobs import queue
from orchestration.core.models import Job, Lane
from orchestration.core.models.ledger import record
from pipeline import alerts, disk, gates
from pipeline import transitions as t
from pipeline.choices import Decision
from pipeline.models import Artifact, GateDecision, PipelineDefinition, PipelineEvent, PipelineJob

log = logging.getLogger("pipeline")
gate_log = logging.getLogger("pipeline.gates")

STAGE_KIND = "pipeline.stage"
PERSON_EVENTS = {"start", "approve", "reject", "resume", "cancel", "fail_gate"}


class GateConflict(t.TransitionError):
    """Someone else changed the job first (e.g. approve and reject racing)."""


class AlreadyDecided(t.TransitionError):
    """This person already decided this wait at the gate (409)."""


class GateForbidden(Exception):
    """This person may not make this decision (403); nothing was written."""


class GateInputError(ValueError):
    """The decision's input does not match the gate's schema (400); ``errors`` maps
    each field (a dotted path inside the input) to what is wrong with it."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"input.{k}: {', '.join(v)}" for k, v in errors.items()))
        self.errors = errors


NOTIFY_KIND = "pipeline.notify_gate"


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
        base = event_data(actor, new.run, data, notes=notes, automatic=automatic)
        for event_type, event_stage in outcome.events:
            _add_event(job.pk, event_type, event_stage, base, now)
        if needs_ledger(event, actor, automatic):
            _record_person_event(job, event, stage or job.stage, new.status, actor=actor, notes=notes, data=data)
        if new.status == t.NEEDS_APPROVAL:
            # Every pause tells the people it waits for, with their own decision links.
            queue.enqueue(NOTIFY_KIND, {"pipeline_job": job.pk, "stage": new.stage, "run": new.run}, max_attempts=3)
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


def _record_person_event(
    job: PipelineJob, event: str, stage: str, status: str, *, actor: str, notes: str, data: dict | None = None
) -> None:
    record(
        f"pipeline.{event}",
        f"Pipeline job {job.pk} ({job.slug}): {event} at {stage} → {status}",
        subject=f"pipeline:{job.pk}",
        data={"pipeline_job": job.pk, "stage": stage, "status": status, "notes": notes, **(data or {})},
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


# --- gate decisions -------------------------------------------------------------------
def decide(
    job: PipelineJob | int,
    stage: str,
    verb: str,
    *,
    person: gates.Person,
    notes: str = "",
    values: dict[str, Any] | None = None,
    via: str = "api",
) -> PipelineJob:
    """One person's approve or reject at the gate the job waits at: the write the API,
    the console, the admin and the one-click links all make.

    Checked under the job's row lock: the job waits at ``stage`` (else 409), the person
    may decide it (else GateForbidden, 403), the input matches the gate's schema (else
    GateInputError, 400), and they have not decided this wait yet (else 409). The
    decision is stored with its input; when it completes the quorum (or the rejections
    that reject), the job moves on in the same transaction.
    """
    job_id = job.pk if isinstance(job, PipelineJob) else job
    if verb not in ("approve", "reject"):
        raise t.TransitionError(f"unknown decision {verb!r}; use approve or reject")
    now = timezone.now()
    with transaction.atomic():
        job = PipelineJob.objects.select_for_update().get(pk=job_id)
        t.decide(job.state(), verb, job.machine(), stage=stage)  # raises when not waiting there
        policy = job.policy(stage)
        why = gates.refusal(policy, person, verb, starter=job.created_by, tier=job.escalation_tier)
        if why:
            raise GateForbidden(why)
        given = values if values is not None else {}
        if verb == "approve":
            given = gates.with_defaults(policy.input_schema, given) if isinstance(given, dict) else given
            problems = gates.input_errors(policy.input_schema, given)
            if problems:
                raise GateInputError(problems)
        else:
            given = {}  # a rejection carries its reasons in the notes
        votes = job.round_votes(stage)
        if any(v.username == person.username for v in votes):
            raise AlreadyDecided(f"{person.username} already decided the {stage} gate of job {job.pk}")
        decision = Decision.APPROVED if verb == "approve" else Decision.REJECTED
        outcome = gates.tally(policy, [*votes, gates.Vote(person.username, decision)])
        try:
            with transaction.atomic():
                GateDecision.objects.create(
                    job=job,
                    stage=stage,
                    run=job.stage_run,
                    decision=decision,
                    decided_by=person.username,
                    notes=notes,
                    input=given,
                    settles=outcome is not None,
                    via=via,
                    created_at=now,
                )
        except IntegrityError:
            # Two requests of the same person at once: the database keeps one.
            raise AlreadyDecided(f"{person.username} already decided the {stage} gate of job {job.pk}") from None
        approvals = sum(v.decision == Decision.APPROVED for v in votes) + (decision == Decision.APPROVED)
        rejections = len(votes) + 1 - approvals
        tally_data = {
            "decision": decision,
            "input": given,
            "approvals": approvals,
            "rejections": rejections,
            "quorum": policy.quorum,
            "via": via,
        }
        _add_event(
            job.pk, "gate_decision", stage, event_data(person.username, job.stage_run, tally_data, notes=notes), now
        )
        gate_log.info(
            "gate %s of pipeline job %s: %s by %s (%s/%s approvals)",
            stage,
            job.pk,
            decision,
            person.username,
            approvals,
            policy.quorum,
            extra={"pipeline_job": job.pk, "stage": stage},
        )
        if outcome is None:
            record(
                "pipeline.gate_decision",
                f"Pipeline job {job.pk} ({job.slug}): {decision} at {stage} by {person.username}, "
                f"{approvals}/{policy.quorum} approvals",
                subject=f"pipeline:{job.pk}",
                data={"pipeline_job": job.pk, "stage": stage, "notes": notes, **tally_data},
                actor=person.username,
            )
            return job
        event = "approve" if outcome == Decision.APPROVED else "reject"
        merged = job.gate_input(stage) if event == "approve" else {}
        data = {"input": merged, "decided_by": [v.username for v in votes] + [person.username], "via": via}
        run = job.stage_run
        job = apply(job.pk, event, stage=stage, actor=person.username, notes=notes, data=data)
        if event == "approve" and merged:
            _save_gate_input(job.pk, stage, run, merged)
    return job


def _save_gate_input(job_id: int, stage: str, run: int, values: dict[str, Any]) -> None:
    """The values a gate let through, as an artifact of the job (file written on commit)."""
    relpath = f"gates/{stage}.run{run}.input.json"
    if Artifact.objects.filter(job_id=job_id, path=relpath).exists():
        return
    Artifact.objects.create(
        job_id=job_id, stage=stage, path=relpath, kind="gate_input", metadata={"fields": sorted(values), "run": run}
    )
    target = disk.run_dir(job_id) / relpath
    transaction.on_commit(lambda: disk.write_json_atomic(target, values))


def settle_timeout(job_id: int, stage: str, run: int, *, now: datetime, actor: str = "system") -> str | None:
    """Apply the gate's timeout policy to a wait that is past its deadline.

    Under the job's row lock and conditional on the same wait (stage, run) still being
    open and overdue: a person deciding at the same moment either went first (the wait
    is over, nothing happens here) or comes second and gets 409. Returns what was done,
    or None when the wait was settled meanwhile."""
    with transaction.atomic():
        job = PipelineJob.objects.select_for_update().get(pk=job_id)
        if (job.status, job.stage, job.stage_run) != (t.NEEDS_APPROVAL, stage, run):
            return None
        if job.gate_deadline is None or job.gate_deadline > now or job.escalated_at is not None:
            return None
        policy = job.policy(stage)
        note = f"No decision within {policy.timeout_minutes} minutes: {policy.on_timeout}"
        # The decision is the system's; the ledger names who ran the loop (``actor``).
        # (fail_gate's transition records its own gate_timed_out.)
        if policy.on_timeout != gates.FAIL:
            _add_event(
                job.pk, "gate_timed_out", stage, {"actor": "system", "run": run, "on_timeout": policy.on_timeout}, now
            )
        if policy.on_timeout == gates.APPROVE_WITH_DEFAULTS:
            values = gates.with_defaults(policy.input_schema)
            _record_automatic(job, stage, Decision.APPROVED, values, note, now)
            apply(job.pk, "approve", stage=stage, actor="system", automatic=True, notes=note, data={"input": values})
            if values:
                _save_gate_input(job.pk, stage, run, values)
        elif policy.on_timeout == gates.REJECT:
            _record_automatic(job, stage, Decision.REJECTED, {}, note, now)
            apply(job.pk, "reject", stage=stage, actor="system", automatic=True, notes=note)
        elif policy.on_timeout == gates.FAIL:
            apply(job.pk, "fail_gate", stage=stage, actor="system", automatic=True, notes=note, data={"error": note})
        else:
            return _escalate(job, policy, now, actor)
        return policy.on_timeout


def _record_automatic(job: PipelineJob, stage: str, decision: str, values: dict, notes: str, now: datetime) -> None:
    GateDecision.objects.create(
        job=job,
        stage=stage,
        run=job.stage_run,
        decision=decision,
        decided_by="system",
        notes=notes,
        input=values,
        automatic=True,
        settles=True,
        via="timeout",
        created_at=now,
    )


def _escalate(job: PipelineJob, policy: gates.Policy, now: datetime, actor: str) -> str:
    """The next escalation tier joins the assignees with a fresh deadline; past the last
    tier, the overdue gate becomes an anomaly (the alert channels' escalation)."""
    if job.escalation_tier < len(policy.escalate_to):
        tier = job.escalation_tier + 1
        PipelineJob.objects.filter(pk=job.pk).update(
            escalation_tier=tier, gate_deadline=now + timedelta(minutes=policy.timeout_minutes), updated_at=now
        )
        added = list(policy.escalate_to[tier - 1])
        _add_event(
            job.pk,
            "gate_escalated",
            job.stage,
            {"actor": actor, "run": job.stage_run, "tier": tier, "added": added},
            now,
        )
        record(
            "pipeline.gate_escalated",
            f"Pipeline job {job.pk} ({job.slug}): the {job.stage} gate escalated to tier {tier} ({', '.join(added)})",
            severity=Severity.WARNING,
            subject=f"pipeline:{job.pk}",
            data={"pipeline_job": job.pk, "stage": job.stage, "tier": tier, "added": added},
            actor=actor,
        )
        queue.enqueue(
            NOTIFY_KIND,
            {"pipeline_job": job.pk, "stage": job.stage, "run": job.stage_run, "only": added},
            max_attempts=3,
        )
        return "escalated"
    PipelineJob.objects.filter(pk=job.pk).update(escalated_at=now)
    waited = round((now - job.waiting_since).total_seconds() / 60, 1) if job.waiting_since else None
    _add_event(job.pk, "gate_escalated", job.stage, {"actor": actor, "run": job.stage_run, "tier": "anomaly"}, now)
    record(
        "pipeline.gate_escalated",
        f"Pipeline job {job.pk} ({job.slug}) has waited {waited} min at the {job.stage} gate "
        f"(timeout {policy.timeout_minutes} min)",
        severity=Severity.WARNING,
        subject=f"pipeline:{job.pk}",
        data={"pipeline_job": job.pk, "stage": job.stage, "waited_minutes": waited, "on_timeout": policy.on_timeout},
        actor=actor,
    )
    alerts.open_gate_anomaly(
        job.pk, {"stage": job.stage, "waited_minutes": waited, "timeout_minutes": policy.timeout_minutes}
    )
    return "escalated"


# --- convenience for people and the loop ------------------------------------------
def approve(
    job: PipelineJob,
    stage: str,
    *,
    actor: str,
    notes: str = "",
    values: dict[str, Any] | None = None,
    person: gates.Person | None = None,
    via: str = "command",
) -> PipelineJob:
    """``person`` defaults to a trusted caller (a management command) named ``actor``;
    the gate's assignees and self-approval rule still apply to that name."""
    who = person or gates.Person(actor, can_approve=True)
    return decide(job, stage, "approve", person=who, notes=notes, values=values, via=via)


def reject(
    job: PipelineJob,
    stage: str,
    *,
    actor: str,
    notes: str = "",
    person: gates.Person | None = None,
    via: str = "command",
) -> PipelineJob:
    who = person or gates.Person(actor, can_approve=True)
    return decide(job, stage, "reject", person=who, notes=notes, via=via)


def resume(job: PipelineJob, *, actor: str) -> PipelineJob:
    return apply(job.pk, "resume", actor=actor)


def cancel(job: PipelineJob, *, actor: str) -> PipelineJob:
    return apply(job.pk, "cancel", actor=actor)
