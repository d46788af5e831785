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

from orchestration.choices import Severity
from orchestration.dbfaults import Outage, describe, is_transient
from orchestration.jobs import queue
from orchestration.jobs.queue import worker_identity
from orchestration.loop.cycle import run_cycle
from orchestration.models import LedgerEntry, LoopState
from orchestration.models.ledger import ledger_entry
from orchestration.runnables import runnable

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


class LoopRunner:
    def __init__(self, *, dedicated: bool = True, tick_seconds: float = TICK_SECONDS):
        self.owner = worker_identity()
        self.dedicated = dedicated
        self.tick_seconds = tick_seconds
        self.shutdown = threading.Event()
        self.cycles = 0
        # When this runner's last cycle says the next one is due; lets it wake up on
        # time instead of up to one tick late.
        self.next_due: datetime | None = None
        # A database that went away (restart, failover, SQLite busy past its timeout):
        # every step of a tick waits it out instead of killing the runner.
        self.outage = Outage()

    def tick(self) -> None:
        try:
            close_old_connections()
            self._tick()
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._database_failed(exc)
            return
        if self.outage.active:
            self._database_back()

    def _tick(self) -> None:
        if self.dedicated:
            LoopState.beat_runner(self.owner)
        for step in (queue.maintain, fire_due_schedules, *_TICK_HOOKS):
            try:
                step()
            except Exception as exc:  # one failing step must not stop the loop
                if is_transient(exc):
                    raise  # the database is gone: the next steps would fail alike
                log.exception("runner step %s failed", getattr(step, "__name__", step))
        try:
            result = run_cycle(manual=False, owner=self.owner)
        except Exception as exc:
            if is_transient(exc):
                raise
            # Usually already in the ledger as orchestrator.cycle_error, but not when the
            # database itself failed (e.g. locked): say it here too, and keep going.
            log.exception("cycle failed")
            result = None
        if result is not None:
            self.cycles += 1
            self.next_due = datetime.fromisoformat(result["next_cycle_due_at"])

    # --- database outages ----------------------------------------------------------
    def _database_failed(self, exc: Exception) -> None:
        error = describe(exc)
        if self.outage.failed(error, now=timezone.now(), monotonic=time.monotonic()):
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
            until_due = (self.next_due - timezone.now()).total_seconds()
            if 0 < until_due < remaining_tick:
                return until_due
        return max(0.0, remaining_tick)

    def run(self, *, max_seconds: float | None = None, should_continue: Callable[[], bool] | None = None) -> int:
        started = time.monotonic()
        while not self.shutdown.is_set():
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            if should_continue is not None and not should_continue():
                break
            began = time.monotonic()
            self.tick()
            self.shutdown.wait(self.sleep_seconds(began))
        close_old_connections()
        return self.cycles


@runnable
def loop_tick_task(window_seconds: float = 55.0) -> str:
    """django-q2 fallback (scheduled every minute): run the loop for a minute when no
    dedicated runner is alive, so a deployment with only cluster nodes still loops.
    It holds one cluster worker while it runs."""
    state = LoopState.get()
    if state.dedicated_runner_alive():
        return "dedicated runner alive; nothing to do"
    from orchestration.workers.shutdown import drain_requested

    runner = LoopRunner(dedicated=False)
    cycles = runner.run(
        max_seconds=window_seconds,
        # Give the cluster worker back at once when the cluster is stopping (it waits
        # for its workers' tasks) or a dedicated runner has appeared.
        should_continue=lambda: not drain_requested() and not LoopState.get().dedicated_runner_alive(),
    )
    return f"ran {cycles} cycle(s)"
