"""The periodic runner's steps, called directly."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest
from django.db import OperationalError, ProgrammingError, connection
from django.utils import timezone

from orchestration.core.jobs import queue
from orchestration.core.models import Job, LedgerEntry
from orchestration.loop.models import LoopState
from orchestration.loop.runner import LoopRunner, loop_tick_task

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
    from orchestration.core import shutdown

    LoopState.get()
    monkeypatch.setattr(shutdown, "drain_requested", lambda: True)
    assert loop_tick_task(window_seconds=30) == "ran 0 cycle(s)"


def test_the_fallback_schedule_runs_the_loop_when_no_runner_lives():
    LoopState.get()
    Job.objects.create(kind="noop")
    assert loop_tick_task(window_seconds=0.3) == "ran 1 cycle(s)"


# --- a database that goes away ---------------------------------------------------------
class FailingDatabase:
    """Every query on this thread's connection fails as a restarting server answers,
    while ``failures`` last (a count, or until a monotonic deadline)."""

    def __init__(self, message: str, *, count: int = 0, until: float = 0.0):
        self.message, self.count, self.until = message, count, until

    def __call__(self, execute, sql, params, many, context):
        if self.count > 0 or time.monotonic() < self.until:
            self.count -= 1
            raise OperationalError(self.message)
        return execute(sql, params, many, context)


def _outage_entries() -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(event_type__startswith="orchestrator.database_").order_by("created_at"))


def test_a_database_blip_at_the_runners_heartbeat_is_waited_out_and_written_down_once():
    LoopState.get()
    runner = LoopRunner()
    with connection.execute_wrapper(FailingDatabase("FATAL:  the database system is starting up", count=3)):
        runner.tick()  # the first query of a tick is the runner's heartbeat
        assert runner.outage.active and runner.cycles == 0
        assert 0 < runner.sleep_seconds(time.monotonic()) <= 0.5  # backs off, not a busy loop
        runner.tick()
        runner.tick()
        assert runner.outage.retries == 2
        runner.tick()  # reachable again: the tick runs in full
    assert not runner.outage.active and runner.cycles == 1
    assert LoopState.get().runner_owner == runner.owner
    went, back = _outage_entries()
    assert went.event_type == "orchestrator.database_unreachable" and "starting up" in went.message
    assert back.event_type == "orchestrator.database_back"
    assert back.data["retries"] == 2 and back.data["duration_seconds"] >= 0
    assert went.created_at <= back.created_at


def test_the_runner_rides_out_a_refused_connection_and_keeps_cycling(caplog):
    LoopState.get()
    runner = LoopRunner(tick_seconds=0.1)
    blip = FailingDatabase("connection to server at 127.0.0.1 failed: Connection refused", until=0)
    with connection.execute_wrapper(blip):
        runner.tick()
        assert runner.cycles == 1
        LoopState.objects.update(next_cycle_due_at=timezone.now())
        blip.until = time.monotonic() + 1.2  # down for 1.2 s, mid-run
        cycles = runner.run(max_seconds=3.5)
    assert cycles >= 2 and not runner.outage.active
    went, back = _outage_entries()  # one pair for the whole outage, not one per retry
    assert "Connection refused" in went.message
    assert 1.0 <= back.data["duration_seconds"] < 3.0
    assert back.data["retries"] >= 1
    assert sum("database unreachable" in r.getMessage() for r in caplog.records) == 1


def test_a_locked_sqlite_file_is_transient_too(monkeypatch):
    """A real lock: another connection holds the write lock longer than the busy timeout."""
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's busy lock")
    LoopState.get()
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.1)
    connection.close()  # reconnect with the short busy timeout
    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        runner = LoopRunner()
        runner.tick()
        assert runner.outage.active and "database is locked" in runner.outage.error
        holder.execute("COMMIT")
        runner.tick()
        assert not runner.outage.active and runner.cycles == 1
    finally:
        holder.close()
        connection.close()
    assert [e.event_type for e in _outage_entries()] == [
        "orchestrator.database_unreachable",
        "orchestrator.database_back",
    ]


def test_a_bug_is_not_mistaken_for_an_outage(monkeypatch):
    LoopState.get()

    def broken(owner):
        raise ProgrammingError("no such column: runner_owner")

    monkeypatch.setattr(LoopState, "beat_runner", broken)
    with pytest.raises(ProgrammingError):
        LoopRunner().tick()


# --- takeover and timeliness ----------------------------------------------------------
def test_the_lease_is_taken_ahead_by_at_most_a_quarter_interval():
    from orchestration.loop.cycle import cycle_lead

    assert cycle_lead(2.0) == 0.5 and cycle_lead(0.4) == 0.1 and cycle_lead(60) == 0.5


def test_a_runner_takes_the_lease_ahead_and_starts_each_cycle_on_time():
    LoopState.get()
    LoopState.objects.update(interval_seconds=0.4)
    runner = LoopRunner(tick_seconds=0.1)
    runner.run(max_seconds=2.5)
    late = [
        e.data["late_ms"]
        for e in LedgerEntry.objects.filter(event_type="orchestrator.cycle_idle").order_by("id")
        if e.data.get("late_ms") is not None
    ]
    assert len(late) >= 4
    assert max(late) < 300, late  # the lead is 0.1 s here; a late wake-up on a busy machine stays well under


def test_a_long_cycle_keeps_its_lease_and_a_dead_runners_lease_runs_out_in_seconds(monkeypatch):
    from orchestration.loop import cycle

    LoopState.get()
    monkeypatch.setattr(cycle, "CYCLE_LEASE_SECONDS", 0.6)
    real_build = cycle.build_snapshot

    def slow_build(now):
        time.sleep(1.5)  # longer than the lease: only its renewal keeps it
        return real_build(now)

    monkeypatch.setattr(cycle, "build_snapshot", slow_build)
    seen = []
    other = LoopRunner()

    def contender():
        time.sleep(0.3)
        for _ in range(10):
            seen.append(LoopState.acquire_cycle_lease(other.owner, 0.6, respect_interval=False))
            time.sleep(0.1)

    import threading

    thread = threading.Thread(target=contender)
    thread.start()
    assert cycle.run_cycle(manual=True, owner="long-cycle") is not None
    thread.join()
    assert seen and not any(seen)  # never free while the long cycle ran
    # A runner killed mid-cycle renews nothing: its lease is free once it runs out.
    assert LoopState.acquire_cycle_lease("dead-runner", 0.6, respect_interval=False)
    assert not LoopState.acquire_cycle_lease(other.owner, 0.6, respect_interval=False)
    time.sleep(0.7)
    assert LoopState.acquire_cycle_lease(other.owner, 0.6, respect_interval=False)


def test_the_standby_runs_cycles_only_while_no_dedicated_runner_is_alive():
    from orchestration.loop.standby import Standby

    LoopState.get()
    standby = Standby()
    LoopState.beat_runner("somewhere:1")
    standby.step()
    assert LoopState.get().cycle_count == 0 and standby.runner is None
    LoopState.objects.update(runner_seen_at=timezone.now() - timedelta(seconds=LoopState.RUNNER_ALIVE_SECONDS + 1))
    standby.step()
    assert LoopState.get().cycle_count == 1 and standby.runner.cycles == 1
    assert LoopState.get().lease_owner == ""  # released: nothing held between cycles
