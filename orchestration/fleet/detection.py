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
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from orchestration.choices import CLAIMABLE_STATUSES, Severity
from orchestration.models import Anomaly, Job, Worker, WorkerRun
from orchestration.models.ledger import record
from orchestration.workers import anomaly_rules as rules
from orchestration.workers.choices import FAILED_RUN_STATUSES, AlertState, RunStatus

log = logging.getLogger("orchestration.workers")

LEDGER_SEVERITY = {
    "critical": Severity.CRITICAL,
    "high": Severity.ERROR,
    "medium": Severity.WARNING,
    "low": Severity.INFO,
}
FLEET_SUBJECT = "fleet"


def subject_of(worker: Worker | str) -> str:
    return f"worker:{worker if isinstance(worker, str) else worker.name}"


# --- open / resolve ---------------------------------------------------------------
def open_anomaly(
    code: str,
    subject: str,
    details: dict[str, Any],
    *,
    worker: Worker | None = None,
    run: WorkerRun | None = None,
    now: datetime | None = None,
) -> tuple[Anomaly, bool]:
    """Open (or refresh) the anomaly ``code`` about ``subject``; True when new."""
    now = now or timezone.now()
    rule = rules.BY_CODE[code]
    current = Anomaly.objects.filter(code=code, subject=subject, resolved_at__isnull=True).first()
    if current is None:
        delay = rules.alert_delay(rule.severity)
        try:
            with transaction.atomic():
                current = Anomaly.objects.create(
                    code=code,
                    severity=rule.severity,
                    subject=subject,
                    worker=worker,
                    run=run,
                    details=details,
                    detected_at=now,
                    last_seen_at=now,
                    alert_state=AlertState.LOG_ONLY if delay is None else AlertState.PENDING,
                    alert_due_at=None if delay is None else now + timedelta(seconds=delay),
                )
        except IntegrityError:
            current = Anomaly.objects.filter(code=code, subject=subject, resolved_at__isnull=True).first()
        else:
            record(
                "worker.anomaly_detected",
                f"{code} on {subject}: {rule.description}",
                severity=LEDGER_SEVERITY[rule.severity],
                subject=subject,
                data={"anomaly_id": current.pk, "code": code, "severity": rule.severity, "details": details},
            )
            return current, True
    if current is not None:
        Anomaly.objects.filter(pk=current.pk).update(
            last_seen_at=now, occurrences=F("occurrences") + 1, details=details, run=run or current.run
        )
        current.refresh_from_db()
    return current, False


def resolve(code: str, subject: str, now: datetime | None = None) -> int:
    now = now or timezone.now()
    ids = list(
        Anomaly.objects.filter(code=code, subject=subject, resolved_at__isnull=True).values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Anomaly.objects.filter(pk__in=ids, alert_state=AlertState.PENDING).update(alert_state=AlertState.SUPPRESSED)
    done = Anomaly.objects.filter(pk__in=ids, resolved_at__isnull=True).update(resolved_at=now)
    if done:
        record(
            "worker.anomaly_resolved",
            f"{code} on {subject} resolved: the condition cleared",
            subject=subject,
            data={"anomaly_ids": ids, "code": code},
        )
    return done


def apply(
    evaluation: rules.Evaluation,
    subject: str,
    *,
    worker: Worker | None = None,
    run: WorkerRun | None = None,
    now: datetime | None = None,
) -> list[Anomaly]:
    """Open what fired, resolve what cleared; returns the anomalies opened now."""
    opened = []
    for code, details in evaluation.fired.items():
        anomaly, created = open_anomaly(code, subject, details, worker=worker, run=run, now=now)
        if created:
            opened.append(anomaly)
    for code in evaluation.cleared:
        resolve(code, subject, now)
    return opened


def react(opened: list[Anomaly]) -> None:
    """Recover new anomalies at once and send the alerts that are due (critical)."""
    from orchestration.workers import alerts, recovery

    for anomaly in opened:
        try:
            recovery.recover(anomaly)
        except Exception:  # recorded as a failed Action inside recover(); never stop detection
            log.exception("recovery of anomaly %s failed", anomaly.pk)
    if opened:
        alerts.deliver_due()


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


def worker_facts(
    worker: Worker, now: datetime, runs: int | None = None, failures: int | None = None
) -> rules.WorkerFacts:
    if runs is None or failures is None:
        counts = WorkerRun.objects.filter(worker=worker, completed_at__gte=now - timedelta(hours=1)).aggregate(
            runs=Count("id", filter=~Q(status=RunStatus.SKIPPED) & ~Q(status=RunStatus.INTERRUPTED)),
            failures=Count("id", filter=Q(status__in=FAILED_RUN_STATUSES)),
        )
        runs, failures = counts["runs"], counts["failures"]
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


# --- entry points -----------------------------------------------------------------
def after_run(run: WorkerRun, now: datetime | None = None) -> list[Anomaly]:
    """Evaluate a finished or skipped run, and its worker's last hour."""
    now = now or timezone.now()
    worker = run.worker
    worker.refresh_from_db()
    subject = subject_of(worker)
    opened = apply(rules.evaluate("run", run_facts(run)), subject, worker=worker, run=run, now=now)
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
    worker_eval = rules.evaluate("worker", worker_facts(worker, now))
    opened += apply(worker_eval, subject, worker=worker, run=run, now=now)
    react(opened)
    return opened


def sweep(now: datetime | None = None) -> dict[str, Any]:
    """One pass over the fleet: crashed runs, each worker's last hour, the fleet."""
    from orchestration.workers import alerts
    from orchestration.workers.runner import detect_crashed_runs

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
    return {"crashed": crashed, "opened": [f"{a.code}:{a.subject}" for a in opened], "alerts_sent": sent}
