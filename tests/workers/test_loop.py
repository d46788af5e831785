"""The fleet in the control loop: the workers snapshot section (constant queries),
the default rules and their actions, rollups, built-ins and the demo."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestration.core.models import Anomaly
from orchestration.fleet import builtins, scores, tally
from orchestration.fleet.loop import workers_section
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.fleet.runner import execute_run, request_run
from orchestration.loop.cycle import run_cycle
from orchestration.loop.models import Action, Rule


def _bulk_history(workers: int, runs_each: int) -> None:
    now = timezone.now()
    fleet = Worker.objects.bulk_create(
        [Worker(name=f"w{i}", category="collection", target={"type": "python", "path": "x.y"}) for i in range(workers)]
    )
    WorkerRun.objects.bulk_create(
        [
            WorkerRun(
                worker=w,
                execution_id=f"{w.pk:08d}{n:024d}",
                status="failed" if n % 7 == 0 else "succeeded",
                completed_at=now - timedelta(minutes=n % 90),
            )
            for w in fleet
            for n in range(runs_each)
        ]
    )
    tally.recount(now - timedelta(hours=2))  # runs written in bulk were not counted as they ended
    Anomaly.objects.bulk_create(
        [Anomaly(code="CACHE_MISS", severity="medium", subject=f"worker:{w.name}") for w in fleet]
    )


def test_the_workers_section_uses_a_constant_number_of_queries(db):
    _bulk_history(3, 5)
    with CaptureQueriesContext(connection) as small:
        workers_section(timezone.now())
    Worker.objects.all().delete()
    Anomaly.objects.all().delete()
    _bulk_history(60, 50)
    with CaptureQueriesContext(connection) as large:
        section = workers_section(timezone.now())
    assert len(large) == len(small) == 1
    assert section["open_anomalies"] == 60 and section["runs_last_hour"] > 0 and section["failed_last_hour"] > 0
    assert section["total"] == 60


def test_the_snapshot_carries_the_fleet_and_dead_runs_trigger_a_sweep(db, make_worker, settings):
    settings.FLEET_CRASH_AFTER_SECONDS = 10
    worker = make_worker()
    run = request_run(worker)
    WorkerRun.objects.filter(pk=run.pk).update(status="running", heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert Rule.objects.filter(name__startswith="fleet-", builtin=True).count() == 4
    result = run_cycle(manual=True, actor="ops")
    assert result["snapshot"]["workers"]["dead_runs"] == 1
    assert "sweep_workers" in [a["type"] for a in result["decision"]["actions"]]
    run.refresh_from_db()
    assert run.status == "crashed"
    crash = Anomaly.objects.get(code="WORKER_CRASH")
    # The restart is an Action recorded with the cycle that caused it.
    restart = Action.objects.get(action_type="restart_worker")
    assert restart.cycle == result["cycle"] - 1 or restart.cycle == result["cycle"]
    assert crash.recovery[0]["action_id"] == restart.pk


def test_recovery_runs_from_the_loop_and_escalation_from_the_policies_tick(db, make_worker):
    from orchestration.core.anomalies import open_anomaly
    from orchestration.core.escalation import escalation_tick
    from orchestration.loop.runner import _TICK_HOOKS

    found, _ = open_anomaly("SLOW_EXECUTION", "worker:collector", {}, worker=make_worker())
    first = run_cycle(manual=True)
    assert "recover_workers" in [a["type"] for a in first["decision"]["actions"]]
    # The loop has no escalation rule of its own any more: the policies' tick hook escalates.
    assert not Rule.objects.filter(action_type="escalate_worker_anomalies").exists()
    assert escalation_tick in _TICK_HOOKS
    Anomaly.objects.filter(pk=found.pk).update(detected_at=timezone.now() - timedelta(minutes=11))
    escalation_tick.last = 0.0
    assert escalation_tick() == {"escalated": [found.pk]}
    assert Anomaly.objects.get(pk=found.pk).escalated_at is not None


def test_hourly_and_daily_rollups(db, make_worker):
    worker = make_worker()
    for _ in range(2):
        execute_run(request_run(worker).pk)
    now = timezone.now()
    ScoreReport.objects.filter(period="run").update(created_at=now - timedelta(hours=1))
    result = scores.rollup("hourly", now)
    assert result["workers"] == 1
    hourly = ScoreReport.objects.get(period="hourly")
    assert hourly.runs == 2 and hourly.overall_score == 100
    scores.rollup("hourly", now)  # again: updated, not duplicated
    assert ScoreReport.objects.filter(period="hourly").count() == 1
    ScoreReport.objects.filter(period="run").update(created_at=now - timedelta(days=1))
    assert scores.rollup("daily", now)["workers"] == 1


def test_builtin_cleanup_prunes_old_history(db, make_worker, settings):
    worker = make_worker()
    old = request_run(worker)
    execute_run(old.pk)
    WorkerRun.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(days=30))
    ScoreReport.objects.update(created_at=timezone.now() - timedelta(days=30))
    result = builtins.cleanup_stale_runs()
    assert result["deleted_runs"] == 1 and result["deleted_score_reports"] == 1
    cleanup = Worker.objects.get(name="stale-run-cleanup")
    run = request_run(cleanup)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded" and "deleted_runs" in run.metrics


def test_an_open_worker_circuit_is_counted_and_probed(db, make_worker):
    worker = make_worker()
    make_worker("other")
    assert workers_section(timezone.now())["circuits_open"] == 0
    assert worker.ensure_circuit().trip(actor="ops", reason="test") == "opened"
    assert workers_section(timezone.now())["circuits_open"] == 1
    result = run_cycle(manual=True)
    assert "probe_open_circuits" in [a["type"] for a in result["decision"]["actions"]]
    probe = WorkerRun.objects.get(worker__name="collector")
    assert probe.trigger == "recovery"
    # Still open (its timeout has not passed): the probe is skipped, not run.
    assert execute_run(probe.pk)["reason"] == "circuit_open"


def test_every_builtin_worker_runs_successfully(db):
    for name in (
        "ledger-retention",
        "job-retention",
        "check-history-retention",
        "score-rollup-hourly",
        "score-rollup-daily",
        "stale-run-cleanup",
    ):
        run = request_run(Worker.objects.get(name=name))
        execute_run(run.pk)
        run.refresh_from_db()
        assert run.status == "succeeded", (name, run.error)
