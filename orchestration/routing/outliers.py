"""Passive outlier detection, cooldowns and retry budgets for routed tasks. Pure: plain
data in, decisions out; the models persist the state and apply these rules.

Outlier detection watches what routed tries actually got from ``/process``, apart from
the active health check (a service whose ``/health`` passes while ``/process`` answers
500 is still ejected). Per (service, task type):

- ``consecutive_failures`` failures in a row eject it, or a failure rate of at least
  ``failure_rate`` over ``window_seconds`` once ``min_requests`` tries were seen;
- each new ejection lasts longer (``base_ejection_seconds`` × how many times it was
  ejected, up to ``max_ejection_seconds``); the count starts again after a quiet spell;
- at most ``max_ejected_share`` of a capability's services are ejected at once, so a
  wide outage degrades to trying everyone instead of routing to nobody;
- when an ejection's time is up the service still takes no traffic but one probe: a
  single routed try, sent by the one process that claims it. Its success ends the
  ejection; its failure (the service is on probation) ejects it again, for longer. A
  success while still ejected (every other service failed too) ends it early;
- an ejection the guardrails hold back (hourly limit, loop protection) leaves the
  service in full traffic: the automation is what is paused, not the service.

A 429 or 503 with ``Retry-After`` sets a cooldown of that length instead (the service
asked for it): no share cap, reason ``retry_after``.

Retry budget per task type: retries may be at most ``ratio`` of first tries over a
sliding window (two fixed buckets, the previous one weighted by how much of it still
overlaps the window), and never fewer than ``min_retries``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from orchestration.core.retry_after import parse_retry_after  # noqa: F401  (its callers import it from here)

RETRY_AFTER = "retry_after"
MAX_RETRY_AFTER_SECONDS = 600.0


@dataclass(frozen=True)
class OutlierConfig:
    consecutive_failures: int = 5
    failure_rate: float = 0.5
    min_requests: int = 10
    window_seconds: float = 30.0
    base_ejection_seconds: float = 30.0
    max_ejection_seconds: float = 300.0
    max_ejected_share: float = 0.5

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> OutlierConfig:
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class OutlierStatus:
    """What is known of one (service, task type); mirrors the persisted row."""

    consecutive_failures: int = 0
    window_started_at: datetime | None = None
    window_requests: int = 0
    window_failures: int = 0
    ejections: int = 0
    ejected_at: datetime | None = None
    until: datetime | None = None
    reason: str = ""
    probation: bool = False
    ended_at: datetime | None = None

    def ejected(self, now: datetime) -> bool:
        return self.until is not None and now < self.until

    def awaiting_probe(self, now: datetime) -> bool:
        """The ejection's time is up but no probe has succeeded yet."""
        return self.probation and self.until is not None and now >= self.until


# Transitions, also the suffix of the ledger event (routing.<name>).
EJECTED = "ejected"
EJECTION_ENDED = "ejection_ended"
COOLDOWN = "cooldown"


@dataclass(frozen=True)
class Observation:
    status: OutlierStatus
    transition: str | None = None
    # The ejection rules fired but the share cap held it back (said in the ledger).
    held_back: str = ""


def ejection_seconds(ejections: int, config: OutlierConfig) -> float:
    """How long the ``ejections``-th ejection lasts (1-based)."""
    return min(config.base_ejection_seconds * max(1, ejections), config.max_ejection_seconds)


def may_eject(already_ejected: int, capable: int, config: OutlierConfig) -> bool:
    """The share cap: at least one of two or more services may always be ejected; a
    lone service never is (there is nowhere else to go)."""
    if capable < 2:
        return False
    allowed = max(1, math.floor(config.max_ejected_share * capable))
    return already_ejected < allowed


def observe(
    status: OutlierStatus,
    success: bool,
    now: datetime,
    config: OutlierConfig,
    *,
    ejectable: bool = True,
    what: str = "",
) -> Observation:
    """Fold one routed try into the status. ``ejectable`` is the share cap's answer for
    this task type right now; ``what`` describes a failure for the reason."""
    window_started = status.window_started_at
    requests, failures = status.window_requests, status.window_failures
    if window_started is None or now - window_started >= timedelta(seconds=config.window_seconds):
        window_started, requests, failures = now, 0, 0
    requests += 1
    failures += 0 if success else 1
    status = replace(status, window_started_at=window_started, window_requests=requests, window_failures=failures)

    if success:
        status = replace(status, consecutive_failures=0)
        if status.ejected(now) or status.probation:
            ended = replace(status, until=None, probation=False, ended_at=now, reason="")
            return Observation(ended, EJECTION_ENDED)
        return Observation(status)

    status = replace(status, consecutive_failures=status.consecutive_failures + 1)
    if status.ejected(now):
        return Observation(status)  # a try that was already in flight: counted, nothing more
    reason = _ejection_reason(status, config, what)
    if not reason:
        return Observation(status)
    if not ejectable:
        # Back in full traffic: nothing keeps the service out any longer.
        back = replace(status, probation=False, until=None) if status.probation else status
        return Observation(back, held_back=reason)
    # A service that stayed out of trouble for a long while starts again from one.
    quiet = status.ended_at is not None and now - status.ended_at > timedelta(seconds=config.max_ejection_seconds)
    count = 1 if quiet else status.ejections + 1
    ejected = replace(
        status,
        ejections=count,
        ejected_at=now,
        until=now + timedelta(seconds=ejection_seconds(count, config)),
        reason=reason,
        probation=True,
        # A fresh window after an ejection: the old failures already had their effect.
        window_started_at=now,
        window_requests=0,
        window_failures=0,
    )
    return Observation(ejected, EJECTED)


def _ejection_reason(status: OutlierStatus, config: OutlierConfig, what: str) -> str:
    last = f" (last: {what})" if what else ""
    if status.probation:
        return f"failed on probation after ejection {status.ejections}{last}"
    if status.consecutive_failures >= config.consecutive_failures:
        return f"{status.consecutive_failures} consecutive failures{last}"
    if status.window_requests >= config.min_requests:
        rate = status.window_failures / status.window_requests
        if rate >= config.failure_rate:
            return (
                f"failure rate {rate:.0%} over {status.window_requests} tries in {config.window_seconds:g} s"
                f" (limit {config.failure_rate:.0%}){last}"
            )
    return ""


def recovered(requests: int, failures: int, config: OutlierConfig) -> tuple[bool, str]:
    """The later check of an ejection that ended: did the service's routed tries since
    then fail below the rate that ejects? (Ejected again before the check: it did not.)"""
    rate = failures / requests if requests else 0.0
    effective = rate < config.failure_rate
    return effective, (
        f"{requests - failures}/{requests} routed tries succeeded after the ejection ended "
        f"(failure rate {rate:.0%}, ejection at {config.failure_rate:.0%})"
    )


def cooldown(status: OutlierStatus, seconds: float, now: datetime, what: str) -> Observation:
    """The service asked us to stay away (``Retry-After``): honour it, without counting
    it as an ejection."""
    seconds = min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)
    until = now + timedelta(seconds=seconds)
    if status.until is not None and status.until >= until:
        return Observation(status)
    return Observation(replace(status, ejected_at=now, until=until, reason=RETRY_AFTER, probation=False), COOLDOWN)


def error_class(status_code: int | None, error: str) -> str:
    """A coarse class for grouping failures in memory and reasons."""
    if status_code is None:
        lowered = error.lower()
        if "timed out" in lowered or "timeout" in lowered:
            return "timeout"
        if "refused" in lowered and "outbound" in lowered:
            return "outbound_refused"
        return "connection"
    if status_code == 429:
        return "rate_limited"
    if 500 <= status_code < 600:
        return "http_5xx"
    if 400 <= status_code < 500:
        return "http_4xx"
    return "http_other"


# --- retry budget ------------------------------------------------------------------------
@dataclass(frozen=True)
class BudgetConfig:
    ratio: float = 0.2
    min_retries: int = 3
    window_seconds: float = 10.0

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> BudgetConfig:
        known = {k: v for k, v in (values or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def bucket_start(now: datetime, config: BudgetConfig) -> datetime:
    """The start of the fixed bucket ``now`` falls in (aligned, so every process agrees)."""
    width = config.window_seconds
    seconds = math.floor(now.timestamp() / width) * width
    return datetime.fromtimestamp(seconds, tz=now.tzinfo)


def previous_weight(now: datetime, config: BudgetConfig) -> float:
    """How much of the previous bucket still lies inside the sliding window."""
    into = (now - bucket_start(now, config)).total_seconds() / config.window_seconds
    return max(0.0, 1.0 - into)


def retry_limit(first_tries: float, config: BudgetConfig) -> float:
    return max(float(config.min_retries), config.ratio * first_tries)


def budget_allows(
    first_tries: int, retries: int, prev_first_tries: int, prev_retries: int, weight: float, config: BudgetConfig
) -> bool:
    """May one more retry go out? Counts are the current and previous bucket's."""
    firsts = first_tries + prev_first_tries * weight
    spent = retries + prev_retries * weight
    return spent + 1 <= retry_limit(firsts, config)
