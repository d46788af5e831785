"""The orchestrator's own housekeeping, run as ordinary workers of the fleet so it is
scheduled, locked, scored and watched like everything else."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from orchestration.core.choices import Priority
from orchestration.core.jobs.kinds import import_callable
from orchestration.core.models import Anomaly
from orchestration.core.runnables import runnable
from orchestration.fleet.choices import ExecutionModel, ReportPeriod, RunStatus, WorkerCategory
from orchestration.loop import maintenance


@runnable
def cleanup_stale_runs() -> dict:
    """Crashed runs (no heartbeat) are detected and restarted; old runs, reports and
    resolved anomalies past the retention period are deleted in batches."""
    from orchestration.fleet.models import ScoreReport, WorkerRun
    from orchestration.fleet.runner import detect_crashed_runs

    crashed = detect_crashed_runs()
    cutoff = timezone.now() - timedelta(days=settings.FLEET_RUN_RETENTION_DAYS)
    deleted = {"runs": 0, "score_reports": 0, "anomalies": 0}
    finished = ~Q(status__in=(RunStatus.QUEUED, RunStatus.RUNNING))
    for key, qs in (
        ("score_reports", ScoreReport.objects.filter(created_at__lt=cutoff)),
        ("runs", WorkerRun.objects.filter(finished, queued_at__lt=cutoff)),
        ("anomalies", Anomaly.objects.filter(resolved_at__lt=cutoff)),
    ):
        while True:
            ids = list(qs.values_list("pk", flat=True)[:2000])
            if not ids:
                break
            deleted[key] += qs.model.objects.filter(pk__in=ids).delete()[1].get(qs.model._meta.label, 0)
    return {"crashed_runs": len(crashed), **{f"deleted_{k}": v for k, v in deleted.items()}}


@runnable
def prune_ledger() -> dict:
    result = maintenance.prune_ledger()
    return {
        "deleted_ledger": result["ledger"],
        "deleted_actions": result["actions"],
        "deleted_idempotency_keys": result["idempotency_keys"],
    }


@runnable
def prune_jobs() -> dict:
    result = maintenance.prune_jobs()
    return {"deleted_jobs": result["jobs"], "batches": result["batches"]}


@runnable
def score_rollup_hourly() -> dict:
    from orchestration.fleet.scores import rollup

    return rollup(ReportPeriod.HOURLY)


@runnable
def score_rollup_daily() -> dict:
    from orchestration.fleet.scores import rollup

    return rollup(ReportPeriod.DAILY)


def _call_path(path: str) -> dict:
    result = import_callable(path)()
    return result if isinstance(result, dict) else {"value": result}


@runnable
def health_sweep() -> dict:
    """The health app's sweep (``FLEET_HEALTH_SWEEP_PATH``), imported when it runs."""
    return _call_path(settings.FLEET_HEALTH_SWEEP_PATH)


@runnable
def prune_check_history() -> dict:
    """The health app's check-history retention (``FLEET_CHECK_RETENTION_PATH``)."""
    return _call_path(settings.FLEET_CHECK_RETENTION_PATH)


def _py(path: str) -> dict:
    return {"type": "python", "path": f"orchestration.fleet.builtins.{path}"}


M = WorkerCategory.MAINTENANCE
BUILTIN_WORKERS = [
    {
        "name": "ledger-retention",
        "description": "Delete ledger entries and actions past retention",
        "category": M,
        "cron": "17 * * * *",
        "timeout_seconds": 300,
        "expected_duration_seconds": 5,
        "target": _py("prune_ledger"),
    },
    {
        "name": "job-retention",
        "description": "Delete finished jobs past JOB_RETENTION_DAYS, keeping their counts in the rollups",
        "category": M,
        "cron": "37 * * * *",
        "timeout_seconds": 600,
        "expected_duration_seconds": 10,
        "target": _py("prune_jobs"),
    },
    {
        "name": "check-history-retention",
        "description": "Delete health-check history past retention",
        "category": M,
        "cron": "23 * * * *",
        "timeout_seconds": 300,
        "expected_duration_seconds": 5,
        "target": _py("prune_check_history"),
    },
    {
        "name": "stale-run-cleanup",
        "description": "Detect crashed runs; delete old runs, reports and anomalies",
        "category": M,
        "interval_seconds": 60,
        "timeout_seconds": 120,
        "expected_duration_seconds": 1,
        "target": _py("cleanup_stale_runs"),
        "priority": Priority.HIGH,
    },
    {
        "name": "score-rollup-hourly",
        "description": "Hourly averages of every worker's run scores",
        "category": M,
        "cron": "2 * * * *",
        "timeout_seconds": 300,
        "expected_duration_seconds": 2,
        "target": _py("score_rollup_hourly"),
    },
    {
        "name": "score-rollup-daily",
        "description": "Daily averages of every worker's run scores",
        "category": M,
        "cron": "10 0 * * *",
        "timeout_seconds": 600,
        "expected_duration_seconds": 5,
        "target": _py("score_rollup_daily"),
    },
    {
        "name": "health-sweep",
        "description": "Check every due service (health app)",
        "category": M,
        "interval_seconds": 60,
        "timeout_seconds": 60,
        "expected_duration_seconds": 5,
        "target": _py("health_sweep"),
        "priority": Priority.HIGH,
    },
]


def ensure_builtin_workers(**kwargs) -> int:
    """Create the built-in workers that are missing (people's later edits are kept)."""
    from orchestration.fleet.models import Worker

    created = 0
    for spec in BUILTIN_WORKERS:
        defaults = {"execution_model": ExecutionModel.SCHEDULED, **spec, "builtin": True}
        defaults.pop("name")
        _, new = Worker.objects.get_or_create(name=spec["name"], defaults=defaults)
        created += int(new)
    return created
