"""The seed's seven actions, plus a generic alert. Each acts on Job rows for real."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import F, Q

from orchestration.core.choices import CLAIMABLE_STATUSES, PRIORITY_RANK, JobStatus, Priority, Severity
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.core.models.ledger import record
from orchestration.loop import monitor
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionContext, action_handler

BATCH = 500


def _ids(qs, limit: int = BATCH) -> list[int]:
    return list(qs.values_list("pk", flat=True)[:limit])


@action_handler("retry_failed")
def retry_failed(action: PlannedAction, ctx: ActionContext) -> dict:
    """Give jobs that failed in the last hour one more attempt (once per job)."""
    ids = _ids(
        Job.objects.filter(
            status=JobStatus.FAILED,
            finished_at__gte=ctx.now - timedelta(hours=1),
            auto_retries__lt=monitor.MAX_AUTO_RETRIES,
        ).order_by("-priority_rank", "finished_at")
    )
    changed = Job.objects.filter(pk__in=ids, status=JobStatus.FAILED).update(
        status=JobStatus.RETRY,
        not_before=ctx.now,
        finished_at=None,
        max_attempts=F("attempts") + 1,
        auto_retries=F("auto_retries") + 1,
    )
    queue.wake()
    return {"retried": changed, "job_ids": ids[:50]}


@action_handler("rebalance_queue")
def rebalance_queue(action: PlannedAction, ctx: ActionContext) -> dict:
    """Relieve a saturated queue: push low-priority work back so urgent jobs go first;
    in emergency mode, fail jobs that have been pending for more than two hours."""
    if action.params.get("emergency"):
        cutoff = ctx.now - timedelta(minutes=monitor.EMERGENCY_PENDING_MINUTES)
        ids = _ids(Job.objects.filter(status=JobStatus.PENDING, created_at__lt=cutoff).order_by("created_at"))
        failed = Job.objects.filter(pk__in=ids, status=JobStatus.PENDING).update(
            status=JobStatus.FAILED,
            finished_at=ctx.now,
            error="failed by emergency rebalance: pending for more than 2 hours while the system was critical",
        )
        return {"mode": "emergency", "failed": failed, "job_ids": ids[:50]}
    deferral = timedelta(minutes=int(action.params.get("defer_minutes", 5)))
    ids = _ids(
        Job.objects.filter(status__in=CLAIMABLE_STATUSES, priority=Priority.LOW)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=ctx.now + deferral))
        .order_by("created_at")
    )
    deferred = Job.objects.filter(pk__in=ids).update(not_before=ctx.now + deferral)
    queue.wake()
    return {"mode": "normal", "deferred_low_priority": deferred}


@action_handler("force_publish")
def force_publish(action: PlannedAction, ctx: ActionContext) -> dict:
    """Run jobs stuck pending for over an hour now: clear their delay, raise them to high."""
    cutoff = ctx.now - timedelta(minutes=monitor.STUCK_PENDING_MINUTES)
    ids = _ids(Job.objects.filter(status=JobStatus.PENDING, forced=False, created_at__lt=cutoff).order_by("created_at"))
    rank = PRIORITY_RANK[Priority.HIGH]
    Job.objects.filter(pk__in=ids, priority_rank__lt=rank).update(priority=Priority.HIGH, priority_rank=rank)
    forced = Job.objects.filter(pk__in=ids).update(forced=True, not_before=None)
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
    """Move high-score jobs (> 80) whose channel window is open to the front."""
    channels = ctx.snapshot.get("scheduler", {}).get("active_channels", [])
    qs = Job.objects.filter(status__in=CLAIMABLE_STATUSES, score__gt=monitor.HIGH_SCORE, promoted=False)
    if channels:
        qs = qs.filter(Q(channel__in=channels) | Q(channel=""))
    ids = _ids(qs.order_by("-score"))
    rank = PRIORITY_RANK[Priority.CRITICAL]
    Job.objects.filter(pk__in=ids).update(
        priority=Priority.CRITICAL, priority_rank=rank, promoted=True, not_before=None
    )
    queue.wake()
    return {"promoted": len(ids), "channels": channels, "job_ids": ids[:50]}


@action_handler("downgrade_low_score")
def downgrade_low_score(action: PlannedAction, ctx: ActionContext) -> dict:
    """Postpone low-score jobs (< 40) by 24 hours."""
    hours = int(action.params.get("postpone_hours", 24))
    ids = _ids(
        Job.objects.filter(status__in=CLAIMABLE_STATUSES, score__lt=monitor.LOW_SCORE, downgraded=False).order_by(
            "score"
        )
    )
    postponed = Job.objects.filter(pk__in=ids).update(
        downgraded=True,
        not_before=ctx.now + timedelta(hours=hours),
        priority=Priority.LOW,
        priority_rank=PRIORITY_RANK[Priority.LOW],
    )
    return {"postponed": postponed, "until": (ctx.now + timedelta(hours=hours)).isoformat(), "job_ids": ids[:50]}


@action_handler("schedule_job")
def schedule_job(action: PlannedAction, ctx: ActionContext) -> dict:
    """Schedule the jobs this rule is about now, at high priority.

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
    Job.objects.filter(pk__in=ids, not_before__gt=ctx.now).update(not_before=None)
    queue.wake()
    return {"target": target, "scheduled": len(ids), "raised": raised}


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
