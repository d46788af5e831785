"""The snapshot: what it detects, and that its query count does not grow with data."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.models import Campaign, Job, LedgerEntry
from orchestration.core.models.ledger import record
from orchestration.loop import monitor
from orchestration.loop.models import ChannelWindow
from orchestration.loop.monitor import build_snapshot

pytestmark = pytest.mark.django_db


def job(**fields) -> Job:
    return Job.objects.create(kind="noop", **fields)


def test_it_handles_an_empty_database():
    snap = build_snapshot()
    assert snap["jobs"]["pending"] == 0 and snap["jobs"]["total"] == 0
    assert snap["jobs"]["oldest_pending_minutes"] == 0 and snap["jobs"]["avg_score"] is None
    assert snap["system"] == {
        "health_score": 100,
        "status": "healthy",
        "deductions": [],
        "queue_health_score": 100,
        "queue_status": "healthy",
    }
    for section in ("jobs", "workers", "services", "pipeline", "ledger", "scheduler", "campaigns", "system"):
        assert section in snap


def test_it_detects_pending_jobs_and_their_age():
    now = timezone.now()
    job(created_at=now - timedelta(minutes=45))
    job()
    job(status=JobStatus.PROCESSING, lease_expires_at=now + timedelta(seconds=30))
    jobs = build_snapshot(now)["jobs"]
    assert jobs["pending"] == 2 and jobs["processing"] == 1
    assert jobs["oldest_pending_minutes"] == 45.0
    assert jobs["expired_leases"] == 0


def test_it_detects_recent_failures_only():
    now = timezone.now()
    job(status=JobStatus.FAILED, finished_at=now - timedelta(minutes=10))
    job(status=JobStatus.FAILED, finished_at=now - timedelta(minutes=10), auto_retries=1)
    job(status=JobStatus.FAILED, finished_at=now - timedelta(hours=3))
    jobs = build_snapshot(now)["jobs"]
    assert jobs["failed"] == 3
    assert jobs["failed_last_hour"] == 2
    assert jobs["retryable_failed"] == 1  # one was already retried by the loop


def test_it_detects_high_and_low_scores():
    for score in (95, 85, 81, 80, 30, 20):
        job(score=score)
    job(score=99, status=JobStatus.COMPLETED)  # done: not waiting any more
    jobs = build_snapshot()["jobs"]
    assert jobs["high_score"] == 3  # strictly above 80
    assert jobs["low_score"] == 2
    assert jobs["avg_score"] == round((95 + 85 + 81 + 80 + 30 + 20) / 6, 1)


def test_it_detects_ledger_errors_of_the_last_hour():
    record("x.failed", "boom", severity="error")
    record("x.failed", "boom", severity="critical")
    record("x.note", "fine")
    old = record("x.failed", "old", severity="error")
    LedgerEntry.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    snap = build_snapshot()
    assert snap["ledger"]["errors_last_hour"] == 2
    assert snap["system"]["health_score"] == 90


def test_it_reports_running_campaigns_with_budgets():
    now = timezone.now()
    big = Campaign.objects.create(name="big", budget=500, channel="youtube")
    Campaign.objects.create(name="small", budget=50)
    Campaign.objects.create(name="over", budget=900, ends_at=now - timedelta(days=1))
    job(campaign=big)
    campaigns = build_snapshot(now)["campaigns"]
    assert campaigns["active"] == 2
    assert campaigns["total_budget"] == 550.0
    assert campaigns["high_value_active"] == 1


def test_it_reports_channel_windows():
    # Seeded windows: instagram 18–23, tiktok 16–24, youtube 17–22 (UTC); off in tests.
    ChannelWindow.objects.update(enabled=True)
    with time_machine.travel(timezone.now().replace(hour=21, minute=30, second=0, microsecond=0), tick=False):
        scheduler = build_snapshot()["scheduler"]
    assert scheduler["active_channels"] == ["instagram", "tiktok", "youtube"]
    assert scheduler["closing_soon"] == 1  # youtube closes at 22:00
    assert scheduler["windows"]["youtube"]["closes_in_minutes"] == 30


def _section_queries() -> dict[str, int]:
    now = timezone.now()
    counts = {}
    for name, section in monitor.sections().items():
        with CaptureQueriesContext(connection) as ctx:
            section(now)
        counts[name] = len(ctx.captured_queries)
    return counts


def test_query_count_does_not_grow_with_the_data():
    small = _section_queries()
    now = timezone.now()
    statuses = [JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.RETRY, JobStatus.PROCESSING]
    Job.objects.bulk_create(
        Job(kind="noop", status=statuses[i % 5], score=i % 100, finished_at=now, created_at=now) for i in range(3000)
    )
    LedgerEntry.objects.bulk_create(LedgerEntry(event_type="x", severity="error") for _ in range(2000))
    campaign = Campaign.objects.create(name="c", budget=200)
    Job.objects.filter(pk__in=Job.objects.values("pk")[:500]).update(campaign=campaign)
    assert _section_queries() == small
    for name, n in small.items():
        assert n <= monitor.query_budget(name), f"section {name} ran {n} queries, budget {monitor.query_budget(name)}"
    with CaptureQueriesContext(connection) as ctx:
        build_snapshot()
    # The aggregate sections share one query in the snapshot.
    assert len(ctx.captured_queries) == monitor.query_budget() < sum(small.values())
