"""End to end with real processes: loop runners fire worker schedules on time and
once, cluster nodes execute the runs; a node killed mid-run is detected and the
worker restarted on the surviving node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from orchestration.core.models import Anomaly
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.loop.models import LoopState
from tests.support.processes import manage, running, wait_for
from tests.workers.conftest import target

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ENV = {
    "RUNNABLE_MODULES": "tests.workers.targets",
    "FLEET_HEARTBEAT_SECONDS": "0.5",
    "FLEET_CRASH_AFTER_SECONDS": "3",
    "FLEET_SWEEP_SECONDS": "1",
    "JOB_LEASE_SECONDS": "4",
}


def test_a_schedule_fires_within_two_seconds_and_once_with_two_runners_and_two_clusters(tmp_path, broker_only):
    LoopState.get()
    # Keep the built-in workers out of the way: only ours is due.
    Worker.objects.filter(builtin=True).update(enabled=False)
    for w in Worker.objects.filter(builtin=True):
        w.save()
    worker = Worker.objects.create(
        name="clock", category="collection", interval_seconds=60, timeout_seconds=10, target=target("ok", items_total=1)
    )
    due = (timezone.now() + timedelta(seconds=6)).replace(microsecond=0)
    Worker.objects.filter(pk=worker.pk).update(next_due_at=due)
    with running(
        ("runner-a", manage("run_orchestrator")),
        ("runner-b", manage("run_orchestrator")),
        ("cluster-a", manage("qcluster")),
        ("cluster-b", manage("qcluster")),
        log_dir=tmp_path,
        **ENV,
    ):
        run = wait_for(
            lambda: WorkerRun.objects.filter(worker=worker, due_at=due, status="succeeded").first(),
            timeout=45,
            message="the scheduled run to succeed",
        )
        # Give a second scheduler every chance to fire the same due time again.
        wait_for(lambda: LoopState.get().cycle_count >= 4, timeout=20, message="a few loop cycles")
    # Once for this due time. The next due time is the next minute on the epoch grid
    # (orchestration/fleet/cadence.py), as little as a second after ``due``: the test may
    # outlast it, and it then has its own run (never one between the two).
    assert WorkerRun.objects.filter(worker=worker, due_at=due).count() == 1
    next_minute = datetime.fromtimestamp((int(due.timestamp()) // 60 + 1) * 60, tz=UTC)
    others = WorkerRun.objects.filter(worker=worker).exclude(due_at=due).values_list("due_at", flat=True)
    assert all(other >= next_minute for other in others), (due, list(others))
    late = (run.started_at - due).total_seconds()
    print(f"\nscheduled run started {late:.2f} s after its due time")
    # The goal is 2 s (the runners look every 0.5 s); the bound leaves room for a loaded
    # CI machine, where four processes share two cores with the test itself.
    assert 0 <= late <= 5, f"started {late:.2f} s after its due time"
    assert Worker.objects.get(pk=worker.pk).next_due_at > due  # the next minute, on the epoch grid


def test_a_node_killed_mid_run_is_detected_and_the_worker_restarts_elsewhere(tmp_path, broker_only):
    from orchestration.fleet.runner import request_run

    LoopState.get()
    Worker.objects.filter(builtin=True).update(enabled=False)
    marker = tmp_path / "started"
    worker = Worker.objects.create(
        name="fragile",
        category="collection",
        execution_model="on_demand",
        timeout_seconds=120,
        target=target("hang_first_time", marker=str(marker)),
    )
    with running(("doomed", manage("qcluster")), log_dir=tmp_path, **ENV) as (doomed,):
        request_run(worker, actor="ops")
        wait_for(
            lambda: WorkerRun.objects.filter(worker=worker, status="running").exists(),
            timeout=30,
            message="the run to start",
        )
        # Killed inside the target, not before it (the marker is its first act).
        wait_for(marker.exists, timeout=10, message="the target to begin")
        doomed.kill_group()
    first = WorkerRun.objects.get(worker=worker, trigger="manual")
    assert first.status == "running"  # nobody knows yet
    slow = Worker.objects.create(
        name="slow",
        category="collection",
        execution_model="on_demand",
        timeout_seconds=1,
        target=target("sleep", seconds=20),
    )
    with running(("survivor", manage("qcluster")), ("runner", manage("run_orchestrator")), log_dir=tmp_path, **ENV):
        slow_run = request_run(slow, actor="ops")
        wait_for(
            lambda: WorkerRun.objects.filter(worker=worker, trigger="recovery", status="succeeded").exists(),
            timeout=60,
            message="the restarted run to succeed",
        )
        # The timeout is enforced inside a real cluster worker too.
        wait_for(
            lambda: WorkerRun.objects.get(pk=slow_run.pk).status == "timed_out",
            timeout=20,
            message="the slow run to time out",
        )
    first.refresh_from_db()
    assert first.status == "crashed"
    crash = Anomaly.objects.get(code="WORKER_CRASH", subject="worker:fragile")
    assert crash.recovery[0]["strategy"] == "restart_worker" and crash.alert_state == "sent"
    assert crash.resolved_at is not None  # the restart succeeded


@pytest.mark.parametrize(("sleep_s", "grace_s", "expected"), [(1.5, 8, "succeeded"), (30, 1, "interrupted")])
def test_sigterm_to_a_cluster_lets_the_run_finish_within_grace_else_interrupts_and_requeues(
    tmp_path, broker_only, sleep_s, grace_s, expected
):
    import time

    from orchestration.fleet.runner import request_run

    Worker.objects.filter(builtin=True).update(enabled=False)
    worker = Worker.objects.create(
        name="long",
        category="maintenance",
        execution_model="on_demand",
        timeout_seconds=120,
        target=target("sleep", seconds=sleep_s),
    )
    env = {**ENV, "FLEET_SHUTDOWN_GRACE_SECONDS": str(grace_s), "FLEET_HEARTBEAT_SECONDS": "0.2"}
    with running(("cluster", manage("qcluster")), log_dir=tmp_path, **env) as (cluster,):
        run = request_run(worker, actor="ops")
        wait_for(
            lambda: WorkerRun.objects.filter(pk=run.pk, status="running").exists(),
            timeout=30,
            message="the run to start",
        )
        stopped_at = time.monotonic()
        assert cluster.stop(timeout=20) == 0
        took = time.monotonic() - stopped_at
    run.refresh_from_db()
    assert run.status == expected, run.error
    assert took < grace_s + 6, f"cluster took {took:.1f} s to stop"
    if expected == "interrupted":
        rerun = WorkerRun.objects.get(worker=worker, trigger="rerun")
        assert rerun.status == "queued" and rerun.job_id
    else:
        assert not WorkerRun.objects.filter(worker=worker, trigger="rerun").exists()
