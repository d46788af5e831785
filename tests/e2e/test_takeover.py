"""Loop takeover: the dedicated runner is killed (kill -9) holding the cycle lease, and
the next cycle starts within 10 s, run by another runner or by a cluster's standby loop,
which holds no cluster worker: jobs keep flowing on a one-worker cluster meanwhile."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.loop.cycle import CYCLE_LEASE_SECONDS
from orchestration.loop.models import LoopState
from tests.support.processes import Proc, manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TAKEOVER_LIMIT = 10.0


def _owner_pid(owner: str) -> int | None:
    parts = owner.split(":")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def kill_mid_cycle(runner: Proc) -> float:
    """kill -9 the runner, and leave the loop's row as a kill inside a cycle leaves it:
    the lease held by the dead runner for a full lease. (A cycle lasts milliseconds, so
    a kill seldom lands in one by chance; the row is what the survivors see.)"""
    wait_for(lambda: _owner_pid(LoopState.get().runner_owner) == runner.popen.pid, timeout=20, message="runner")
    runner.kill_group()
    killed = time.monotonic()
    LoopState.objects.update(
        lease_owner=f"{socket.gethostname()}:{runner.popen.pid}:1",
        lease_expires_at=timezone.now() + timedelta(seconds=CYCLE_LEASE_SECONDS),
        next_cycle_due_at=timezone.now(),
    )
    return killed


def next_cycle_by(pid_of_owner: set[int], after_count: int) -> bool:
    state = LoopState.get()
    owner = (state.last_cycle or {}).get("owner", "")
    return state.cycle_count > after_count and _owner_pid(owner) in pid_of_owner


def test_a_second_runner_takes_over_within_seconds(tmp_path):
    LoopState.get()
    with running(
        ("first", manage("run_orchestrator")),
        ("second", manage("run_orchestrator")),
        log_dir=tmp_path,
        ORCHESTRATOR_INTERVAL_SECONDS="1",
    ) as (first, second):
        wait_for(lambda: LoopState.get().cycle_count >= 2, timeout=20, message="cycles", alive=(first, second))
        # Whichever beat last is "the" runner; kill that one.
        victim, survivor = (
            (first, second) if _owner_pid(LoopState.get().runner_owner) == first.popen.pid else (second, first)
        )
        killed = kill_mid_cycle(victim)
        count = LoopState.get().cycle_count
        wait_for(lambda: next_cycle_by({survivor.popen.pid}, count), timeout=15, message="the survivor's cycle")
        took = time.monotonic() - killed
        assert took <= TAKEOVER_LIMIT, f"next cycle {took:.1f} s after the kill"
        print(f"takeover by the second runner after {took:.1f} s")


def test_the_clusters_standby_takes_over_without_holding_a_worker(tmp_path, broker_only):
    LoopState.get()
    with running(
        ("cluster", manage("qcluster")),
        ("loop", manage("run_orchestrator")),
        log_dir=tmp_path,
        ORCHESTRATOR_INTERVAL_SECONDS="1",
        Q_WORKERS="1",
    ) as (cluster, loop):
        wait_for(lambda: LoopState.get().cycle_count >= 2, timeout=30, message="cycles", alive=(cluster, loop))
        killed = kill_mid_cycle(loop)
        count = LoopState.get().cycle_count
        wait_for(lambda: next_cycle_by({cluster.popen.pid}, count), timeout=15, message="the standby's cycle")
        took = time.monotonic() - killed
        assert took <= TAKEOVER_LIMIT, f"next cycle {took:.1f} s after the kill"
        # The standby keeps cycling, and the cluster's only worker stays free for jobs.
        count = LoopState.get().cycle_count
        jobs = [queue.enqueue("noop", {}) for _ in range(20)]
        wait_for(
            lambda: Job.objects.filter(pk__in=[j.pk for j in jobs], status=JobStatus.COMPLETED).count() == 20,
            timeout=10,
            message="jobs on the one-worker cluster",
            alive=(cluster,),
        )
        wait_for(lambda: LoopState.get().cycle_count >= count + 3, timeout=10, message="standby cycles")
        assert _owner_pid(LoopState.get().last_cycle["owner"]) == cluster.popen.pid
        # No fallback task held the worker longer than one cycle.
        for started, finished in Job.objects.filter(payload__func__endswith="loop_tick_task").values_list(
            "started_at", "finished_at"
        ):
            assert finished is not None and (finished - started).total_seconds() < 2
        print(f"takeover by the cluster's standby after {took:.1f} s")
