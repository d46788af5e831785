"""The cycle's decisions about what to record, over plain data (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestration.loop.cycle import (
    CycleRun,
    action_fields,
    cycle_entries,
    cycle_result,
    cycle_summary,
    late_by_ms,
)
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionResult

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)
SYSTEM = {"health_score": 90, "status": "healthy"}


def a_run(*, dry: bool = False) -> CycleRun:
    return CycleRun(
        cycle=7, dry=dry, manual=False, owner="n1", actor="orchestrator", started=T0, interval_seconds=2, late_ms=3.0
    )


def planned(n: int) -> list[PlannedAction]:
    return [PlannedAction(type=f"act{i}", priority=5, reason=f"because {i}", rule=f"r{i}", rule_id=i) for i in range(n)]


def test_it_measures_lateness_only_against_a_due_time():
    assert late_by_ms(T0 + timedelta(milliseconds=12), T0) == 12.0
    assert late_by_ms(T0, T0 + timedelta(seconds=1)) == 0.0  # early is not negative lateness
    assert late_by_ms(T0, None) is None  # a manual cycle has no due time


def test_an_idle_cycle_writes_one_idle_entry():
    summary = cycle_summary(a_run(), [], [], SYSTEM, 1.5)
    entries = cycle_entries(a_run(), [], [], summary)
    assert [e.event_type for e in entries] == ["orchestrator.cycle_idle"]
    assert entries[0].message == "Cycle 7: no actions needed, health 90 (healthy)"


def test_a_cycle_with_a_failed_action_warns_and_lists_each_outcome():
    actions = planned(2)
    results = [
        ActionResult(actions[0], ok=True, result={"n": 1}, error="", duration_ms=1.0),
        ActionResult(actions[1], ok=False, result={}, error="boom", duration_ms=2.0),
    ]
    summary = cycle_summary(a_run(), actions, results, SYSTEM, 4.0)
    assert (summary["succeeded"], summary["failed"], summary["late_ms"]) == (1, 1, 3.0)
    entries = cycle_entries(a_run(), actions, results, summary)
    assert [e.event_type for e in entries] == [
        "orchestrator.cycle_started",
        "orchestrator.action_executed",
        "orchestrator.action_failed",
        "orchestrator.cycle_completed",
    ]
    assert entries[2].message == "act1: because 1 — boom" and entries[2].severity == "error"
    assert entries[-1].severity == "warning" and entries[-1].message == "Cycle 7: 1 succeeded, 1 failed"
    assert action_fields(a_run(), actions[1], results[1])["status"] == "failed"


def test_a_dry_run_plans_without_outcomes():
    actions = planned(1)
    summary = cycle_summary(a_run(dry=True), actions, [], SYSTEM, 1.0)
    entries = cycle_entries(a_run(dry=True), actions, [], summary)
    assert [e.event_type for e in entries] == ["orchestrator.cycle_started", "orchestrator.cycle_completed"]
    assert entries[-1].message.endswith("(dry run)")
    fields = action_fields(a_run(dry=True), actions[0], None)
    assert (fields["status"], fields["result"], fields["duration_ms"]) == ("planned", {}, 0)


def test_the_result_names_the_next_due_time_one_interval_after_the_start():
    summary = cycle_summary(a_run(), [], [], SYSTEM, 1.0)
    result = cycle_result(a_run(), {"system": SYSTEM}, [], [], summary)
    assert result["next_cycle_due_at"] == (T0 + timedelta(seconds=2)).isoformat()
    assert result["execution"] == {"succeeded": 0, "failed": 0, "results": []}
