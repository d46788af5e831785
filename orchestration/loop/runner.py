"""The periodic runner: what `run_orchestrator` and the fallback schedule execute.

Each tick (a fraction of the interval) it reports itself alive, keeps the job queue
moving (reclaim dead leases, dispatch due jobs), fires due django-q2 schedules (the
cluster's own scheduler only looks every ~30 s), and runs a cycle when one is due
and it wins the lease. Any number of runners may run at once: the database decides
who runs each cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from django.db import close_old_connections, connections
from django.utils import timezone

from orchestration.core import shutdown
from orchestration.core.choices import Severity
from orchestration.core.dbfaults import Outage, describe, is_transient
from orchestration.core.jobs import queue
from orchestration.core.jobs.queue import worker_identity
from orchestration.core.models import LedgerEntry
from orchestration.core.models.ledger import ledger_entry
from orchestration.core.runnables import runnable
from orchestration.loop.cycle import LEAD_SECONDS, cycle_lead, run_cycle
from orchestration.loop.models import LoopState

log = logging.getLogger("orchestration.loop")

TICK_SECONDS = 0.5

# Extra work done every tick by other capabilities (e.g. the health sweep's due
# checks). Each is called with no arguments and must be quick and idempotent.
_TICK_HOOKS: list[Callable[[], object]] = []


def register_tick_hook(hook: Callable[[], object]) -> Callable[[], object]:
    if hook not in _TICK_HOOKS:
        _TICK_HOOKS.append(hook)
    return hook


def fire_due_schedules() -> None:
    from django_q.brokers import get_broker
    from django_q.scheduler import scheduler

    scheduler(broker=get_broker())


# The loop runner beats at most this often (the fallback watches the beat).
BEAT_SECONDS = 1.0


class LoopRunner:
    def __init__(self, *, dedicated: bool = True, tick_seconds: float = TICK_SECONDS):
        self.owner = worker_identity()
        self.dedicated = dedicated
        self.tick_seconds = tick_seconds
        self.shutdown = threading.Event()
        self.cycles = 0
        # When the next cycle is due as this runner last saw it; lets it wake up on
        # time instead of up to one tick late.
        self.next_due: datetime | None = None
        # A database that went away (restart, failover, SQLite busy past its timeout):
        # every step waits it out instead of killing the runner. Shared by the cycle
        # and the housekeeping thread, so one outage is one pair of ledger entries.
        self.outage = Outage()
        self._outage_lock = threading.RLock()
        self._outage_thread: int | None = None
        self._beaten_at = 0.0  # monotonic
        self.lead = 0.0  # how early it takes the lease (cycle_lead of the interval)
        self._housekeeping_error: BaseException | None = None

    # --- steps ---------------------------------------------------------------------
    def tick(self) -> None:
        """One full tick: housekeeping, then the cycle if one is due (tests and the
        cluster's fallback; ``run`` does both on their own threads)."""
        if self._guarded(self.housekeeping):
            self._guarded(self.cycle_step)

    def housekeeping(self) -> None:
        """Report alive, keep the queue moving, fire due schedules, the other
        capabilities' hooks. Off the cycle's path: none of it may make a cycle late."""
        if self.dedicated and time.monotonic() - self._beaten_at >= min(BEAT_SECONDS, self.tick_seconds * 2):
            LoopState.beat_runner(self.owner)
            self._beaten_at = time.monotonic()
        for step in (queue.maintain, fire_due_schedules, *_TICK_HOOKS):
            try:
                step()
            except Exception as exc:  # one failing step must not stop the loop
                if is_transient(exc):
                    raise  # the database is gone: the next steps would fail alike
                log.exception("runner step %s failed", getattr(step, "__name__", step))

    def cycle_step(self) -> bool:
        """Run a cycle if one is due and this runner wins the lease; True if it ran."""
        try:
            result = run_cycle(manual=False, owner=self.owner, lead_seconds=LEAD_SECONDS)
        except Exception as exc:
            if is_transient(exc):
                raise
            # Usually already in the ledger as orchestrator.cycle_error, but not when the
            # database itself failed (e.g. locked): say it here too, and keep going.
            log.exception("cycle failed")
            result = None
        if result is None:
            self._peek()
            return False
        self.cycles += 1
        self.next_due = datetime.fromisoformat(result["next_cycle_due_at"])
        self.lead = cycle_lead((self.next_due - datetime.fromisoformat(result["timestamp"])).total_seconds())
        return True

    def _peek(self) -> None:
        """Learn when the next cycle is due from the loop's row (a plain read)."""
        row = (
            LoopState.objects.filter(pk=LoopState.SINGLETON_ID)
            .values("enabled", "interval_seconds", "next_cycle_due_at", "lease_expires_at")
            .first()
        )
        if row is None or not row["enabled"]:
            self.next_due = None
            return
        self.lead = cycle_lead(row["interval_seconds"])
        self.next_due = row["next_cycle_due_at"]
        if row["lease_expires_at"] is not None and (self.next_due is None or row["lease_expires_at"] > self.next_due):
            self.next_due = row["lease_expires_at"]  # a cycle is running elsewhere

    def _guarded(self, step: Callable[[], object]) -> bool:
        """Run a step; a transient database error starts (or continues) an outage
        instead of raising. True when the step ran."""
        try:
            close_old_connections()
            step()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._database_failed(exc)
            return False
        # Only a success on the thread whose failure began the outage ends it: the other
        # thread's connection may have been spared (one pair of entries, not a flurry).
        if self.outage.active and self._outage_thread == threading.get_ident():
            self._database_back()
        return True

    # --- database outages ----------------------------------------------------------
    def _database_failed(self, exc: Exception) -> None:
        error = describe(exc)
        with self._outage_lock:
            if self.outage.failed(error, now=timezone.now(), monotonic=time.monotonic()):
                self._outage_thread = threading.get_ident()
                log.warning("database unreachable (%s); retrying with backoff", error)
            else:
                log.info("database still unreachable (%s); retry %d", error, self.outage.retries)
        # A broken connection is never reused: the retry opens a fresh one.
        for conn in connections.all(initialized_only=True):
            try:
                conn.close()
            except Exception:  # closing a dead connection may raise; it is gone either way
                log.debug("closing connection %s failed", conn.alias, exc_info=True)

    def _database_back(self) -> None:
        """One entry for the outage (dated when it began) and one for its end, written
        together now that the ledger is reachable again."""
        with self._outage_lock:
            if not self.outage.active:
                return  # the other thread wrote it
            now = timezone.now()
            seconds = round(self.outage.duration(now), 3)
            data = {"error": self.outage.error, "retries": self.outage.retries, "runner": self.owner}
            went = ledger_entry(
                "orchestrator.database_unreachable",
                f"Database unreachable: {self.outage.error}",
                severity=Severity.ERROR,
                subject=self.owner,
                data=data,
            )
            went.created_at = self.outage.began_at
            back = ledger_entry(
                "orchestrator.database_back",
                f"Database reachable again after {seconds:g} s ({self.outage.retries} retries)",
                severity=Severity.WARNING,
                subject=self.owner,
                data={**data, "duration_seconds": seconds, "since": self.outage.began_at.isoformat()},
            )
            try:
                LedgerEntry.objects.bulk_create([went, back])
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._database_failed(exc)
                return
            log.warning("database reachable again after %.1f s", seconds)
            self.outage.clear()

    def sleep_seconds(self, tick_began: float) -> float:
        if self.outage.active:
            return self.outage.seconds_until_retry(time.monotonic())
        remaining_tick = self.tick_seconds - (time.monotonic() - tick_began)
        if self.next_due is not None:
            # Wake in time to take the lease ahead of the due time (see cycle_lead).
            until_due = (self.next_due - timezone.now()).total_seconds() - self.lead
            if until_due < remaining_tick:
                return max(0.01, until_due)
        return max(0.0, remaining_tick)

    # --- the process -----------------------------------------------------------------
    def run(self, *, max_seconds: float | None = None, should_continue: Callable[[], bool] | None = None) -> int:
        """Cycles on this thread; housekeeping on a thread of its own, so a slow step
        (a schedule firing that waits for a busy database) never makes a cycle late."""
        started = time.monotonic()

        def going() -> bool:
            if self.shutdown.is_set() or self._housekeeping_error is not None:
                return False
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                return False
            return should_continue is None or should_continue()

        stop_housekeeping = threading.Event()
        housekeeper = threading.Thread(
            target=self._housekeeping_loop, args=(stop_housekeeping,), name="loop-housekeeping", daemon=True
        )
        housekeeper.start()
        try:
            while going():
                began = time.monotonic()
                self._guarded(self.cycle_step)
                self.shutdown.wait(self.sleep_seconds(began))
        finally:
            stop_housekeeping.set()
            housekeeper.join(timeout=30)
            close_old_connections()
        if self._housekeeping_error is not None:
            raise self._housekeeping_error
        return self.cycles

    def _housekeeping_loop(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                began = time.monotonic()
                self._guarded(self.housekeeping)
                wait = self.outage.seconds_until_retry(time.monotonic()) if self.outage.active else 0.0
                stop.wait(max(wait, self.tick_seconds - (time.monotonic() - began)))
        except BaseException as exc:  # a bug: the runner stops, as it did on one thread
            log.exception("loop housekeeping failed")
            self._housekeeping_error = exc
        finally:
            connections.close_all()  # this thread's own connections


@runnable
def loop_tick_task(window_seconds: float = 0.0) -> str:
    """django-q2 fallback (scheduled every minute), for a deployment whose cluster
    nodes do not run the standby loop (see loop.standby): one tick when no dedicated
    runner is alive. It holds a cluster worker for one cycle at most, never longer.
    (``window_seconds`` is kept for schedules stored with it; it is not used.)"""
    state = LoopState.get()
    if state.dedicated_runner_alive():
        return "dedicated runner alive; nothing to do"

    if shutdown.drain_requested():
        return "ran 0 cycle(s)"
    runner = LoopRunner(dedicated=False)
    runner.tick()
    return f"ran {runner.cycles} cycle(s)"
