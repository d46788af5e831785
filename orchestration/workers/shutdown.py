"""Graceful shutdown of a running worker.

While a run executes in a process's main thread, SIGTERM does not kill it at once:
the run may finish within ``FLEET_SHUTDOWN_GRACE_SECONDS``; past that it is stopped,
marked interrupted and queued again (so another node re-runs it), and the signal is
then passed on to whatever handled it before (the cluster's own shutdown).

Stopping a run uses SIGALRM, which is also how run timeouts are enforced: both only
work in a main thread, which is where django-q2 workers and the inline test mode run
tasks. Elsewhere a timeout is detected after the fact.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RunTimeout(Exception):
    """The run passed its timeout."""


class RunInterrupted(Exception):
    """The process is shutting down and the grace period is over."""


class _State:
    requested_at: float | None = None
    grace: float = 0.0


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
    _state.requested_at, _state.grace = None, grace_s

    def on_alarm(signum, frame):
        if requested() and time.monotonic() < deadline:
            raise RunInterrupted("shutdown grace period over")
        raise RunTimeout(f"timed out after {timeout_s:g} s")

    def on_term(signum, frame):
        if requested():
            return
        _state.requested_at = time.monotonic()
        remaining = deadline - time.monotonic()
        if grace_s < remaining:
            signal.setitimer(signal.ITIMER_REAL, max(grace_s, 0.001))

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 0.001))
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous_term)
        if previous_timer[0] > 0:
            left = previous_timer[0] - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001), previous_timer[1])


def pass_on_if_requested() -> bool:
    """After the run: if SIGTERM arrived during it, deliver it to the previous handler."""
    if not requested():
        return False
    _state.requested_at = None
    os.kill(os.getpid(), signal.SIGTERM)
    return True
