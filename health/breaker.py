"""Circuit breaker as a pure state machine: no ORM, no clock of its own.

The persisted ``CircuitBreaker`` model (health.models) stores a ``BreakerStatus``
and asks this module what the next status is; keeping the rules here lets them be
tested in microseconds and reused by anything that needs a breaker (services,
workers).

    closed --(failure_threshold consecutive failures)--> open
    open --(open_timeout_seconds elapsed, one caller asks)--> half_open (one trial)
    half_open --(success_threshold consecutive successes)--> closed
    half_open --(any failure)--> open
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)

# Transition names, also the suffix of the ledger event (health.circuit_<name>).
OPENED = "opened"
HALF_OPENED = "half_opened"
CLOSED_TRANSITION = "closed"

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_SUCCESS_THRESHOLD = 2
DEFAULT_OPEN_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    open_timeout_seconds: float = DEFAULT_OPEN_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("thresholds must be at least 1")
        if self.open_timeout_seconds < 0:
            raise ValueError("open_timeout_seconds must not be negative")


@dataclass(frozen=True)
class BreakerStatus:
    state: str = CLOSED
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    opened_at: datetime | None = None
    # Set while the single half-open trial is in flight, so a second caller is refused.
    trial_started_at: datetime | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: BreakerStatus
    transition: str | None = None


def retry_at(status: BreakerStatus, config: BreakerConfig) -> datetime | None:
    """When an open breaker lets its next trial through (None unless open)."""
    if status.state != OPEN or status.opened_at is None:
        return None
    return status.opened_at + timedelta(seconds=config.open_timeout_seconds)


def _trial_is_stale(status: BreakerStatus, config: BreakerConfig, now: datetime) -> bool:
    # A trial whose caller died before recording must not wedge the breaker forever:
    # after another open timeout the trial slot is handed out again.
    started = status.trial_started_at
    return started is None or now >= started + timedelta(seconds=config.open_timeout_seconds)


def allow(status: BreakerStatus, config: BreakerConfig, now: datetime) -> Decision:
    """May a request go out now? Returns the (possibly new) status to persist."""
    if status.state == CLOSED:
        return Decision(True, status)
    if status.state == OPEN:
        due = retry_at(status, config)
        if due is not None and now < due:
            return Decision(False, status)
        trial = replace(status, state=HALF_OPEN, consecutive_successes=0, trial_started_at=now)
        return Decision(True, trial, HALF_OPENED)
    # half_open: exactly one request in flight at a time.
    if _trial_is_stale(status, config, now):
        return Decision(True, replace(status, trial_started_at=now))
    return Decision(False, status)


def would_allow(status: BreakerStatus, config: BreakerConfig, now: datetime) -> bool:
    """Read-only variant of ``allow`` for display: changes nothing."""
    return allow(status, config, now).allowed


def apply_result(
    status: BreakerStatus, config: BreakerConfig, success: bool, now: datetime
) -> tuple[BreakerStatus, str | None]:
    """Fold one result into the status; returns (new status, transition or None)."""
    if status.state == HALF_OPEN:
        if not success:
            return _open(status, now), OPENED
        successes = status.consecutive_successes + 1
        if successes >= config.success_threshold:
            return BreakerStatus(state=CLOSED, consecutive_successes=successes), CLOSED_TRANSITION
        return replace(status, consecutive_successes=successes, consecutive_failures=0, trial_started_at=None), None

    if status.state == OPEN:
        # Results of requests that were already in flight when the breaker opened:
        # counted, but only a half-open trial may close the breaker.
        if success:
            return replace(status, consecutive_failures=0, consecutive_successes=status.consecutive_successes + 1), None
        return replace(status, consecutive_failures=status.consecutive_failures + 1, consecutive_successes=0), None

    # closed
    if success:
        return replace(status, consecutive_failures=0, consecutive_successes=status.consecutive_successes + 1), None
    failures = status.consecutive_failures + 1
    if failures >= config.failure_threshold:
        return _open(replace(status, consecutive_failures=failures), now), OPENED
    return replace(status, consecutive_failures=failures, consecutive_successes=0), None


def trip(status: BreakerStatus, now: datetime) -> tuple[BreakerStatus, str | None]:
    """Open now whatever the counts (a recovery has judged the target failing); an open
    breaker keeps its opening time, so its timeout is not pushed back."""
    if status.state == OPEN:
        return status, None
    return BreakerStatus(state=OPEN, consecutive_failures=status.consecutive_failures, opened_at=now), OPENED


def reset() -> BreakerStatus:
    return BreakerStatus()


def _open(status: BreakerStatus, now: datetime) -> BreakerStatus:
    failures = max(status.consecutive_failures, 0) + (1 if status.state == HALF_OPEN else 0)
    return BreakerStatus(state=OPEN, consecutive_failures=failures, consecutive_successes=0, opened_at=now)
