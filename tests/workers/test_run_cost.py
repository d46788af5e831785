"""What one run costs the database: a bound on its statements, so that re-reads of
rows already in hand cannot creep back in unnoticed (bench/fleet_runs.py measures the
time)."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestration.core.models import LedgerEntry
from orchestration.fleet.models import ScoreReport, WorkerRun
from orchestration.fleet.runner import execute_run, request_run

# Queue: BEGIN, run INSERT, job INSERT, run's job UPDATE, COMMIT.
REQUEST_STATEMENTS = 5
# Read run + worker + breaker; take the lock; claim the run; close the run; the
# worker's lock, outcome and score in one UPDATE; the minute's tally; the breaker; the
# report; the ledger; the worker's last hour with what is open to resolve; downstream workers.
EXECUTE_STATEMENTS = 11


def test_a_no_op_run_stays_within_its_statement_budget_and_writes_everything(make_worker):
    worker = make_worker()
    execute_run(request_run(worker).pk)  # the breaker exists from the first run on
    with CaptureQueriesContext(connection) as requested:
        run = request_run(worker)
    with CaptureQueriesContext(connection) as executed:
        outcome = execute_run(run.pk)
    assert len(requested) <= REQUEST_STATEMENTS, [q["sql"] for q in requested]
    assert len(executed) <= EXECUTE_STATEMENTS, [q["sql"] for q in executed]
    # Nothing the leaner path skips reading is missing from what it wrote.
    assert outcome["status"] == "succeeded"
    run.refresh_from_db()
    assert run.status == "succeeded" and run.started_at and run.completed_at and run.owner
    worker.refresh_from_db()
    assert (worker.lock_owner, worker.lock_token, worker.lock_expires_at) == ("", "", None)
    assert worker.last_status == "succeeded" and worker.last_success_at == run.completed_at
    assert worker.last_score == ScoreReport.objects.get(run=run).overall_score
    assert worker.consecutive_failures == 0 and worker.circuit.consecutive_successes == 2
    assert LedgerEntry.objects.filter(event_type="worker.run_succeeded", data__run_id=run.pk).exists()


def test_a_failure_counts_the_streak_in_the_same_update_and_pauses_at_the_threshold(make_worker):
    worker = make_worker(target={"type": "python", "path": "tests.workers.targets.boom"}, pause_after_failures=2)
    for _ in range(2):
        execute_run(request_run(worker, trigger="schedule").pk)
    worker.refresh_from_db()
    assert worker.consecutive_failures == 2 and worker.paused and worker.last_status == "failed"
    assert worker.lock_owner == "" and WorkerRun.objects.filter(worker=worker, status="failed").count() == 2
    assert LedgerEntry.objects.filter(event_type="worker.paused", subject="worker:collector").count() == 1
