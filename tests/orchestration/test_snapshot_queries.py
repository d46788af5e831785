"""Snapshot sections that read several tables or index ranges in one query: their
figures are the ones the separate aggregate() queries gave, and a production cycle
stays within its query target."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Avg, Count, Exists, Min, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from health.models import CircuitBreaker
from orchestration.core.choices import CLAIMABLE_STATUSES, AlertState, JobStatus
from orchestration.core.models import Anomaly, Job
from orchestration.fleet import tally
from orchestration.fleet.choices import FAILED_RUN_STATUSES, RunStatus
from orchestration.fleet.loop import workers_section
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.recovery import strategies
from orchestration.loop import monitor
from orchestration.loop.cycle import run_cycle
from orchestration.loop.models import LoopState
from orchestration.loop.monitor import aggregate_together, build_snapshot, jobs_section
from orchestration.routing.loop import routing_section
from orchestration.routing.models import Suggestion, TaskOutcome
from orchestration.routing.router import ROUTED_KIND

pytestmark = pytest.mark.django_db

# What a production cycle runs besides the snapshot (bench/cycle.py counts the same):
# claim the lease (a conditional UPDATE), read the loop state, read the rules, then
# in one transaction (BEGIN and COMMIT are counted too) bulk-insert the planned
# actions and the ledger entries and write the state, releasing the lease.
CYCLE_OWN_QUERIES = 8
CYCLE_QUERY_TARGET = 15

# The sections as they were written with one aggregate() per table or index range:
# the reference the one-query sections must agree with, key for key.


def reference_jobs(now: datetime) -> dict[str, Any]:
    # Live jobs whatever their age; finished ones within the window only.
    recent = Q(status__in=("pending", "retry", "processing")) | Q(
        finished_at__gte=now - timedelta(hours=settings.JOB_FINISHED_WINDOW_HOURS)
    )
    by_status = dict(
        Job.objects.order_by().filter(recent).values_list("status").annotate(n=Count("id")).values_list("status", "n")
    )
    live = (
        Job.objects.order_by()
        .filter(status__in=(*CLAIMABLE_STATUSES, JobStatus.PROCESSING))
        .aggregate(
            # Due from not_before, else created_at (written out, not through the model's helper).
            oldest_pending=Min(
                Coalesce("not_before", "created_at"),
                filter=Q(status=JobStatus.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lt=now)),
            ),
            stuck_pending=Count(
                "id",
                filter=Q(status=JobStatus.PENDING, forced=False)
                & (
                    Q(not_before__isnull=True, created_at__lt=now - timedelta(minutes=60))
                    | Q(not_before__lt=now - timedelta(minutes=60))
                ),
            ),
            very_old_pending=Count(
                "id",
                filter=Q(status=JobStatus.PENDING)
                & (
                    Q(not_before__isnull=True, created_at__lt=now - timedelta(minutes=120))
                    | Q(not_before__lt=now - timedelta(minutes=120))
                ),
            ),
            scheduled_pending=Count("id", filter=Q(status=JobStatus.PENDING, not_before__gte=now)),
            high_score=Count("id", filter=Q(status__in=CLAIMABLE_STATUSES, score__gt=80)),
            high_score_unpromoted=Count("id", filter=Q(status__in=CLAIMABLE_STATUSES, score__gt=80, promoted=False)),
            low_score=Count("id", filter=Q(status__in=CLAIMABLE_STATUSES, score__lt=40, downgraded=False)),
            avg_score=Avg("score", filter=Q(status__in=CLAIMABLE_STATUSES)),
            expired_leases=Count("id", filter=Q(status=JobStatus.PROCESSING, lease_expires_at__lt=now)),
        )
    )
    failed = (
        Job.objects.order_by()
        .filter(status=JobStatus.FAILED, finished_at__gte=now - timedelta(hours=1))
        .aggregate(
            failed_last_hour=Count("id"),
            retryable_failed=Count("id", filter=Q(auto_retries__lt=1, failed_permanently=False)),
        )
    )
    oldest = live.pop("oldest_pending")
    avg = live.pop("avg_score")
    section = {status: by_status.get(status, 0) for status in JobStatus.values}
    section.update(
        total=sum(by_status.values()),
        finished_window_hours=settings.JOB_FINISHED_WINDOW_HOURS,
        oldest_pending_minutes=round(max(0.0, (now - oldest).total_seconds()) / 60, 1) if oldest else 0,
        avg_score=round(avg, 1) if avg is not None else None,
        queue_saturated=section[JobStatus.PENDING] > 50,
        **live,
        **failed,
    )
    return section


def reference_workers(now: datetime) -> dict[str, Any]:
    is_open = CircuitBreaker.objects.filter(worker=OuterRef("pk"), state="open")
    workers = (
        Worker.objects.order_by()
        .annotate(circuit_open=Exists(is_open))
        .aggregate(
            total=Count("id"),
            enabled=Count("id", filter=Q(enabled=True)),
            locks_held=Count("id", filter=Q(lock_expires_at__gt=now)),
            lock_contention=Count("id", filter=Q(lock_failures__gte=3)),
            circuits_open=Count("id", filter=Q(circuit_open=True)),
        )
    )
    # The section reads the last hour to the minute, from per-minute counts kept as
    # runs end; the reference counts the runs table over that same span.
    hour = tally.hour_start(now)
    runs = (
        WorkerRun.objects.order_by()
        .filter(Q(status__in=(RunStatus.QUEUED, RunStatus.RUNNING)) | Q(completed_at__gte=hour))
        .aggregate(
            running=Count("id", filter=Q(status=RunStatus.RUNNING)),
            queued=Count("id", filter=Q(status=RunStatus.QUEUED)),
            dead_runs=Count(
                "id",
                filter=Q(
                    status=RunStatus.RUNNING,
                    heartbeat_at__lt=now - timedelta(seconds=settings.FLEET_CRASH_AFTER_SECONDS),
                ),
            ),
            runs_last_hour=Count("id", filter=Q(completed_at__gte=hour) & ~Q(status=RunStatus.SKIPPED)),
            failed_last_hour=Count("id", filter=Q(completed_at__gte=hour, status__in=FAILED_RUN_STATUSES)),
            skipped_last_hour=Count("id", filter=Q(completed_at__gte=hour, status=RunStatus.SKIPPED)),
        )
    )
    cooldown = now - timedelta(seconds=settings.FLEET_RECOVERY_COOLDOWN_SECONDS)
    anomalies = (
        Anomaly.objects.order_by()
        .filter(resolved_at__isnull=True)
        .aggregate(
            open_anomalies=Count("id"),
            critical_anomalies=Count("id", filter=Q(severity="critical")),
            high_anomalies=Count("id", filter=Q(severity="high")),
            recovery_due=Count(
                "id",
                filter=Q(code__in=list(strategies()), recovery_attempts__lt=settings.FLEET_MAX_RECOVERY_ATTEMPTS)
                & (Q(last_recovery_at__isnull=True) | Q(last_recovery_at__lte=cooldown)),
            ),
            alerts_due=Count("id", filter=Q(alert_state=AlertState.PENDING, alert_due_at__lte=now)),
        )
    )
    return {**workers, **runs, **anomalies}


def reference_routing(now: datetime) -> dict[str, Any]:
    in_flight = Job.objects.filter(
        kind=ROUTED_KIND, status__in=(JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.RETRY)
    ).count()
    hour = TaskOutcome.objects.filter(created_at__gte=now - timedelta(hours=1)).aggregate(
        n=Count("id"), ok=Count("id", filter=Q(success=True))
    )
    pending = Suggestion.objects.filter(status="pending").count()
    return {
        "in_flight": in_flight,
        "outcomes_last_hour": hour["n"],
        "success_rate_last_hour": round(hour["ok"] / hour["n"], 4) if hour["n"] else None,
        "pending_suggestions": pending,
    }


def _mixed_data(now: datetime) -> None:
    """Every filter of the three sections has rows on both sides of it."""
    rng = random.Random(7)
    statuses = list(JobStatus.values)
    Job.objects.bulk_create(
        Job(
            kind=rng.choice(["noop", ROUTED_KIND]),
            status=(status := rng.choice(statuses)),
            score=rng.choice([None, rng.uniform(0, 100)]),
            forced=rng.random() < 0.2,
            promoted=rng.random() < 0.3,
            downgraded=rng.random() < 0.3,
            auto_retries=rng.choice([0, 0, 1]),
            failed_permanently=rng.random() < 0.2,
            created_at=now - timedelta(minutes=rng.uniform(0, 300)),
            not_before=rng.choice([None, None, now + timedelta(minutes=rng.uniform(-200, 200))]),
            finished_at=now - timedelta(minutes=rng.uniform(0, 120)) if status in ("completed", "failed") else None,
            lease_expires_at=now + timedelta(minutes=rng.uniform(-10, 10)) if status == "processing" else None,
        )
        for _ in range(400)
    )
    fleet = Worker.objects.bulk_create(
        Worker(
            name=f"w{i}",
            category="collection",
            target={"type": "python", "path": "x.y"},
            enabled=i % 4 != 0,
            lock_expires_at=now + timedelta(seconds=30 * (1 if i % 3 else -1)),
            lock_failures=i % 5,
        )
        for i in range(12)
    )
    circuits = CircuitBreaker.objects.bulk_create(
        CircuitBreaker(name=f"worker:w{i}", state="open" if i % 2 else "closed") for i in range(0, 12, 3)
    )
    for worker, circuit in zip(fleet[::3], circuits, strict=True):
        Worker.objects.filter(pk=worker.pk).update(circuit=circuit)
    run_statuses = list(RunStatus.values)
    WorkerRun.objects.bulk_create(
        WorkerRun(
            worker=rng.choice(fleet),
            status=(status := rng.choice(run_statuses)),
            heartbeat_at=now - timedelta(seconds=rng.uniform(0, 600)) if status == "running" else None,
            completed_at=None if status in ("queued", "running") else now - timedelta(minutes=rng.uniform(0, 120)),
        )
        for _ in range(150)
    )
    tally.recount(now - timedelta(hours=3))  # rows written in bulk were not counted as they ended
    codes = [*strategies(), "UNKNOWN_CODE"]
    Anomaly.objects.bulk_create(
        Anomaly(
            code=rng.choice(codes),
            severity=rng.choice(["low", "medium", "high", "critical"]),
            subject=f"fleet-{i}",
            resolved_at=now if rng.random() < 0.2 else None,
            recovery_attempts=rng.choice([0, 1, 2, 5]),
            last_recovery_at=rng.choice([None, now - timedelta(hours=rng.uniform(0, 5))]),
            escalated_at=rng.choice([None, now]),
            alert_state=rng.choice(list(AlertState.values)),
            alert_due_at=now + timedelta(minutes=rng.uniform(-30, 30)),
        )
        for i in range(60)
    )
    TaskOutcome.objects.bulk_create(
        TaskOutcome(
            task_type="t",
            service_name="s",
            success=rng.random() < 0.7,
            created_at=now - timedelta(minutes=rng.uniform(0, 120)),
        )
        for _ in range(90)
    )
    Suggestion.objects.bulk_create(
        Suggestion(kind="k", subject=f"s{i}", title="t", status=rng.choice(["pending", "approved", "rejected"]))
        for i in range(20)
    )


@pytest.mark.parametrize(
    ("section", "reference"),
    [(jobs_section, reference_jobs), (workers_section, reference_workers), (routing_section, reference_routing)],
    ids=["jobs", "workers", "routing"],
)
def test_one_query_sections_agree_with_separate_aggregates(section, reference):
    now = timezone.now()
    assert section(now) == reference(now)  # empty tables: zeros and Nones
    _mixed_data(now)
    expected = reference(now)
    assert any(v for v in expected.values() if isinstance(v, int)), "the data should move the figures"
    with CaptureQueriesContext(connection) as ctx:
        got = section(now)
    assert got == expected
    assert list(got) == list(expected)  # same keys in the same order
    assert len(ctx.captured_queries) == 1


def test_aggregate_together_matches_aggregate_and_converts_types():
    now = timezone.now()
    Job.objects.create(kind="noop", score=10, created_at=now - timedelta(minutes=5))
    Job.objects.create(kind="noop", score=31, created_at=now - timedelta(minutes=9))
    Job.objects.create(kind="noop", status=JobStatus.FAILED)
    parts = [
        (
            Job.objects.filter(status=JobStatus.PENDING),
            {"n": Count("id"), "first": Min("created_at"), "avg": Avg("score")},
        ),
        (Job.objects.filter(status=JobStatus.FAILED), {"n": Count("*")}),
        (Job.objects.filter(status__in=[]), {"n": Count("id"), "first": Min("created_at")}),  # matches nothing
        (Suggestion.objects.all(), {"n": Count("id")}),
    ]
    with CaptureQueriesContext(connection) as ctx:
        together = aggregate_together(*parts)
    assert len(ctx.captured_queries) == 1
    assert together == [qs.aggregate(**aggs) for qs, aggs in parts]
    pending = together[0]
    assert pending["n"] == 2 and pending["avg"] == 20.5
    assert isinstance(pending["first"], datetime) and pending["first"].tzinfo is not None  # not a string
    assert pending["first"] == Job.objects.order_by("created_at").first().created_at
    assert together[2] == {"n": 0, "first": None}


def test_aggregate_together_refuses_what_would_need_a_subquery():
    with pytest.raises(ValueError):
        aggregate_together((Job.objects.annotate(x=Value(1)), {"n": Count("id")}))
    with pytest.raises(ValueError):
        aggregate_together((Job.objects.all()[:10], {"n": Count("id")}))
    with pytest.raises(ValueError):
        aggregate_together((Job.objects.values("status").annotate(n=Count("id")), {"m": Count("id")}))
    assert aggregate_together() == []


def test_the_snapshot_reads_all_aggregate_sections_in_one_query():
    now = timezone.now()
    _mixed_data(now)
    alone = {name: section(now) for name, section in monitor.sections().items()}
    with CaptureQueriesContext(connection) as ctx:
        snapshot = build_snapshot(now)
    # Each section gets its own parts' results back, in the sections' order.
    assert {name: snapshot[name] for name in alone} == alone
    assert list(snapshot) == ["taken_at", *alone, "system"]
    # One query for jobs, ledger, workers, routing and pipeline; scheduler and
    # campaigns read rows, services joins its open alerts; the score reads its deductions.
    assert len(ctx.captured_queries) == monitor.query_budget() == 5
    for name in ("jobs", "ledger", "workers", "routing", "pipeline"):
        assert monitor.query_budget(name) == 1


def test_the_declared_budgets_fit_the_cycle_target():
    assert monitor.query_budget() + CYCLE_OWN_QUERIES <= CYCLE_QUERY_TARGET


@pytest.mark.django_db(transaction=True)
def test_a_production_cycle_stays_within_the_query_target():
    # Outside a test transaction, as in production: no savepoints around the cycle.
    LoopState.get()
    _mixed_data(timezone.now())  # enough for rules to plan actions
    with CaptureQueriesContext(connection) as ctx:
        result = run_cycle(dry_run=True)
    assert result["decision"]["actions"]
    assert len(ctx.captured_queries) == monitor.query_budget() + CYCLE_OWN_QUERIES <= CYCLE_QUERY_TARGET
