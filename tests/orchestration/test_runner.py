"""The periodic runner's steps, called directly."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from orchestration.jobs import queue
from orchestration.loop.runner import LoopRunner, loop_tick_task
from orchestration.models import Job, LoopState

# Transactional: the runner closes stale connections each tick, as a long-lived process must.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("broker_only")]


def test_a_tick_reclaims_expired_leases_runs_a_cycle_and_reports_itself():
    job = queue.enqueue("noop", {}, wake_nodes=False)
    ((pk, _),) = queue.claim(1, owner="dead-node:1")
    Job.objects.filter(pk=pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    runner = LoopRunner()
    runner.tick()
    job.refresh_from_db()
    assert job.status == "pending" and job.lease_owner == ""  # back in the queue for any node
    state = LoopState.get()
    assert state.cycle_count == 1 and state.runner_owner == runner.owner
    assert state.dedicated_runner_alive()
    runner.tick()
    assert LoopState.get().cycle_count == 1  # the next cycle is not due yet


def test_it_wakes_up_when_the_next_cycle_is_due_not_a_tick_later():
    runner = LoopRunner(tick_seconds=0.5)
    began = time.monotonic()
    runner.next_due = timezone.now() + timedelta(seconds=0.1)
    assert 0 < runner.sleep_seconds(began) <= 0.1
    runner.next_due = timezone.now() + timedelta(seconds=5)
    assert 0.4 < runner.sleep_seconds(began) <= 0.5


def test_the_fallback_schedule_stays_idle_while_a_dedicated_runner_lives():
    LoopState.get()
    LoopState.beat_runner("somewhere:1")
    assert loop_tick_task() == "dedicated runner alive; nothing to do"


def test_the_fallback_gives_its_worker_back_when_the_cluster_stops(monkeypatch):
    from orchestration.workers import shutdown

    LoopState.get()
    monkeypatch.setattr(shutdown, "drain_requested", lambda: True)
    assert loop_tick_task(window_seconds=30) == "ran 0 cycle(s)"


def test_the_fallback_schedule_runs_the_loop_when_no_runner_lives():
    LoopState.get()
    Job.objects.create(kind="noop")
    assert loop_tick_task(window_seconds=0.3) == "ran 1 cycle(s)"
