"""Restart and retry delays, as process managers compute them. Pure: no Django, no clock.

systemd's ``Restart=`` with a growing ``RestartSec``, supervisord's backoff and
Kubernetes' CrashLoopBackOff share one shape: wait a little after the first failure,
twice as long after each failure in a row up to a cap, and start over once the thing
has run healthily for a while. ``manage.py serve`` uses it for its children (1 s → 30 s,
reset after a healthy minute); the loop runner for a database that went away.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    # A run at least this long was healthy: the failure that ends it starts over.
    reset_after: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (from 1)."""
        if failures < 1:
            raise ValueError("failures count from 1")
        # Cap the exponent too, so a long outage cannot overflow the float.
        return min(self.cap, self.initial * self.factor ** min(failures - 1, 64))


SUPERVISOR_POLICY = BackoffPolicy()


class Backoff:
    """Failures in a row of one thing (a child process, the database) and the next delay."""

    def __init__(self, policy: BackoffPolicy = SUPERVISOR_POLICY):
        self.policy = policy
        self.failures = 0

    def failed(self, ran_for: float | None = None) -> float:
        """Count a failure; ``ran_for`` is how long it had been up (None: never came up).
        Returns the delay before the next try."""
        if ran_for is not None and ran_for >= self.policy.reset_after:
            self.failures = 0
        self.failures += 1
        return self.policy.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0
