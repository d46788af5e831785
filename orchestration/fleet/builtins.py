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
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.fleet.scores import rollup
from orchestration.loop import maintenance


@runnable
def cleanup_stale_runs() -> dict:
    """Old runs, reports and resolved anomalies past the retention period are deleted in
    batches. (Crashed runs are the fleet sweep's: it looks every FLEET_SWEEP_SECONDS.)"""

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
    return {f"deleted_{k}": v for k, v in deleted.items()}


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

    return rollup(ReportPeriod.HOURLY)


@runnable
def score_rollup_daily() -> dict:

    return rollup(ReportPeriod.DAILY)


def _call_path(path: str) -> dict:
    result = import_callable(path)()
    return result if isinstance(result, dict) else {"value": result}


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
        "description": "Delete old runs, reports and anomalies",
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
]


# Built-ins whose work has another single trigger now: the health sweep runs from the
# loop runner's tick, where each service's own interval (down to a second) can be kept.
RETIRED_BUILTINS = ("health-sweep",)


def ensure_builtin_workers(**kwargs) -> int:
    """Create the built-in workers that are missing (people's later edits are kept) and
    delete retired ones (their schedules go with them)."""

    for worker in Worker.objects.filter(builtin=True, name__in=RETIRED_BUILTINS):
        worker.delete()  # one by one: post_delete removes each worker's schedule
    created = 0
    for spec in BUILTIN_WORKERS:
        defaults = {"execution_model": ExecutionModel.SCHEDULED, **spec, "builtin": True}
        defaults.pop("name")
        _, new = Worker.objects.get_or_create(name=spec["name"], defaults=defaults)
        created += int(new)
    return created
