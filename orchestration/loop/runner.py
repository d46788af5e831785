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

from django.db import close_old_connections
from django.utils import timezone

from orchestration.jobs import queue
from orchestration.jobs.queue import worker_identity
from orchestration.loop.cycle import run_cycle
from orchestration.models import LoopState

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

    def tick(self) -> None:
        close_old_connections()
        if self.dedicated:
            LoopState.beat_runner(self.owner)
        for step in (queue.maintain, fire_due_schedules, *_TICK_HOOKS):
            try:
                step()
            except Exception:  # one failing step must not stop the loop
                log.exception("runner step %s failed", getattr(step, "__name__", step))
        try:
            result = run_cycle(manual=False, owner=self.owner)
        except Exception:
            # Usually already in the ledger as orchestrator.cycle_error, but not when the
            # database itself failed (e.g. locked): say it here too, and keep going.
            log.exception("cycle failed")
            result = None
        if result is not None:
            self.cycles += 1
            self.next_due = datetime.fromisoformat(result["next_cycle_due_at"])

    def sleep_seconds(self, tick_began: float) -> float:
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
