"""People's intent against the loop's actions: a job is due from its not_before (else
its creation); no action runs a job before a not_before a client set or fails one not
yet due, and the loop undoes only its own deferrals.

Each action meets three jobs: one due long ago, one a client scheduled for later, and
one the loop itself postponed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestration.core.choices import DeferredBy, JobStatus
from orchestration.core.jobs import queue
from orchestration.core.models import Anomaly, Campaign, Job
from orchestration.fleet.recovery import pause_new_jobs
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionContext, execute
from orchestration.loop.monitor import build_snapshot

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]

HOUR = timedelta(hours=1)


def run(action_type: str, **params) -> dict:
    now = timezone.now()
    (result,) = execute(
        [PlannedAction(type=action_type, priority=5, reason="test", params=params)],
        ActionContext(build_snapshot(now), now, cycle=1),
    )
    assert result.ok, result.error
    return result.result


def trio(**fields) -> tuple[Job, Job, Job]:
    """Three jobs created three hours ago: due ever since, scheduled by their client for
    tomorrow, and postponed by the loop (the client had asked for an hour ago)."""
    now = timezone.now()
    created = now - 3 * HOUR
    due = Job.objects.create(kind="noop", created_at=created, **fields)
    scheduled = Job.objects.create(kind="noop", created_at=created, not_before=now + 24 * HOUR, **fields)
    postponed = Job.objects.create(kind="noop", created_at=created, not_before=now - HOUR, **fields)
    Job.objects.filter(pk=postponed.pk).defer_until(now + 5 * HOUR, by=DeferredBy.LOOP)
    return due, scheduled, postponed


def fresh(*jobs: Job) -> list[Job]:
    for j in jobs:
        j.refresh_from_db()
    return list(jobs)


def not_before_of(*jobs: Job) -> list:
    return [j.not_before for j in fresh(*jobs)]


# --- the snapshot -------------------------------------------------------------------------
def test_a_job_waits_from_when_it_is_due():
    now = timezone.now()
    Job.objects.create(kind="noop", created_at=now - 3 * HOUR, not_before=now + 24 * HOUR)
    Job.objects.create(kind="noop", created_at=now - 3 * HOUR, not_before=now - timedelta(minutes=10))
    jobs = build_snapshot(now)["jobs"]
    assert jobs["oldest_pending_minutes"] == 10.0
    assert (jobs["stuck_pending"], jobs["very_old_pending"], jobs["scheduled_pending"]) == (0, 0, 1)
    Job.objects.create(kind="noop", created_at=now - 3 * HOUR)
    jobs = build_snapshot(now)["jobs"]
    assert jobs["oldest_pending_minutes"] == 180.0
    assert (jobs["stuck_pending"], jobs["very_old_pending"]) == (1, 1)


def test_nothing_due_means_nobody_has_waited():
    now = timezone.now()
    Job.objects.create(kind="noop", created_at=now - 3 * HOUR, not_before=now + HOUR)
    assert build_snapshot(now)["jobs"]["oldest_pending_minutes"] == 0


def test_a_job_scheduled_for_tomorrow_costs_the_score_nothing():
    now = timezone.now()
    Job.objects.create(kind="noop", created_at=now - 3 * HOUR, not_before=now + 24 * HOUR)
    system = build_snapshot(now)["system"]
    assert system["health_score"] == 100 and system["deductions"] == []


# --- the actions --------------------------------------------------------------------------
def test_force_publish_raises_only_the_job_that_is_due():
    due, scheduled, postponed = trio(priority="low")
    before = not_before_of(scheduled, postponed)
    assert run("force_publish")["forced"] == 1
    due, scheduled, postponed = fresh(due, scheduled, postponed)
    assert due.forced and due.priority == "high"
    assert not scheduled.forced and not postponed.forced
    assert [scheduled.not_before, postponed.not_before] == before


def test_the_emergency_rebalance_fails_only_jobs_long_due():
    due, scheduled, postponed = trio()
    assert run("rebalance_queue", emergency=True)["failed"] == 1
    due, scheduled, postponed = fresh(due, scheduled, postponed)
    assert due.status == JobStatus.FAILED
    assert scheduled.status == postponed.status == JobStatus.PENDING


def test_rebalance_defers_low_priority_work_never_earlier_than_its_own_time():
    due, scheduled, postponed = trio(priority="low")
    tomorrow = scheduled.not_before
    run("rebalance_queue", defer_minutes=5)
    due, scheduled, postponed = fresh(due, scheduled, postponed)
    now = timezone.now()
    assert now + timedelta(minutes=4) < due.not_before <= now + timedelta(minutes=5)
    assert due.deferred_by == DeferredBy.LOOP and due.requested_not_before is None
    # The client's tomorrow stands; the loop's own later postponement too.
    assert scheduled.not_before == tomorrow and scheduled.deferred_by == DeferredBy.NOBODY
    assert postponed.not_before > now + 4 * HOUR


def test_promote_high_score_undoes_only_the_loops_deferral():
    due, scheduled, postponed = trio(score=95)
    tomorrow = scheduled.not_before
    assert run("promote_high_score")["promoted"] == 3
    due, scheduled, postponed = fresh(due, scheduled, postponed)
    assert {j.priority for j in (due, scheduled, postponed)} == {"critical"}
    assert scheduled.not_before == tomorrow
    # Back to what its client asked for (an hour ago): due now.
    assert postponed.not_before < timezone.now() and postponed.deferred_by == DeferredBy.NOBODY
    claimed = {pk for pk, _ in queue.claim(10, owner="test:1")}
    assert claimed == {due.pk, postponed.pk}


@pytest.mark.parametrize("target", ["high_score", "campaign"])
def test_schedule_job_undoes_only_the_loops_deferral(target):
    campaign = Campaign.objects.create(name="rich", budget=300)
    due, scheduled, postponed = trio(score=95, campaign=campaign, priority="low")
    tomorrow = scheduled.not_before
    result = run("schedule_job", target=target)
    assert result["scheduled"] == 3 and result["loop_deferrals_undone"] == 1
    due, scheduled, postponed = fresh(due, scheduled, postponed)
    assert {j.priority for j in (due, scheduled, postponed)} == {"high"}
    assert scheduled.not_before == tomorrow
    assert postponed.not_before < timezone.now()


def test_downgrade_postpones_but_never_brings_a_later_time_forward():
    now = timezone.now()
    due, scheduled, postponed = trio(score=10)
    in_three_days = now + 72 * HOUR
    Job.objects.filter(pk=scheduled.pk).update(not_before=in_three_days)
    result = run("downgrade_low_score")
    assert result["downgraded"] == 3 and result["postponed"] == 2
    due, scheduled, postponed = fresh(due, scheduled, postponed)
    assert due.not_before > now + 23 * HOUR and due.deferred_by == DeferredBy.LOOP
    assert scheduled.not_before == in_three_days and scheduled.deferred_by == DeferredBy.NOBODY
    # Postponed again, and still remembering what its client asked for.
    assert postponed.not_before > now + 23 * HOUR and postponed.requested_not_before < now
    assert all(j.downgraded and j.priority == "low" for j in (due, scheduled, postponed))


def test_a_promotion_after_a_downgrade_gives_the_client_its_own_time_back():
    now = timezone.now()
    asked = now + 2 * HOUR
    job = Job.objects.create(kind="noop", score=10, not_before=asked)
    run("downgrade_low_score")
    (job,) = fresh(job)
    assert job.not_before > now + 23 * HOUR and job.requested_not_before == asked
    Job.objects.filter(pk=job.pk).update(score=90)
    run("promote_high_score")
    (job,) = fresh(job)
    # Not "now": the time its client asked for.
    assert job.not_before == asked and job.deferred_by == DeferredBy.NOBODY


def test_reconciliation_leaves_waiting_jobs_alone():
    due, scheduled, postponed = trio()
    before = not_before_of(due, scheduled, postponed)
    run("trigger_reconciliation")
    assert not_before_of(due, scheduled, postponed) == before


def test_retry_failed_skips_permanent_failures():
    now = timezone.now()
    finished = {"status": JobStatus.FAILED, "finished_at": now - timedelta(minutes=5), "attempts": 1}
    transient = Job.objects.create(kind="noop", max_attempts=1, **finished)
    permanent = Job.objects.create(kind="noop", max_attempts=3, failed_permanently=True, **finished)
    jobs = build_snapshot(now)["jobs"]
    assert (jobs["failed_last_hour"], jobs["retryable_failed"]) == (2, 1)
    assert run("retry_failed")["retried"] == 1
    transient, permanent = fresh(transient, permanent)
    assert transient.status == JobStatus.RETRY
    assert permanent.status == JobStatus.FAILED and permanent.auto_retries == 0


def test_a_permanent_failure_is_marked_and_a_persons_retry_clears_the_mark():
    job = queue.enqueue("fail", {"permanent": True, "message": "422 from upstream"}, max_attempts=5)
    ((pk, token),) = queue.claim(1, owner="test:1")
    assert queue.execute(pk, token) == JobStatus.FAILED
    (job,) = fresh(job)
    assert job.failed_permanently and job.attempts == 1
    queue.retry(job, actor="ops")
    (job,) = fresh(job)
    assert job.status == JobStatus.RETRY and not job.failed_permanently


def test_a_transient_failure_is_not_marked_permanent():
    job = queue.enqueue("fail", {"message": "flaky"}, max_attempts=1)
    ((pk, token),) = queue.claim(1, owner="test:1")
    assert queue.execute(pk, token) == JobStatus.FAILED
    (job,) = fresh(job)
    assert not job.failed_permanently


def test_fleet_recovery_defers_low_work_without_moving_a_client_time_forward():
    due, scheduled, postponed = trio(priority="low")
    tomorrow = scheduled.not_before
    anomaly = Anomaly.objects.create(code="QUEUE_OVERFLOW", severity="high", subject="queue")
    pause_new_jobs(anomaly, timezone.now())
    due, scheduled, postponed = fresh(due, scheduled, postponed)
    assert due.deferred_by == DeferredBy.RECOVERY
    assert scheduled.not_before == tomorrow
    # The loop does not undo the recovery's deferral.
    Job.objects.filter(pk=due.pk).undo_deferral(by=DeferredBy.LOOP)
    (due,) = fresh(due)
    assert due.not_before > timezone.now()
