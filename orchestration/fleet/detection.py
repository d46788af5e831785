"""Anomaly detection against the database: facts in, open/resolved anomaly rows out.

The rules themselves are pure (``anomaly_rules``). Here they are fed facts about a
finished run, a worker's last hour, or the whole fleet; what fires opens an anomaly
(one open per code and subject, enforced by a partial unique index), what is clear
resolves it. A new anomaly gets its recovery at once and, when critical, its alert.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from orchestration.core import alerts
from orchestration.core import anomaly_rules as rules
from orchestration.core.anomalies import apply, open_anomaly, react
from orchestration.core.choices import CLAIMABLE_STATUSES
from orchestration.core.models import Anomaly, Job
from orchestration.fleet import statements, tally
from orchestration.fleet.choices import FAILED_RUN_STATUSES, RunStatus
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import detect_crashed_runs

log = logging.getLogger("orchestration.fleet")

FLEET_SUBJECT = "fleet"


def subject_of(worker: Worker | str) -> str:
    return f"worker:{worker if isinstance(worker, str) else worker.name}"


# --- facts ------------------------------------------------------------------------
def run_facts(run: WorkerRun) -> rules.RunFacts:
    worker = run.worker
    return rules.RunFacts(
        status=run.status,
        duration_s=(run.duration_ms or 0) / 1000.0,
        expected_duration_s=worker.expected_duration_seconds,
        timeout_s=run.timeout_seconds or worker.timeout_seconds,
        metrics=run.metrics or {},
        skipped_reason=run.skipped_reason,
        skipped_detail=run.skipped_detail or {},
    )


def hour_counts(worker_id: int, since: datetime) -> tuple[int, int]:
    """(runs, failures) of one worker that ended since ``since``; skipped and
    interrupted runs are not runs here. Written as SQL: it runs after every run, and
    building it through the ORM cost more than the query itself."""
    table = connection.ops.quote_name(WorkerRun._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(SUM(CASE WHEN status NOT IN (%s, %s) THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(CASE WHEN status IN (%s, %s, %s) THEN 1 ELSE 0 END), 0) "
            f"FROM {table} WHERE worker_id = %s AND completed_at >= %s",
            [
                RunStatus.SKIPPED.value,
                RunStatus.INTERRUPTED.value,
                *(str(s) for s in FAILED_RUN_STATUSES),
                worker_id,
                connection.ops.adapt_datetimefield_value(since),
            ],
        )
        runs, failures = cursor.fetchone()
    return int(runs), int(failures)


def worker_facts(
    worker: Worker, now: datetime, runs: int | None = None, failures: int | None = None
) -> rules.WorkerFacts:
    if runs is None or failures is None:
        runs, failures = hour_counts(worker.pk, now - timedelta(hours=1))
    return rules.WorkerFacts(
        runs_last_hour=runs,
        failures_last_hour=failures,
        lock_failures=worker.lock_failures,
        enabled=worker.enabled,
        last_success_age_s=(now - worker.last_success_at).total_seconds() if worker.last_success_at else None,
        freshness_s=worker.freshness_seconds,
        has_cadence=bool(worker.interval_seconds or worker.cron),
    )


def fleet_facts(now: datetime) -> rules.FleetFacts:
    jobs = Job.objects.order_by().aggregate(
        depth=Count("id", filter=Q(status__in=CLAIMABLE_STATUSES)),
        last_hour=Count("id", filter=Q(created_at__gte=now - timedelta(hours=1))),
        retried=Count("id", filter=Q(created_at__gte=now - timedelta(hours=1), attempts__gt=1)),
    )
    try:
        disk = psutil.disk_usage(str(settings.RUNS_DIR.parent if not settings.RUNS_DIR.exists() else settings.RUNS_DIR))
        disk_percent = disk.percent
    except OSError:
        disk_percent = None
    return rules.FleetFacts(
        queue_depth=jobs["depth"],
        jobs_last_hour=jobs["last_hour"],
        retried_jobs_last_hour=jobs["retried"],
        memory_percent=psutil.virtual_memory().percent,
        disk_percent=disk_percent,
    )


# Every code a run's or a worker's evaluation can clear: what after_run reads as open.
_CLEARABLE = sorted({r.code for r in rules.RULES if r.scope in ("run", "worker")} | {r.code for r in rules.RUN_EXTRA})


# --- entry points -----------------------------------------------------------------
def after_run(run: WorkerRun, now: datetime | None = None, *, current: bool = False) -> list[Anomaly]:
    """Evaluate a finished or skipped run, and its worker's last hour.

    ``current``: the run's worker is as the runner just wrote it, so it is not read
    again."""
    now = now or timezone.now()
    worker = run.worker
    if not current:
        worker.refresh_from_db()
    subject = subject_of(worker)
    run_eval = rules.evaluate("run", run_facts(run))
    opened: list[Anomaly] = []
    # A skip because an upstream is stale is the upstream's anomaly: its recovery
    # refreshes the upstream.
    if run.skipped_reason == "upstream_stale":
        for name in (run.skipped_detail or {}).get("upstreams", []):
            upstream = Worker.objects.filter(name=name).first()
            anomaly, created = open_anomaly(
                "STALE_DATA", subject_of(name), {"needed_by": worker.name}, worker=upstream, now=now
            )
            if created:
                opened.append(anomaly)
    # The worker's last hour and what is open about it, in one statement.
    runs, failures, open_now = statements.hour_and_open(worker.pk, now - timedelta(hours=1), subject, _CLEARABLE)
    worker_eval = rules.evaluate("worker", worker_facts(worker, now, runs, failures))
    # Both evaluations at once: one look-up of what is open to resolve, not two.
    fired = {**run_eval.fired, **worker_eval.fired}
    cleared = (run_eval.cleared | worker_eval.cleared) - set(fired)
    evaluation = rules.Evaluation(fired=fired, cleared=cleared)
    opened += apply(evaluation, subject, worker=worker, run=run, now=now, open_now=open_now & cleared)
    react(opened)
    return opened


def sweep(now: datetime | None = None) -> dict[str, Any]:
    """One pass over the fleet: crashed runs, each worker's last hour, the fleet."""

    now = now or timezone.now()
    crashed = detect_crashed_runs(now)
    opened: list[Anomaly] = []
    opened += apply(rules.evaluate("fleet", fleet_facts(now)), FLEET_SUBJECT, now=now)
    hour = now - timedelta(hours=1)
    workers = list(
        Worker.objects.annotate(
            runs_hour=Count(
                "runs",
                filter=Q(runs__completed_at__gte=hour)
                & ~Q(runs__status__in=(RunStatus.SKIPPED, RunStatus.INTERRUPTED)),
            ),
            failures_hour=Count("runs", filter=Q(runs__completed_at__gte=hour, runs__status__in=FAILED_RUN_STATUSES)),
        )
    )
    for worker in workers:
        facts = worker_facts(worker, now, worker.runs_hour, worker.failures_hour)
        opened += apply(rules.evaluate("worker", facts), subject_of(worker), worker=worker, now=now)
    react(opened)
    sent = alerts.deliver_due(now)
    tally.prune(now)
    return {"crashed": crashed, "opened": [f"{a.code}:{a.subject}" for a in opened], "alerts_sent": sent}
