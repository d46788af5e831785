"""Retry delays. Pure functions: no Django, no clock."""

from __future__ import annotations

EXPONENTIAL = "exponential"
LINEAR = "linear"

EXPONENTIAL_BASE_SECONDS = 1.0
LINEAR_STEP_SECONDS = 5.0
MAX_DELAY_SECONDS = 3600.0


def retry_delay(attempt: int, strategy: str = EXPONENTIAL, *, cap: float = MAX_DELAY_SECONDS) -> float:
    """Seconds to wait before the retry that follows failed attempt number ``attempt``.

    exponential: 1, 2, 4, 8 … s; linear: 5, 10, 15 … s; both capped at ``cap``.
    """
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if strategy == EXPONENTIAL:
        # Cap the exponent too, so a huge attempt number cannot overflow.
        delay = EXPONENTIAL_BASE_SECONDS * (2 ** min(attempt - 1, 32))
    elif strategy == LINEAR:
        delay = LINEAR_STEP_SECONDS * attempt
    else:
        raise ValueError(f"unknown backoff strategy {strategy!r}")
    return min(delay, cap)


def retry_schedule(max_attempts: int, strategy: str = EXPONENTIAL) -> list[float]:
    """The delays between the attempts of a job allowed ``max_attempts`` tries."""
    return [retry_delay(n, strategy) for n in range(1, max_attempts)]
