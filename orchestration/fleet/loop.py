"""The fleet in the control loop: the snapshot's ``workers`` section, the actions its
default rules call, and the runner's periodic sweep."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from health.choices import BreakerState
from orchestration.core.alerts import deliver_due
from orchestration.core.choices import AlertState
from orchestration.core.models import Anomaly
from orchestration.fleet import tally
from orchestration.fleet.choices import RunStatus
from orchestration.fleet.detection import sweep
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.recovery import retry_open, run_approved, strategies, verify_recoveries
from orchestration.fleet.runner import promote_stragglers, request_run
from orchestration.loop.decider import PlannedAction
from orchestration.loop.executor import ActionContext, action_handler
from orchestration.loop.models import Action
from orchestration.loop.monitor import Aggregation, aggregate_section


def _workers_parts(now: datetime) -> list[Aggregation]:
    """The fleet, its active runs, the last hour's ended runs and its open anomalies:
    four parts of one query whatever the size of the fleet and its history.

    Active runs are read through the (status, heartbeat) index; the last hour's
    figures come from the per-minute tally (at most 61 rows), counted as runs end, so
    the runs table is never counted: the last hour is read to the minute (from the
    start of the minute an hour ago)."""

    counts = {
        "total": Count("id"),
        "enabled": Count("id", filter=Q(enabled=True)),
        "locks_held": Count("id", filter=Q(lock_expires_at__gt=now)),
        "lock_contention": Count("id", filter=Q(lock_failures__gte=3)),
        "circuits_open": Count("id", filter=Q(circuit__state=BreakerState.OPEN)),
    }
    cooldown = now - timedelta(seconds=settings.FLEET_RECOVERY_COOLDOWN_SECONDS)
    return [
        (Worker.objects.all(), counts),
        (
            WorkerRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)),
            {
                "running": Count("id", filter=Q(status=RunStatus.RUNNING)),
                "queued": Count("id", filter=Q(status=RunStatus.QUEUED)),
                "dead_runs": Count(
                    "id",
                    filter=Q(
                        status=RunStatus.RUNNING,
                        heartbeat_at__lt=now - timedelta(seconds=settings.FLEET_CRASH_AFTER_SECONDS),
                    ),
                ),
            },
        ),
        tally.last_hour_part(now),
        (
            Anomaly.objects.filter(resolved_at__isnull=True),
            {
                "open_anomalies": Count("id"),
                "critical_anomalies": Count("id", filter=Q(severity="critical")),
                "high_anomalies": Count("id", filter=Q(severity="high")),
                "recovery_due": Count(
                    "id",
                    filter=Q(code__in=list(strategies()), recovery_attempts__lt=settings.FLEET_MAX_RECOVERY_ATTEMPTS)
                    & (Q(last_recovery_at__isnull=True) | Q(last_recovery_at__lte=cooldown)),
                ),
                "alerts_due": Count("id", filter=Q(alert_state=AlertState.PENDING, alert_due_at__lte=now)),
            },
        ),
    ]


@aggregate_section("workers", _workers_parts)
def workers_section(now: datetime, results: list[dict[str, Any]]) -> dict[str, Any]:
    workers, runs, last_hour, anomalies = results
    workers.setdefault("circuits_open", 0)
    return {**workers, **runs, **last_hour, **anomalies}


@action_handler("sweep_workers")
def sweep_workers(action: PlannedAction, ctx: ActionContext) -> dict:
    """Sweep the fleet: crashed runs, failure rates, staleness, queue and resources."""

    return sweep(ctx.now)


@action_handler("recover_workers")
def recover_workers(action: PlannedAction, ctx: ActionContext) -> dict:
    """Run the recovery strategy of open anomalies that are due another attempt."""
    from orchestration.fleet.recovery import run_approved, verify_recoveries

    approved = run_approved(ctx.now)
    return {
        "action_ids": retry_open(ctx.now, cycle=ctx.cycle),
        "approved_run": approved,
        "verified": verify_recoveries(ctx.now),
    }


@action_handler("deliver_worker_alerts")
def deliver_worker_alerts(action: PlannedAction, ctx: ActionContext) -> dict:
    """Send the alerts of anomalies whose alert time has come."""

    return {"sent": deliver_due(ctx.now)}


@action_handler("probe_open_circuits")
def probe_open_circuits(action: PlannedAction, ctx: ActionContext) -> dict:
    """Queue one probe run for each worker whose breaker is open; the breaker lets it
    through once its open timeout has passed (half-open) and closes on success."""

    busy = WorkerRun.objects.filter(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)).values("worker_id")
    queued = []
    for worker in Worker.objects.filter(circuit__state=BreakerState.OPEN, enabled=True).exclude(pk__in=busy):
        queued.append(request_run(worker, trigger="recovery").pk)
    return {"probes": queued}


class _SweepTick:
    """Runner tick hook: a fleet sweep every FLEET_SWEEP_SECONDS per runner process.
    The sweep itself is idempotent, so several runners sweeping is harmless."""

    def __init__(self) -> None:
        self.last = 0.0
        self.__name__ = "fleet_sweep"

    def __call__(self) -> object:
        if time.monotonic() - self.last < settings.FLEET_SWEEP_SECONDS:
            return None
        self.last = time.monotonic()
        now = timezone.now()
        # Approvals that timed out, approved recoveries and their later checks run here
        # too: no rule has to fire, and a switched-off loop leaves no request waiting forever.
        return {
            **sweep(now),
            "buffered_started": promote_stragglers(),
            "expired": Action.expire_due(now),
            "approved_run": run_approved(now),
            "verified": verify_recoveries(now),
        }


fleet_sweep_tick = _SweepTick()
