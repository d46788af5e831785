"""The seed's seven actions, plus a generic alert. Each acts on Job rows for real.

People's intent comes first: a job is due from its ``not_before`` (else its creation),
no action here runs a job before a ``not_before`` a client or a person set, none fails
a job that is not due yet, and the loop undoes only the deferrals it made itself
(``Job.deferred_by``).
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import F, Q

from orchestration.core.choices import CLAIMABLE_STATUSES, PRIORITY_RANK, DeferredBy, JobStatus, Priority, Severity
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.core.models.jobs import due_before
from orchestration.core.models.ledger import record
from orchestration.loop import monitor
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionContext, action_handler

BATCH = 500


def _ids(qs, limit: int = BATCH) -> list[int]:
    return list(qs.values_list("pk", flat=True)[:limit])


@action_handler("retry_failed")
def retry_failed(action: PlannedAction, ctx: ActionContext) -> dict:
    """Give jobs that failed in the last hour one more attempt (once per job); a
    permanent failure (retrying cannot fix it, e.g. a 4xx) is left to a person."""
    ids = _ids(
        Job.objects.filter(
            status=JobStatus.FAILED,
            finished_at__gte=ctx.now - timedelta(hours=1),
            auto_retries__lt=monitor.MAX_AUTO_RETRIES,
            failed_permanently=False,
        ).order_by("-priority_rank", "finished_at")
    )
    changed = Job.objects.filter(pk__in=ids, status=JobStatus.FAILED, failed_permanently=False).update(
        status=JobStatus.RETRY,
        not_before=ctx.now,
        finished_at=None,
        max_attempts=F("attempts") + 1,
        auto_retries=F("auto_retries") + 1,
        deferred_by=DeferredBy.NOBODY,
        requested_not_before=None,
    )
    queue.wake()
    return {"retried": changed, "job_ids": ids[:50]}


# The emergency mode fails jobs: a person approves it unless they made its rule automatic.
@action_handler("rebalance_queue", risky=lambda params: bool(params.get("emergency")))
def rebalance_queue(action: PlannedAction, ctx: ActionContext) -> dict:
    """Relieve a saturated queue: push low-priority work back so urgent jobs go first;
    in emergency mode, fail jobs that have been due for more than two hours (a job
    scheduled for later is never failed: it has not waited at all)."""
    if action.params.get("emergency"):
        cutoff = ctx.now - timedelta(minutes=monitor.EMERGENCY_PENDING_MINUTES)
        overdue = Q(status=JobStatus.PENDING) & due_before(cutoff)
        ids = _ids(Job.objects.filter(overdue).order_by("created_at"))
        # The same test in the UPDATE: a job rescheduled meanwhile is not failed.
        failed = Job.objects.filter(overdue, pk__in=ids).update(
            status=JobStatus.FAILED,
            finished_at=ctx.now,
            error="failed by emergency rebalance: due for more than 2 hours while the queue was critical",
        )
        return {"mode": "emergency", "failed": failed, "job_ids": ids[:50]}
    until = ctx.now + timedelta(minutes=int(action.params.get("defer_minutes", 5)))
    ids = _ids(
        Job.objects.filter(status__in=CLAIMABLE_STATUSES, priority=Priority.LOW)
        .filter(Q(not_before__isnull=True) | Q(not_before__lt=until))
        .order_by("created_at")
    )
    deferred = Job.objects.filter(pk__in=ids).defer_until(until, by=DeferredBy.LOOP)
    queue.wake()
    return {"mode": "normal", "deferred_low_priority": deferred, "until": until.isoformat()}


@action_handler("force_publish")
def force_publish(action: PlannedAction, ctx: ActionContext) -> dict:
    """Run jobs that have been due for over an hour first: raise them to high. A job is
    due from its not_before, so one scheduled for later, or postponed, is not stuck."""
    cutoff = ctx.now - timedelta(minutes=monitor.STUCK_PENDING_MINUTES)
    stuck = Q(status=JobStatus.PENDING, forced=False) & due_before(cutoff)
    ids = _ids(Job.objects.filter(stuck).order_by("created_at"))
    rank = PRIORITY_RANK[Priority.HIGH]
    Job.objects.filter(stuck, pk__in=ids, priority_rank__lt=rank).update(priority=Priority.HIGH, priority_rank=rank)
    forced = Job.objects.filter(stuck, pk__in=ids).update(forced=True)
    queue.wake()
    return {"forced": forced, "job_ids": ids[:50]}


@action_handler("trigger_reconciliation")
def trigger_reconciliation(action: PlannedAction, ctx: ActionContext) -> dict:
    """Reclaim expired leases and repair rows whose fields contradict their status."""
    reclaimed = queue.reclaim_expired(ctx.now)
    repaired = {
        # A finished job must have a finish time.
        "finished_without_time": Job.objects.filter(
            status__in=(JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED), finished_at__isnull=True
        ).update(finished_at=ctx.now),
        # Only processing jobs hold a lease.
        "stray_leases": Job.objects.exclude(status=JobStatus.PROCESSING)
        .exclude(lease_expires_at__isnull=True)
        .update(lease_expires_at=None, lease_owner=""),
        # A processing job without a lease can never be reclaimed: give it one that
        # has already expired so the next pass requeues it.
        "processing_without_lease": Job.objects.filter(
            status=JobStatus.PROCESSING, lease_expires_at__isnull=True
        ).update(lease_expires_at=ctx.now - timedelta(seconds=1)),
    }
    return {"reclaimed": reclaimed, "repaired": repaired}


@action_handler("promote_high_score")
def promote_high_score(action: PlannedAction, ctx: ActionContext) -> dict:
    """Move high-score jobs (> 80) whose channel window is open to the front. A
    deferral the loop made is undone; a not_before a client set stands."""
    channels = ctx.snapshot.get("scheduler", {}).get("active_channels", [])
    qs = Job.objects.filter(status__in=CLAIMABLE_STATUSES, score__gt=monitor.HIGH_SCORE, promoted=False)
    if channels:
        qs = qs.filter(Q(channel__in=channels) | Q(channel=""))
    ids = _ids(qs.order_by("-score"))
    rank = PRIORITY_RANK[Priority.CRITICAL]
    Job.objects.filter(pk__in=ids).update(priority=Priority.CRITICAL, priority_rank=rank, promoted=True)
    undone = Job.objects.filter(pk__in=ids).undo_deferral(by=DeferredBy.LOOP)
    queue.wake()
    return {"promoted": len(ids), "loop_deferrals_undone": undone, "channels": channels, "job_ids": ids[:50]}


@action_handler("downgrade_low_score")
def downgrade_low_score(action: PlannedAction, ctx: ActionContext) -> dict:
    """Postpone low-score jobs (< 40) by 24 hours; one a client scheduled even later
    keeps its own time."""
    hours = int(action.params.get("postpone_hours", 24))
    until = ctx.now + timedelta(hours=hours)
    ids = _ids(
        Job.objects.filter(status__in=CLAIMABLE_STATUSES, score__lt=monitor.LOW_SCORE, downgraded=False).order_by(
            "score"
        )
    )
    postponed = Job.objects.filter(pk__in=ids).defer_until(until, by=DeferredBy.LOOP)
    Job.objects.filter(pk__in=ids).update(
        downgraded=True, priority=Priority.LOW, priority_rank=PRIORITY_RANK[Priority.LOW]
    )
    return {"downgraded": len(ids), "postponed": postponed, "until": until.isoformat(), "job_ids": ids[:50]}


@action_handler("schedule_job")
def schedule_job(action: PlannedAction, ctx: ActionContext) -> dict:
    """Raise the jobs this rule is about to high priority, and undo the loop's own
    deferrals of them (never a not_before a client set).

    params.target: "high_score" (score > 80), "campaign" (jobs of running campaigns
    with budget > 100), or "window_closing" (jobs of channels whose window closes
    within the hour).
    """
    target = action.params.get("target", "high_score")
    base = Job.objects.filter(status__in=CLAIMABLE_STATUSES)
    if target == "campaign":
        running = Q(campaign__active=True) & (Q(campaign__ends_at__isnull=True) | Q(campaign__ends_at__gt=ctx.now))
        qs = base.filter(running, campaign__budget__gt=monitor.HIGH_VALUE_BUDGET)
    elif target == "window_closing":
        windows = ctx.snapshot.get("scheduler", {}).get("windows", {})
        closing = [channel for channel, w in windows.items() if w.get("closing_soon")]
        qs = base.filter(channel__in=closing)
    elif target == "high_score":
        qs = base.filter(score__gt=monitor.HIGH_SCORE)
    else:
        raise ValueError(f"unknown schedule_job target {target!r}")
    ids = _ids(qs.order_by("-priority_rank", "created_at"))
    rank = PRIORITY_RANK[Priority.HIGH]
    raised = Job.objects.filter(pk__in=ids, priority_rank__lt=rank).update(priority=Priority.HIGH, priority_rank=rank)
    # Only the loop's own deferrals are undone: a job a client scheduled for later
    # keeps its time, at its new priority.
    undone = Job.objects.filter(pk__in=ids).undo_deferral(by=DeferredBy.LOOP)
    queue.wake()
    return {"target": target, "scheduled": len(ids), "raised": raised, "loop_deferrals_undone": undone}


@action_handler("ledger_alert")
def ledger_alert(action: PlannedAction, ctx: ActionContext) -> dict:
    """Write an alert to the ledger (params: severity, message, event_type)."""
    severity = action.params.get("severity", Severity.WARNING)
    if severity not in Severity.values:
        raise ValueError(f"unknown severity {severity!r}")
    entry = record(
        action.params.get("event_type", "orchestrator.alert"),
        action.params.get("message") or action.reason,
        severity=severity,
        subject=action.target or action.rule,
        data={"trigger": action.trigger, "rule": action.rule},
        actor=ctx.actor,
    )
    return {"ledger_entry": entry.pk}
