"""Score reports: one per executed run, plus hourly and daily rollups per worker."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Avg, Count
from django.utils import timezone

from orchestration.fleet import scoring
from orchestration.fleet.choices import ReportPeriod, RunStatus
from orchestration.fleet.models import ScoreReport, WorkerRun

SCORE_KEYS = ("reliability_score", "performance_score", "data_quality_score", "resource_score", "overall_score")


def report_for_run(run: WorkerRun, *, memory_percent: float | None = None, save: bool = True) -> ScoreReport:
    """The run's report card; with ``save=False`` the caller inserts it (a finishing
    run writes the score into the worker's row first)."""
    worker = run.worker
    outcome = scoring.RunOutcome(
        category=worker.category,
        success=run.status == RunStatus.SUCCEEDED,
        duration_s=(run.duration_ms or 0) / 1000.0,
        expected_duration_s=worker.expected_duration_seconds,
        timeout_s=run.timeout_seconds or worker.timeout_seconds,
        timed_out=run.status == RunStatus.TIMED_OUT,
        metrics=run.metrics or {},
        memory_percent=memory_percent,
    )
    result = scoring.score(outcome)
    metrics = dict(run.metrics or {})
    if memory_percent is not None:
        metrics.setdefault("memory_percent", memory_percent)
    fields = {
        "worker": worker,
        "period": ReportPeriod.RUN,
        "execution_id": run.execution_id,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "success": outcome.success,
        "duration_ms": run.duration_ms,
        **result.as_dict(),
        "recommendations": result.recommendations,
        "metrics": metrics,
    }
    if not save:
        return ScoreReport(run=run, **fields)
    report, _ = ScoreReport.objects.update_or_create(run=run, defaults=fields)
    return report


def _period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The last complete hour or day before ``now`` (UTC)."""
    if period == ReportPeriod.HOURLY:
        end = now.replace(minute=0, second=0, microsecond=0)
        return end - timedelta(hours=1), end
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return end - timedelta(days=1), end


def rollup(period: str, now: datetime | None = None) -> dict[str, int]:
    """Average each worker's run reports over the last complete hour/day into one
    report per worker; running it twice for the same period updates, never duplicates."""
    start, end = _period_bounds(period, now or timezone.now())
    rows = (
        ScoreReport.objects.filter(period=ReportPeriod.RUN, created_at__gte=start, created_at__lt=end)
        .order_by()
        .values("worker_id")
        .annotate(
            runs=Count("id"),
            reliability_score=Avg("reliability_score"),
            performance_score=Avg("performance_score"),
            data_quality_score=Avg("data_quality_score"),
            resource_score=Avg("resource_score"),
            overall_score=Avg("overall_score"),
            duration_ms=Avg("duration_ms"),
        )
    )
    written = 0
    for row in rows:
        ScoreReport.objects.update_or_create(
            worker_id=row["worker_id"],
            period=period,
            period_start=start,
            defaults={
                "runs": row["runs"],
                "started_at": start,
                "completed_at": end,
                "duration_ms": row["duration_ms"],
                **{k: round(row[k] or 0.0, 1) for k in SCORE_KEYS},
                "metrics": {"period_end": end.isoformat()},
            },
        )
        written += 1
    return {"period_start": start.isoformat(), "workers": written}
