"""Worker runs: targets, scores, gates, dependencies, timeouts, locks and crashes."""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from orchestration.core.models import Anomaly, Job, LedgerEntry
from orchestration.fleet import runner
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.fleet.runner import acquire_lock, detect_crashed_runs, execute_run, request_run
from tests.workers.conftest import target


def run_once(worker: Worker, **kwargs) -> WorkerRun:
    run = request_run(worker, **kwargs)
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def test_it_runs_a_python_target_and_records_run_score_and_ledger(make_worker):
    worker = make_worker(target=target("ok", items_total=10, items_failed=0, quota_remaining_pct=50))
    run = request_run(worker, actor="ops")
    job = Job.objects.get(pk=run.job_id)
    assert (job.kind, job.lane, job.max_attempts, job.payload["run_id"]) == ("worker.run", "workers", 1, run.pk)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded" and run.success is True and run.duration_ms >= 0
    assert run.metrics["items_total"] == 10
    report = ScoreReport.objects.get(run=run)
    assert report.overall_score == 100 and report.execution_id == run.execution_id
    worker.refresh_from_db()
    assert worker.last_status == "succeeded" and worker.last_score == 100 and worker.lock_owner == ""
    assert LedgerEntry.objects.filter(event_type="worker.run_succeeded", subject="worker:collector").exists()
    assert LedgerEntry.objects.filter(event_type="worker.triggered", actor="ops").exists()
    # A second delivery of the same task does nothing.
    assert execute_run(run.pk) == {"status": "stale"}


def test_it_runs_an_http_target_against_a_real_server(make_worker, httpserver, settings):
    settings.FLEET_BASE_URL = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/internal/collect", method="POST", json={"full": True}).respond_with_json(
        {"metrics": {"items_total": 4, "cache_misses": 1}}, status=202
    )
    worker = make_worker(
        target={
            "type": "http",
            "method": "POST",
            "url": "{base_url}/internal/collect",
            "body": {"full": True},
            "expected_status": 202,
        }
    )
    run = run_once(worker)
    assert run.status == "succeeded", run.error
    assert run.metrics == {"status_code": 202, "items_total": 4, "cache_misses": 1}
    assert Anomaly.objects.filter(code="CACHE_MISS", subject="worker:collector", resolved_at__isnull=True).exists()


def test_an_unexpected_http_status_fails_the_run(make_worker, httpserver):
    httpserver.expect_request("/x").respond_with_data("nope", status=500)
    run = run_once(make_worker(target={"type": "http", "method": "GET", "url": httpserver.url_for("/x")}))
    assert run.status == "failed" and "answered 500" in run.error
    assert ScoreReport.objects.get(run=run).reliability_score == 0


def test_a_failing_target_fails_the_run_and_opens_high_failure_rate(make_worker):
    worker = make_worker(target=target("boom"))
    run = run_once(worker)
    assert run.status == "failed" and "target exploded" in run.error
    assert not Anomaly.objects.filter(code="HIGH_FAILURE_RATE").exists()  # one run is not a rate yet
    run_once(worker)
    run_once(worker)
    anomaly = Anomaly.objects.get(code="HIGH_FAILURE_RATE")
    assert anomaly.severity == "high" and anomaly.alert_state == "pending"
    assert anomaly.alert_due_at == anomaly.detected_at + timedelta(minutes=5)


def test_the_timeout_is_enforced(make_worker):
    worker = make_worker(timeout_seconds=1, expected_duration_seconds=None, target=target("sleep", seconds=5))
    started = timezone.now()
    run = run_once(worker)
    assert run.status == "timed_out" and "timed out after 1 s" in run.error
    assert (timezone.now() - started).total_seconds() < 3
    assert ScoreReport.objects.get(run=run).performance_score == 0
    worker.refresh_from_db()
    assert worker.lock_owner == "" and worker.last_status == "timed_out"


def test_a_run_past_80_percent_of_its_timeout_warns(make_worker):
    run = run_once(make_worker(timeout_seconds=1, expected_duration_seconds=None, target=target("sleep", seconds=0.85)))
    assert run.status == "succeeded"
    assert Anomaly.objects.filter(code="TIMEOUT_WARNING", severity="medium").exists()
    quick = run_once(Worker.objects.get(name="collector"), trigger="manual")
    assert quick.status == "succeeded"  # still 0.85 s: the warning stays open
    Worker.objects.filter(name="collector").update(target=target("ok"))
    run_once(Worker.objects.get(name="collector"))
    assert Anomaly.objects.get(code="TIMEOUT_WARNING").resolved_at is not None


def test_sigterm_lets_a_run_finish_within_the_grace_period(make_worker, settings):
    settings.FLEET_SHUTDOWN_GRACE_SECONDS = 2
    received = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    try:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        run = run_once(make_worker(target=target("sleep", seconds=0.6)))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert run.status == "succeeded"
    assert received == [signal.SIGTERM]  # passed on once the run was done


def test_sigterm_past_the_grace_period_interrupts_and_requeues_the_run(make_worker, settings):
    settings.FLEET_SHUTDOWN_GRACE_SECONDS = 0.3
    received = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: received.append(s))
    try:
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        run = run_once(make_worker(target=target("sleep", seconds=5)))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert run.status == "interrupted" and run.success is None
    rerun = WorkerRun.objects.exclude(pk=run.pk).get()
    assert rerun.trigger == "rerun" and rerun.status == "queued" and rerun.job_id
    assert received == [signal.SIGTERM]
    assert not ScoreReport.objects.filter(run=run).exists()


# --- gates ------------------------------------------------------------------------------
def test_a_disabled_worker_is_skipped_and_cannot_be_triggered(make_worker):
    worker = make_worker()
    run = request_run(worker)
    Worker.objects.filter(pk=worker.pk).update(enabled=False)
    assert execute_run(run.pk)["reason"] == "disabled"
    worker.refresh_from_db()
    with pytest.raises(runner.WorkerStateError, match="disabled"):
        runner.trigger(worker, actor="ops")


def test_dependency_chain_youtube_then_creator_intel_then_aggregation(make_worker):
    youtube = make_worker("youtube", freshness_seconds=3600)
    intel = make_worker(
        "creator-intel",
        category="intelligence",
        depends_on=["youtube"],
        run_after_upstream=True,
        freshness_seconds=14400,
        cron="0 */4 * * *",
        interval_seconds=None,
    )
    aggregation = make_worker(
        "aggregation",
        category="aggregation",
        depends_on=["creator-intel"],
        run_after_upstream=True,
        cron="5 * * * *",
        interval_seconds=None,
    )

    # Nothing fresh upstream: creator intel is skipped and youtube gets a forced refresh.
    skipped = run_once(intel, trigger="schedule")
    assert (skipped.status, skipped.skipped_reason) == ("skipped", "upstream_stale")
    stale = Anomaly.objects.get(code="STALE_DATA", subject="worker:youtube")
    refresh = WorkerRun.objects.get(worker=youtube, trigger="refresh")
    assert stale.recovery[0]["strategy"] == "refresh_upstream" and stale.recovery[0]["result"]["run_id"] == refresh.pk

    # youtube succeeds → creator intel is queued (after upstream) → it succeeds → aggregation queued.
    execute_run(refresh.pk)
    stale.refresh_from_db()
    assert stale.resolved_at is not None
    intel_run = WorkerRun.objects.get(worker=intel, trigger="upstream")
    # While creator intel runs, aggregation is held back (upstream running).
    WorkerRun.objects.filter(pk=intel_run.pk).update(status="running")
    held = run_once(aggregation, trigger="schedule")
    assert held.skipped_reason == "upstream_running"
    assert Anomaly.objects.filter(code="SKIP_DUE_TO_LOCK", subject="worker:aggregation", severity="low").exists()
    WorkerRun.objects.filter(pk=intel_run.pk).update(status="queued")
    execute_run(intel_run.pk)
    intel_run.refresh_from_db()
    assert intel_run.status == "succeeded"
    agg_run = WorkerRun.objects.get(worker=aggregation, trigger="upstream")
    execute_run(agg_run.pk)
    agg_run.refresh_from_db()
    assert agg_run.status == "succeeded"
    assert not Anomaly.objects.filter(code="SKIP_DUE_TO_LOCK", resolved_at__isnull=True).exists()

    # A second upstream-triggered run finds its data already fresh.
    again = run_once(aggregation, trigger="upstream")
    assert again.skipped_reason == "already_fresh"
    assert Anomaly.objects.filter(code="SKIP_DUE_TO_FRESHNESS", subject="worker:aggregation").exists()


def test_a_failed_required_upstream_blocks_and_an_optional_one_does_not(make_worker):
    make_worker("source", target=target("boom"))
    run_once(Worker.objects.get(name="source"))
    blocked = run_once(make_worker("needs-source", depends_on=["source"]))
    assert blocked.skipped_reason == "upstream_failed"
    anomaly = Anomaly.objects.get(code="DEPENDENCY_FAILURE", subject="worker:needs-source")
    assert anomaly.severity == "critical" and anomaly.recovery[0]["strategy"] == "retry_with_backoff"
    retry = WorkerRun.objects.get(pk=anomaly.recovery[0]["result"]["retry_run_id"])
    assert retry.job.not_before > timezone.now()
    tolerant = run_once(make_worker("tolerant", optional_depends_on=["source"]))
    assert tolerant.status == "succeeded"


def test_a_held_lock_skips_the_run_and_three_failures_are_contention(make_worker):
    worker = make_worker()
    assert acquire_lock(worker, "other-node:run")
    for _ in range(3):
        assert run_once(worker).skipped_reason == "lock_held"
    worker.refresh_from_db()
    assert worker.lock_failures == 3
    contention = Anomaly.objects.get(code="LOCK_CONTENTION", subject="worker:collector")
    assert contention.recovery[0]["strategy"] == "lengthen_lock_timeout"
    worker.refresh_from_db()
    assert worker.lock_timeout_seconds == int((30 + 60) * 1.5)
    # An expired lock is taken over; the counter resets and contention resolves.
    Worker.objects.filter(pk=worker.pk).update(lock_expires_at=timezone.now() - timedelta(seconds=1))
    assert run_once(worker).status == "succeeded"
    contention.refresh_from_db()
    assert contention.resolved_at is not None


@pytest.mark.django_db(transaction=True)
def test_two_processes_racing_for_the_lock_only_one_wins(make_worker):
    worker = make_worker()
    barrier = threading.Barrier(4)
    wins = []

    def claim(n: int) -> None:
        try:
            barrier.wait()
            if acquire_lock(worker, f"node-{n}"):
                wins.append(n)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worker.refresh_from_db()
    assert len(wins) == 1 and worker.lock_owner == f"node-{wins[0]}" and worker.lock_failures == 3


# --- crashes ---------------------------------------------------------------------------
def test_a_run_without_heartbeat_is_a_crash_and_the_worker_is_restarted(make_worker, settings):
    settings.FLEET_CRASH_AFTER_SECONDS = 30
    worker = make_worker()
    run = request_run(worker)
    owner = "dead-node:1"
    assert acquire_lock(worker, owner)
    WorkerRun.objects.filter(pk=run.pk).update(
        status="running", owner=owner, started_at=timezone.now(), heartbeat_at=timezone.now() - timedelta(seconds=31)
    )
    fresh = request_run(make_worker("alive"))
    WorkerRun.objects.filter(pk=fresh.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(seconds=29))

    assert detect_crashed_runs() == [run.pk]
    run.refresh_from_db()
    worker.refresh_from_db()
    assert run.status == "crashed" and worker.lock_owner == "" and worker.last_status == "crashed"
    crash = Anomaly.objects.get(code="WORKER_CRASH", subject="worker:collector")
    assert crash.severity == "critical" and crash.alert_state == "sent"  # critical: alerted at once (ledger)
    restart = WorkerRun.objects.get(pk=crash.recovery[0]["result"]["run_id"])
    assert restart.trigger == "recovery"
    assert LedgerEntry.objects.filter(event_type="worker.alert", subject="worker:collector").exists()
    # The restarted run succeeds: the crash anomaly resolves.
    execute_run(restart.pk)
    crash.refresh_from_db()
    assert crash.resolved_at is not None


def test_a_run_whose_job_failed_is_marked_crashed(make_worker):
    from orchestration.core.jobs.queue import job_finished

    run = request_run(make_worker())
    WorkerRun.objects.filter(pk=run.pk).update(status="running")
    Job.objects.filter(pk=run.job_id).update(status="failed", error="lease expired: the process stopped answering")
    job_finished.send(sender=Job, job=Job.objects.get(pk=run.job_id))
    run.refresh_from_db()
    assert run.status == "crashed" and "lease expired" in run.error
