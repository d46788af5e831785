"""The pipeline job state machine, as a pure function (no Django, no ORM, no clock).

``decide(state, event, definition)`` returns the next state and the events to record.
It is deterministic (same input, same output) and re-entrant: an event that no longer
applies to the state (a stage finishing twice, a late result of a superseded run) is
``ignored`` instead of raising, so at-least-once delivery cannot corrupt a job. Events
that come from a person (approve, reject, resume, cancel) raise ``TransitionError``
when the job is not in a state that allows them; the API answers 409.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

QUEUED = "queued"
RUNNING = "running"
NEEDS_APPROVAL = "needs_approval"
PAUSED = "paused"
COMPLETED = "completed"
FAILED = "failed"
CANCELED = "canceled"

STATUSES = (QUEUED, RUNNING, NEEDS_APPROVAL, PAUSED, COMPLETED, FAILED, CANCELED)
FINAL = (COMPLETED, FAILED, CANCELED)
ACTIVE = (QUEUED, RUNNING, NEEDS_APPROVAL, PAUSED)

EVENT_TYPES = (
    "job_started",
    "stage_started",
    "stage_completed",
    "stage_failed",
    "gate_pause",
    "gate_decision",
    "gate_escalated",
    "gate_timed_out",
    "gate_approved",
    "gate_rejected",
    "job_resumed",
    "job_completed",
    "job_failed",
    "job_canceled",
)


class TransitionError(Exception):
    """A person asked for something the job's current state does not allow."""


@dataclass(frozen=True)
class Gate:
    required: bool = True
    auto_approve: bool = False
    timeout_minutes: int = 60


@dataclass(frozen=True)
class Definition:
    stages: tuple[str, ...]
    gates: dict[str, Gate] = field(default_factory=dict)

    def requires_approval(self, stage: str) -> bool:
        gate = self.gates.get(stage)
        return bool(gate and gate.required)

    def after(self, stage: str) -> str | None:
        index = self.stages.index(stage)
        return self.stages[index + 1] if index + 1 < len(self.stages) else None


@dataclass(frozen=True)
class State:
    status: str
    stage: str
    run: int = 0  # increments each time a stage is (re)queued; results of older runs are stale


@dataclass(frozen=True)
class Outcome:
    state: State
    events: tuple[tuple[str, str], ...] = ()  # (event type, stage)
    run_stage: bool = False  # queue a run of state.stage (state.run names it)
    ignored: str = ""  # why nothing changed (re-entrant no-op)

    @property
    def changed(self) -> bool:
        return not self.ignored


def _ignore(state: State, why: str) -> Outcome:
    return Outcome(state, ignored=why)


def _run(state: State, stage: str, events: list[tuple[str, str]]) -> Outcome:
    return Outcome(State(RUNNING, stage, state.run + 1), tuple(events), run_stage=True)


def _advance(state: State, definition: Definition, events: list[tuple[str, str]]) -> Outcome:
    following = definition.after(state.stage)
    if following is None:
        events.append(("job_completed", state.stage))
        return Outcome(replace(state, status=COMPLETED), tuple(events))
    return _run(state, following, events)


def decide(
    state: State,
    event: str,
    definition: Definition,
    *,
    stage: str | None = None,
    run: int | None = None,
    retry: bool = False,
) -> Outcome:
    """Next state for ``event``. ``stage``/``run`` say which stage (run) the event is about;
    ``retry`` makes a failed stage run again instead of failing the job."""
    if state.stage not in definition.stages:
        raise TransitionError(f"stage {state.stage!r} is not part of this pipeline")
    if stage is not None and stage not in definition.stages:
        raise TransitionError(f"unknown stage {stage!r}; stages are: {', '.join(definition.stages)}")

    if event == "start":
        if state.status != QUEUED:
            return _ignore(state, f"already {state.status}")
        return _run(state, definition.stages[0], [("job_started", definition.stages[0])])

    if event in ("stage_completed", "stage_failed"):
        # Results from machines: never raise, only drop what is stale.
        if state.status != RUNNING:
            return _ignore(state, f"job is {state.status}")
        if stage != state.stage or (run is not None and run != state.run):
            return _ignore(state, f"result of {stage} run {run} is stale (now {state.stage} run {state.run})")
        if event == "stage_failed":
            if retry:
                return _run(state, stage, [("stage_failed", stage)])
            return Outcome(replace(state, status=FAILED), (("stage_failed", stage), ("job_failed", stage)))
        events = [("stage_completed", stage)]
        if definition.requires_approval(stage):
            events.append(("gate_pause", stage))
            return Outcome(replace(state, status=NEEDS_APPROVAL), tuple(events))
        return _advance(state, definition, events)

    if event in ("approve", "reject", "fail_gate"):
        if stage is None:
            raise TransitionError("say which stage's gate you are deciding")
        if not definition.requires_approval(stage):
            raise TransitionError(f"stage {stage!r} has no approval gate")
        if state.status != NEEDS_APPROVAL or state.stage != stage:
            raise TransitionError(f"job is {state.status} at {state.stage}, not waiting at the {stage} gate")
        if event == "reject":
            return Outcome(replace(state, status=PAUSED), (("gate_rejected", stage),))
        if event == "fail_gate":
            # The gate's timeout policy says a gate nobody decided in time fails the job.
            return Outcome(replace(state, status=FAILED), (("gate_timed_out", stage), ("job_failed", stage)))
        return _advance(state, definition, [("gate_approved", stage)])

    if event == "resume":
        if state.status not in (PAUSED, FAILED):
            raise TransitionError(f"job is {state.status}; only paused or failed jobs can be resumed")
        # Resume re-runs the current stage: a rejected gate means its stage's output
        # was not good enough.
        return _run(state, state.stage, [("job_resumed", state.stage)])

    if event == "cancel":
        if state.status in FINAL:
            raise TransitionError(f"job is already {state.status}")
        return Outcome(replace(state, status=CANCELED), (("job_canceled", state.stage),))

    raise TransitionError(f"unknown event {event!r}")


def progress(definition: Definition, state: State) -> tuple[int, int]:
    """(stages done, stages total) for progress bars."""
    total = len(definition.stages)
    if state.status == COMPLETED:
        return total, total
    index = definition.stages.index(state.stage) if state.stage in definition.stages else 0
    done = index + (1 if state.status == NEEDS_APPROVAL else 0)
    return done, total
