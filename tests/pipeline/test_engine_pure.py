"""What a pipeline transition writes, decided over plain data (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline import transitions as t
from pipeline.engine import event_data, needs_ledger, transition_fields, transition_record

NOW = datetime(2025, 1, 1, 12, tzinfo=UTC)
CONFIG = {"gates": {"script": {"timeout_minutes": 15}}, "stage_timeouts": {"research": 5}}


def test_a_gate_pause_starts_the_gate_clock_from_the_config():
    outcome = t.Outcome(t.State(t.NEEDS_APPROVAL, "script", 2))
    fields = transition_fields(CONFIG, "stage_completed", outcome, NOW, None)
    assert fields["waiting_since"] == NOW and fields["gate_deadline"] == NOW + timedelta(minutes=15)
    assert fields["stage_deadline"] is None and "finished_at" not in fields


def test_a_queued_stage_gets_its_deadline_and_a_clean_error():
    outcome = t.Outcome(t.State(t.RUNNING, "research", 1), run_stage=True)
    fields = transition_fields(CONFIG, "approve", outcome, NOW, None)
    assert fields["stage_deadline"] == NOW + timedelta(minutes=5) and fields["error"] == ""
    assert fields["gate_deadline"] is None and fields["waiting_since"] is None
    other = transition_fields({}, "approve", t.Outcome(t.State(t.RUNNING, "audio", 1), run_stage=True), NOW, None)
    assert other["stage_deadline"] == NOW + timedelta(minutes=60)  # no timeout configured: an hour


def test_a_failure_keeps_its_error_and_a_final_state_its_end():
    outcome = t.Outcome(t.State(t.FAILED, "research", 1))
    fields = transition_fields(CONFIG, "stage_failed", outcome, NOW, {"error": "x" * 5000})
    assert len(fields["error"]) == 4000 and fields["finished_at"] == NOW
    assert transition_fields(CONFIG, "stage_failed", outcome, NOW, None)["error"] == "stage failed"


def test_only_decisions_of_people_or_made_for_them_reach_the_ledger():
    assert needs_ledger("approve", "ada", automatic=False)
    assert not needs_ledger("approve", "system", automatic=False)
    assert needs_ledger("approve", "system", automatic=True)
    assert not needs_ledger("stage_completed", "ada", automatic=False)


def test_event_data_and_the_state_line():
    assert event_data("ada", 3, {"k": 1}, notes="ok") == {"actor": "ada", "run": 3, "k": 1, "notes": "ok"}
    assert event_data("loop", 1, None, automatic=True) == {"actor": "loop", "run": 1, "automatic": True}
    line = transition_record(9, "s", t.State(t.QUEUED, "a", 0), t.State(t.RUNNING, "a", 1), "start", "ada", NOW)
    assert (line["from_status"], line["to_status"], line["run"], line["at"]) == (
        "queued",
        "running",
        1,
        NOW.isoformat(),
    )
