"""The executor and the seed's actions, each acting on real Job rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.models import Campaign, Job, LedgerEntry
from orchestration.loop import executor
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionContext, action_handler, execute
from orchestration.loop.monitor import build_snapshot

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


def run(action_type: str, **params):
    now = timezone.now()
    ctx = ActionContext(build_snapshot(now), now, cycle=1)
    (result,) = execute([PlannedAction(type=action_type, priority=5, reason="test", params=params)], ctx)
    assert result.ok, result.error
    return result.result


def job(**fields) -> Job:
    return Job.objects.create(kind="noop", **fields)


def claimable_now(job: Job) -> bool:
    """Due and waiting: the next claim by any node takes it (nodes pull; the loop
    makes jobs due and wakes them, it does not hand jobs out)."""
    from orchestration.core.jobs import queue

    job.refresh_from_db()
    due = job.status in (JobStatus.PENDING, JobStatus.RETRY) and (
        job.not_before is None or job.not_before <= timezone.now()
    )
    return due and job.pk in [pk for pk, _ in queue.claim(500, owner="test:1")]


def test_retry_failed_gives_recent_failures_one_more_attempt_once():
    now = timezone.now()
    recent = job(status=JobStatus.FAILED, finished_at=now - timedelta(minutes=5), attempts=3, max_attempts=3)
    old = job(status=JobStatus.FAILED, finished_at=now - timedelta(hours=2), attempts=3, max_attempts=3)
    assert run("retry_failed")["retried"] == 1
    recent.refresh_from_db()
    old.refresh_from_db()
    # Due at once, with one attempt left.
    assert recent.max_attempts == 4 and recent.auto_retries == 1 and claimable_now(recent)
    assert old.status == JobStatus.FAILED
    Job.objects.filter(pk=recent.pk).update(status=JobStatus.FAILED, finished_at=now)
    assert run("retry_failed")["retried"] == 0  # the loop retries a job only once


def test_rebalance_defers_low_priority_work():
    low = job(priority="low")
    high = job(priority="high")
    result = run("rebalance_queue")
    assert result["deferred_low_priority"] == 1
    low.refresh_from_db()
    high.refresh_from_db()
    assert low.not_before > timezone.now() + timedelta(minutes=4)
    assert claimable_now(high)


def test_emergency_rebalance_fails_jobs_pending_over_two_hours():
    now = timezone.now()
    ancient = job(created_at=now - timedelta(hours=3))
    recent = job(created_at=now - timedelta(minutes=90), not_before=now + timedelta(hours=1))
    result = run("rebalance_queue", emergency=True)
    assert result["failed"] == 1
    ancient.refresh_from_db()
    recent.refresh_from_db()
    assert ancient.status == JobStatus.FAILED and "emergency" in ancient.error
    assert recent.status == JobStatus.PENDING


def test_force_publish_runs_jobs_due_over_an_hour_first():
    now = timezone.now()
    stuck = job(created_at=now - timedelta(minutes=70), priority="low")
    fresh = job(created_at=now - timedelta(minutes=5))
    assert run("force_publish")["forced"] == 1
    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert stuck.forced and stuck.priority == "high" and claimable_now(stuck)
    assert not fresh.forced and fresh.priority == "normal"


def test_reconciliation_reclaims_and_repairs():
    now = timezone.now()
    dead = job(
        status=JobStatus.PROCESSING,
        lease_token="t",
        lease_expires_at=now - timedelta(minutes=1),
        started_at=now,
        attempts=1,
    )
    no_time = job(status=JobStatus.COMPLETED)
    stray = job(status=JobStatus.FAILED, finished_at=now, lease_expires_at=now)
    result = run("trigger_reconciliation")
    assert result["reclaimed"]["retried"] == 1
    assert result["repaired"]["finished_without_time"] == 1
    assert result["repaired"]["stray_leases"] == 1
    for obj in (dead, no_time, stray):
        obj.refresh_from_db()
    assert dead.status in (JobStatus.RETRY, JobStatus.PROCESSING)
    assert no_time.finished_at is not None and stray.lease_expires_at is None


def test_promote_high_score_moves_them_to_the_front_once():
    top = job(score=92)
    mid = job(score=60)
    assert run("promote_high_score")["promoted"] == 1
    top.refresh_from_db()
    mid.refresh_from_db()
    assert top.promoted and top.priority == "critical"
    assert not mid.promoted and mid.priority == "normal"
    assert run("promote_high_score")["promoted"] == 0


def test_downgrade_low_score_postpones_24_hours():
    poor = job(score=12)
    fine = job(score=70)
    result = run("downgrade_low_score")
    assert result["postponed"] == 1
    poor.refresh_from_db()
    fine.refresh_from_db()
    assert poor.not_before > timezone.now() + timedelta(hours=23) and poor.downgraded and poor.deferred_by == "loop"
    assert fine.not_before is None


def test_schedule_job_for_a_high_value_campaign():
    rich = Campaign.objects.create(name="rich", budget=300)
    poor = Campaign.objects.create(name="poor", budget=20)
    a = job(campaign=rich, priority="low")
    b = job(campaign=poor, priority="low")
    # Both pushed back by the loop: only the high-value campaign's deferral is undone.
    Job.objects.filter(pk__in=[a.pk, b.pk]).defer_until(timezone.now() + timedelta(hours=1), by="loop")
    result = run("schedule_job", target="campaign")
    assert result["scheduled"] == 1
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.priority == "high" and claimable_now(a)
    assert b.priority == "low" and b.status == JobStatus.PENDING


def test_ledger_alert_writes_an_entry():
    run("ledger_alert", severity="critical", message="all services down")
    entry = LedgerEntry.objects.get(event_type="orchestrator.alert")
    assert entry.severity == "critical" and entry.message == "all services down"


def test_one_failing_action_never_stops_the_others(monkeypatch):
    monkeypatch.setattr(executor, "_HANDLERS", dict(executor._HANDLERS))

    @action_handler("test.explode")
    def explode(action, ctx):
        raise RuntimeError("kaboom")

    job(score=95)
    now = timezone.now()
    results = execute(
        [
            PlannedAction(type="test.explode", priority=9, reason="x"),
            PlannedAction(type="no_such_action", priority=8, reason="x"),
            PlannedAction(type="promote_high_score", priority=7, reason="x"),
        ],
        ActionContext(build_snapshot(now), now, cycle=1),
    )
    assert [r.ok for r in results] == [False, False, True]
    assert "kaboom" in results[0].error and "no handler" in results[1].error
    assert results[2].result["promoted"] == 1
