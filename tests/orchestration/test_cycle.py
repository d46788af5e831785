"""Whole cycles: rules from the database, actions executed, everything in the ledger."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.models import Job, LedgerEntry
from orchestration.loop import monitor
from orchestration.loop.cycle import CycleBusy, run_cycle
from orchestration.loop.models import Action, LoopState, Rule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


def events() -> list[str]:
    return list(LedgerEntry.objects.order_by("id").values_list("event_type", flat=True))


def test_an_idle_cycle_is_recorded_as_idle():
    result = run_cycle()
    assert result["decision"]["actions"] == []
    assert result["execution"] == {"succeeded": 0, "failed": 0, "results": []}
    assert events() == ["orchestrator.cycle_idle"]
    state = LoopState.get()
    assert state.cycle_count == 1 and state.last_cycle["health_score"] == 100
    assert state.lease_owner == ""


def test_full_cycle_decides_executes_and_records():
    now = timezone.now()
    Job.objects.bulk_create(Job(kind="noop") for _ in range(51))
    Job.objects.create(kind="noop", status=JobStatus.FAILED, finished_at=now - timedelta(minutes=3))
    result = run_cycle(actor="ops")
    types = [a["type"] for a in result["decision"]["actions"]]
    assert types == ["rebalance_queue", "retry_failed"]  # priority 9, then 8
    assert result["execution"]["succeeded"] == 2
    assert result["snapshot"]["system"]["health_score"] == 100 - 20 - 10
    assert events() == [
        "orchestrator.cycle_started",
        "orchestrator.action_executed",
        "orchestrator.action_executed",
        "orchestrator.cycle_completed",
    ]
    assert set(LedgerEntry.objects.values_list("actor", flat=True)) == {"ops"}
    rows = Action.objects.order_by("-priority")
    assert [(a.action_type, a.status, a.rule_name) for a in rows] == [
        ("rebalance_queue", "succeeded", "queue-saturated"),
        ("retry_failed", "succeeded", "recent-failures"),
    ]
    assert rows[0].trigger == {"jobs.pending": 51}


def test_a_dry_run_decides_but_changes_nothing():
    failed = Job.objects.create(kind="noop", status=JobStatus.FAILED, finished_at=timezone.now())
    result = run_cycle(dry_run=True)
    assert [a["type"] for a in result["decision"]["actions"]] == ["retry_failed"]
    assert result["execution"]["results"] == []
    failed.refresh_from_db()
    assert failed.status == JobStatus.FAILED
    assert Action.objects.get().status == "planned"


def test_a_failing_action_is_recorded_and_the_cycle_completes():
    Rule.objects.create(
        name="broken",
        conditions=[{"field": "jobs.total", "op": ">=", "value": 0}],
        action_type="schedule_job",
        action_params={"target": "nonsense"},
        priority=4,
    )
    result = run_cycle()
    assert result["execution"]["failed"] == 1
    failed = LedgerEntry.objects.get(event_type="orchestrator.action_failed")
    assert failed.severity == "error" and "nonsense" in failed.message


def test_a_cooldown_keeps_a_rule_from_firing_every_cycle():
    Rule.objects.create(
        name="noisy",
        conditions=[{"field": "jobs.total", "op": ">=", "value": 0}],
        action_type="ledger_alert",
        priority=1,
        cooldown_seconds=600,
    )
    run_cycle()
    run_cycle()
    assert Action.objects.filter(rule_name="noisy").count() == 1


def test_disabled_rules_are_ignored():
    Rule.objects.update(enabled=False)
    Job.objects.bulk_create(Job(kind="noop") for _ in range(60))
    assert run_cycle()["decision"]["actions"] == []


def test_a_crashing_cycle_is_recorded_as_cycle_error(monkeypatch):
    from orchestration.loop import cycle

    def broken(now):
        raise RuntimeError("snapshot exploded")

    monkeypatch.setattr(cycle, "build_snapshot", broken)
    with pytest.raises(RuntimeError):
        run_cycle()
    entry = LedgerEntry.objects.get(event_type="orchestrator.cycle_error")
    assert entry.severity == "error" and "snapshot exploded" in entry.message
    assert LoopState.get().lease_owner == ""  # the lease was released


# The cycle's own work besides the snapshot: claim the lease (UPDATE), read the loop
# state, read the rules, bulk-insert the ledger, write the state and release the lease
# (one UPDATE), and the savepoint pair of its transaction (inside the test's transaction);
# then the guardrails' three reads: approvals that expired, approved actions to run,
# actions whose effect is due to be checked.
CYCLE_OWN_QUERIES = 10


def test_query_count_of_a_cycle_is_constant():
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            run_cycle()
        return len(ctx.captured_queries)

    LoopState.get()
    small = count()
    Job.objects.bulk_create(Job(kind="noop", status=JobStatus.COMPLETED, score=50) for _ in range(2000))
    assert count() == small
    assert small <= monitor.query_budget() + CYCLE_OWN_QUERIES


class TestLease:
    def test_periodic_runners_wait_for_the_interval(self):
        state = LoopState.get()
        assert run_cycle(manual=False, owner="a") is not None
        assert run_cycle(manual=False, owner="b") is None  # not due yet
        LoopState.objects.filter(pk=state.pk).update(next_cycle_due_at=timezone.now() - timedelta(seconds=1))
        assert run_cycle(manual=False, owner="b") is not None

    def test_a_disabled_loop_runs_no_periodic_cycle_but_run_once_works(self):
        LoopState.objects.filter(pk=LoopState.get().pk).update(enabled=False)
        assert run_cycle(manual=False) is None
        assert run_cycle(manual=True)["cycle"] == 1

    def test_run_once_refuses_while_another_holds_the_lease(self):
        LoopState.get()
        assert LoopState.acquire_cycle_lease("other", 60, respect_interval=False)
        with pytest.raises(CycleBusy):
            run_cycle(manual=True, wait_seconds=0.2)

    def test_an_expired_lease_is_taken_over(self):
        LoopState.get()
        LoopState.objects.update(lease_owner="dead", lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert run_cycle(manual=True, wait_seconds=0)["cycle"] == 1


@pytest.mark.django_db(transaction=True)
def test_racing_runners_run_exactly_one_cycle():
    LoopState.get()
    barrier = threading.Barrier(4)
    results = []

    def runner(i):
        try:
            barrier.wait()
            results.append(run_cycle(manual=False, owner=f"runner-{i}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r is not None) == 1
    assert LoopState.get().cycle_count == 1
    assert LedgerEntry.objects.filter(event_type="orchestrator.cycle_idle").count() == 1
