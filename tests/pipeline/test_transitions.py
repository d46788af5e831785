"""The pure state machine: no database, microseconds each."""

from __future__ import annotations

import pytest

from pipeline import transitions as t
from pipeline.definitions import default_spec

D = default_spec().machine()


def s(status: str, stage: str, run: int = 1) -> t.State:
    return t.State(status, stage, run)


def test_it_starts_at_the_first_stage():
    out = t.decide(s(t.QUEUED, "outline", 0), "start", D)
    assert out.state == s(t.RUNNING, "outline", 1) and out.run_stage
    assert out.events == (("job_started", "outline"),)


def test_it_advances_through_stages_without_gates():
    out = t.decide(s(t.RUNNING, "outline"), "stage_completed", D, stage="outline", run=1)
    assert out.state == s(t.RUNNING, "research", 2) and out.run_stage
    assert out.events == (("stage_completed", "outline"),)


def test_it_waits_at_a_required_gate_and_approval_moves_on():
    out = t.decide(s(t.RUNNING, "script", 3), "stage_completed", D, stage="script", run=3)
    assert out.state == s(t.NEEDS_APPROVAL, "script", 3) and not out.run_stage
    assert out.events == (("stage_completed", "script"), ("gate_pause", "script"))
    approved = t.decide(out.state, "approve", D, stage="script")
    assert approved.state == s(t.RUNNING, "storyboard", 4) and approved.run_stage
    assert approved.events == (("gate_approved", "script"),)


def test_reject_pauses_and_resume_reruns_the_same_stage():
    paused = t.decide(s(t.NEEDS_APPROVAL, "script", 3), "reject", D, stage="script")
    assert paused.state == s(t.PAUSED, "script", 3) and paused.events == (("gate_rejected", "script"),)
    resumed = t.decide(paused.state, "resume", D)
    assert resumed.state == s(t.RUNNING, "script", 4) and resumed.run_stage
    assert resumed.events == (("job_resumed", "script"),)


def test_the_last_stage_completes_the_job():
    out = t.decide(s(t.RUNNING, "acceptance", 12), "stage_completed", D, stage="acceptance", run=12)
    assert out.state.status == t.COMPLETED and not out.run_stage
    assert out.events[-1] == ("job_completed", "acceptance")


def test_approving_the_last_stage_gate_completes_the_job():
    machine = t.Definition(("a", "b"), {"b": t.Gate()})
    out = t.decide(s(t.NEEDS_APPROVAL, "b"), "approve", machine, stage="b")
    assert out.state.status == t.COMPLETED and out.events == (("gate_approved", "b"), ("job_completed", "b"))


def test_a_gate_that_is_not_required_does_not_stop_the_job():
    machine = t.Definition(("a", "b"), {"a": t.Gate(required=False)})
    out = t.decide(s(t.RUNNING, "a"), "stage_completed", machine, stage="a", run=1)
    assert out.state == s(t.RUNNING, "b", 2)


def test_stage_failure_fails_the_job_or_reruns_when_asked():
    failed = t.decide(s(t.RUNNING, "research", 2), "stage_failed", D, stage="research", run=2)
    assert failed.state.status == t.FAILED
    assert failed.events == (("stage_failed", "research"), ("job_failed", "research"))
    retried = t.decide(s(t.RUNNING, "research", 2), "stage_failed", D, stage="research", run=2, retry=True)
    assert retried.state == s(t.RUNNING, "research", 3) and retried.run_stage


def test_it_is_reentrant_stale_or_repeated_results_change_nothing():
    state = s(t.RUNNING, "research", 2)
    for stage, run in (("outline", 1), ("research", 1)):
        out = t.decide(state, "stage_completed", D, stage=stage, run=run)
        assert not out.changed and out.state == state and out.events == ()
    done = t.decide(state, "stage_completed", D, stage="research", run=2)
    again = t.decide(done.state, "stage_completed", D, stage="research", run=2)
    assert not again.changed
    canceled = s(t.CANCELED, "research", 2)
    assert not t.decide(canceled, "stage_completed", D, stage="research", run=2).changed
    assert not t.decide(canceled, "stage_failed", D, stage="research", run=2).changed


def test_it_is_deterministic():
    state = s(t.NEEDS_APPROVAL, "audio", 7)
    assert t.decide(state, "approve", D, stage="audio") == t.decide(state, "approve", D, stage="audio")


@pytest.mark.parametrize(
    ("state", "event", "stage", "message"),
    [
        (s(t.RUNNING, "script"), "approve", "script", "not waiting at the script gate"),
        (s(t.NEEDS_APPROVAL, "script"), "approve", "storyboard", "not waiting at the storyboard gate"),
        (s(t.NEEDS_APPROVAL, "script"), "reject", "outline", "has no approval gate"),
        (s(t.NEEDS_APPROVAL, "script"), "approve", "nope", "unknown stage"),
        (s(t.NEEDS_APPROVAL, "script"), "approve", None, "say which stage"),
        (s(t.RUNNING, "script"), "resume", None, "only paused or failed"),
        (s(t.COMPLETED, "acceptance"), "cancel", None, "already completed"),
        (s(t.RUNNING, "script"), "explode", None, "unknown event"),
    ],
)
def test_it_refuses_what_the_state_does_not_allow(state, event, stage, message):
    with pytest.raises(t.TransitionError, match=message):
        t.decide(state, event, D, stage=stage)


def test_cancel_works_from_every_active_state():
    for status in t.ACTIVE:
        out = t.decide(s(status, "assets"), "cancel", D)
        assert out.state.status == t.CANCELED and out.events == (("job_canceled", "assets"),)


def test_progress_counts_stages_done():
    assert t.progress(D, s(t.RUNNING, "outline")) == (0, 9)
    assert t.progress(D, s(t.NEEDS_APPROVAL, "script")) == (3, 9)
    assert t.progress(D, s(t.COMPLETED, "acceptance")) == (9, 9)
