"""Graceful shutdown of a running worker.

While a run executes in a process's main thread, SIGTERM does not kill it at once:
the run may finish within ``FLEET_SHUTDOWN_GRACE_SECONDS``; past that it is stopped,
marked interrupted and queued again (so another node re-runs it), and the signal is
then passed on to whatever handled it before (the cluster's own shutdown).

Stopping a run uses SIGALRM, which is also how run timeouts are enforced: both only
work in a main thread, which is where django-q2 workers and the inline test mode run
tasks. Elsewhere a timeout is detected after the fact.

In a cluster, SIGTERM goes to the main ``qcluster`` process only (signalling the whole
group hangs django-q2), and django-q2 then waits for its workers to finish their task
without telling them. So the main process leaves a drain marker (see
``install_cluster_drain``) and each running worker's heartbeat looks for it among its
ancestors: from then on the run has the grace period, exactly as if it had received
SIGTERM itself.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

log = logging.getLogger("orchestration.fleet")


class RunTimeout(Exception):
    """The run passed its timeout."""


class RunInterrupted(Exception):
    """The process is shutting down and the grace period is over."""


class RunCanceled(Exception):
    """A newer run took this one's place (overlap: cancel other)."""


class _State:
    requested_at: float | None = None
    canceled: str | None = None
    grace: float = 0.0
    deadline: float = 0.0
    active: bool = False
    # True when the drain marker (not a signal to this process) started the shutdown:
    # then there is no previous handler to pass a signal on to.
    from_drain: bool = False


_state = _State()


def requested() -> bool:
    return _state.requested_at is not None


def enforceable() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


@contextmanager
def guarded(timeout_s: float, grace_s: float) -> Iterator[bool]:
    """Run the block with a hard timeout and graceful SIGTERM handling.

    Yields True when enforcement is active (main thread), False otherwise.
    """
    if not enforceable():
        yield False
        return
    started = time.monotonic()
    deadline = started + timeout_s
    previous_alarm = signal.getsignal(signal.SIGALRM)
    previous_timer = signal.getitimer(signal.ITIMER_REAL)
    previous_term = signal.getsignal(signal.SIGTERM)
    _state.requested_at, _state.grace, _state.deadline = None, grace_s, deadline
    _state.from_drain, _state.active, _state.canceled = False, True, None

    def on_alarm(signum, frame):
        if _state.canceled is not None:
            raise RunCanceled(_state.canceled)
        if requested() and time.monotonic() < deadline:
            raise RunInterrupted("shutdown grace period over")
        raise RunTimeout(f"timed out after {timeout_s:g} s")

    def on_term(signum, frame):
        _begin(from_drain=False)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 0.001))
    try:
        yield True
    finally:
        _state.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous_term)
        if previous_timer[0] > 0:
            left = previous_timer[0] - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), previous_timer[1])


def cancel(reason: str) -> bool:
    """Stop the guarded run now, from another thread (the heartbeat, once it saw the
    run canceled in the database): the alarm fires at once and raises RunCanceled in
    the run's thread. False when no run is guarded (nothing can be stopped)."""
    if not _state.active:
        return False
    _state.canceled = reason
    signal.setitimer(signal.ITIMER_REAL, 0.001)
    return True


def _begin(*, from_drain: bool) -> None:
    """Start the grace period (once): re-arm the alarm to whichever comes first, the
    grace period or the run's own timeout."""
    if requested() or not _state.active:
        return
    _state.requested_at = time.monotonic()
    _state.from_drain = from_drain
    remaining = _state.deadline - time.monotonic()
    if _state.grace < remaining:
        # setitimer is process-wide and may be called from the heartbeat thread.
        signal.setitimer(signal.ITIMER_REAL, max(_state.grace, 0.001))


def pass_on_if_requested() -> bool:
    """After the run: if SIGTERM arrived during it, deliver it to the previous handler."""
    if not requested():
        return False
    from_drain = _state.from_drain
    _state.requested_at, _state.from_drain = None, False
    if not from_drain:
        os.kill(os.getpid(), signal.SIGTERM)
    return True


# --- cluster drain ------------------------------------------------------------------
def _marker(process: psutil.Process) -> Path:
    # pid + start time: a recycled pid never inherits an old marker.
    return Path(tempfile.gettempdir()) / f"orchestrator-drain-{process.pid}-{int(process.create_time())}"


def mark_draining() -> Path:
    path = _marker(psutil.Process())
    path.write_text(str(time.time()))
    return path


def drain_requested() -> bool:
    """True when this process's cluster (an ancestor) is shutting down."""
    try:
        return any(_marker(p).exists() for p in psutil.Process().parents()[:3])
    except psutil.Error:
        return False


def check_drain() -> bool:
    """Called by a running worker's heartbeat thread."""
    if _state.active and not requested() and drain_requested():
        log.info("cluster is shutting down: run gets %.1f s to finish", _state.grace)
        _begin(from_drain=True)
        return True
    return False


def install_cluster_drain() -> None:
    """Make the main qcluster process leave a drain marker when told to stop."""
    from django_q.cluster import Cluster

    original = Cluster.sig_handler
    if getattr(original, "_fleet_drain", False):
        return

    def sig_handler(self, signum, frame):
        try:
            path = mark_draining()
        except OSError:
            log.exception("could not write the drain marker")
            path = None
        try:
            # The original handler returns once the cluster has stopped (its workers
            # are gone), so the marker is no longer needed. (An atexit hook registered
            # here would never run: the process is already shutting down.)
            return original(self, signum, frame)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)

    sig_handler._fleet_drain = True  # type: ignore[attr-defined]
    Cluster.sig_handler = sig_handler
