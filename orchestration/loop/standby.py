"""The cluster's standby loop: a thread of each main ``qcluster`` process that runs the
cycles while no dedicated runner (``run_orchestrator``) is alive.

A runner that dies (kill -9 mid-cycle included) stops beating; within
``LoopState.RUNNER_ALIVE_SECONDS`` every node's standby sees it, the cycle lease it
held runs out (``CYCLE_LEASE_SECONDS``, renewed only while a cycle runs), and one of
them takes the next cycle: within seconds, holding no cluster worker at all (the main
qcluster process only waits on its sentinel otherwise). Nodes compete for the cycle
lease like runners do, so cycles never overlap; only the node that ran a cycle does
the loop's housekeeping (schedules, hooks), and the node's own lease heartbeat already
reclaims dead jobs.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import connections

from orchestration.loop.models import LoopState
from orchestration.loop.runner import LoopRunner

log = logging.getLogger("orchestration.loop")

# How often an idle standby looks at the runner's beat (one plain read).
WATCH_SECONDS = 1.0


class Standby(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True, name="loop-standby")
        self.stop = threading.Event()
        self.runner: LoopRunner | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.stop.wait(self.step())
        finally:
            connections.close_all()  # this thread's own connections

    def step(self) -> float:
        """One look, and a cycle (with the loop's housekeeping) when one is due and no
        dedicated runner is alive; returns the seconds until the next look."""
        try:
            state = (
                LoopState.objects.filter(pk=LoopState.SINGLETON_ID).values("runner_seen_at", "interval_seconds").first()
            )
        except Exception as exc:  # the database is away: look again shortly
            log.info("standby loop: %s", exc)
            connections.close_all()
            return WATCH_SECONDS
        if state is None or LoopState(runner_seen_at=state["runner_seen_at"]).dedicated_runner_alive():
            if self.runner is not None:
                log.info("a dedicated loop runner is alive again; the cluster's standby loop steps back")
                self.runner = None
            return WATCH_SECONDS
        if self.runner is None:
            log.warning("no dedicated loop runner alive; the cluster's standby loop runs the cycles")
            self.runner = LoopRunner(dedicated=False, tick_seconds=WATCH_SECONDS)
        runner = self.runner
        began = time.monotonic()
        ran: list[bool] = []
        runner._guarded(lambda: ran.append(runner.cycle_step()))
        if ran and ran[0]:  # this node won the cycle: it does the loop's housekeeping too
            runner._guarded(runner.housekeeping)
        return runner.sleep_seconds(began)


_standby: Standby | None = None


def install_cluster_standby() -> None:
    """Start a standby loop in the main qcluster process once its sentinel runs (after
    the fork: no thread of ours is copied into the sentinel), and stop it with the
    cluster."""
    from django_q.cluster import Cluster

    original_start, original_handler = Cluster.start, Cluster.sig_handler
    if getattr(original_start, "_loop_standby", False):
        return

    def start(self):
        global _standby
        pid = original_start(self)
        _standby = Standby()
        _standby.start()
        return pid

    def sig_handler(self, signum, frame):
        if _standby is not None:
            _standby.stop.set()
        return original_handler(self, signum, frame)

    start._loop_standby = True  # type: ignore[attr-defined]
    Cluster.start = start
    Cluster.sig_handler = sig_handler
