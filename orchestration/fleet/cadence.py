"""Cadence arithmetic: when a worker is due, in any IANA time zone. Pure: no Django.

A worker has either an interval (seconds, a whole number of minutes) or a five-field
cron expression read as wall-clock time in the worker's zone (default UTC).

Daylight saving, the rules every function here follows:

* a wall time the clock skips (02:30 on a spring-forward night) runs when the gap
  ends (03:00), so no run is lost;
* a wall time the clock shows twice (01:30 on a fall-back night) runs once, at its
  first occurrence, so nothing runs twice; except a cron whose hour field is ``*``:
  it runs every hour, and the repeated hour is a real hour, so it runs in both.

Intervals are elapsed time aligned to the Unix epoch (an hourly worker runs at :00
UTC), so the zone does not change them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

MIN_INTERVAL_SECONDS = 60
# How far back the search for the next due time starts, in wall time: the largest
# offset change of any zone is 2 h (Antarctica/Troll), so 3 h covers every fold.
_FOLD_MARGIN = timedelta(hours=3)


class CadenceError(ValueError):
    pass


@dataclass(frozen=True)
class Cadence:
    interval_seconds: int | None = None
    cron: str = ""
    timezone: str = "UTC"

    @property
    def kind(self) -> str:
        if self.cron:
            return "cron"
        if self.interval_seconds:
            return "interval"
        return "none"

    def describe(self, *, rate_factor: float = 1.0) -> str:
        if self.cron:
            text = f"cron {self.cron} ({self.timezone})"
            every = cron_stride(rate_factor)
            return text + (f", every {_ordinal(every)} due time (rate reduced)" if every > 1 else "")
        if self.interval_seconds:
            step = effective_interval(self.interval_seconds, rate_factor)
            text = f"every {_human(step)}"
            return text + (
                f" (rate reduced from {_human(self.interval_seconds)})" if step != self.interval_seconds else ""
            )
        return "on demand"


def _ordinal(n: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _human(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def validate_timezone(name: str) -> str:
    """The zone's name if it is an IANA zone, else CadenceError."""
    name = (name or "").strip() or "UTC"
    if name not in available_timezones() and name != "UTC":
        raise CadenceError(f"{name!r} is not an IANA time zone (for example Europe/Paris or America/New_York)")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CadenceError(f"{name!r} is not an IANA time zone") from None
    return name


def validate(interval_seconds: int | None, cron: str, timezone: str = "UTC") -> Cadence:
    """A valid cadence, or CadenceError saying what is wrong."""
    cron = (cron or "").strip()
    zone = validate_timezone(timezone)
    if interval_seconds and cron:
        raise CadenceError("give either interval_seconds or cron, not both")
    if cron:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise CadenceError(f"{cron!r} is not a five-field cron expression (minute hour day month weekday)")
        # Valid syntax may name a day that never comes (30 February).
        try:
            croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            raise CadenceError(f"{cron!r} never fires: no date matches it") from None
        return Cadence(cron=cron, timezone=zone)
    if interval_seconds is not None and interval_seconds != 0:
        if interval_seconds < MIN_INTERVAL_SECONDS or interval_seconds % 60:
            raise CadenceError("interval_seconds must be a whole number of minutes (60, 120, …)")
        return Cadence(interval_seconds=int(interval_seconds), timezone=zone)
    return Cadence(timezone=zone)


def effective_interval(interval_seconds: int, rate_factor: float) -> int:
    """The interval after a rate reduction, rounded up to whole minutes."""
    return int(math.ceil(interval_seconds * max(1.0, rate_factor) / 60.0) * 60)


def cron_stride(rate_factor: float) -> int:
    """A cron worker under a rate reduction runs one due time in this many."""
    return max(1, math.ceil(rate_factor - 1e-9))


# --- wall time ↔ UTC ------------------------------------------------------------------
def _instants(wall: datetime, zone: ZoneInfo, *, both_folds: bool) -> list[datetime]:
    """The UTC instants at which the clock in ``zone`` shows ``wall`` (naive)."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    u0, u1 = first.astimezone(UTC), second.astimezone(UTC)
    if u0.astimezone(zone).replace(tzinfo=None) != wall:
        return [_gap_end(u1, u0, zone)]  # the clock skips this wall time
    if u0 != u1:  # shown twice
        early, late = sorted((u0, u1))
        return [early, late] if both_folds else [early]
    return [u0]


def _gap_end(low: datetime, high: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after a spring-forward gap, between two UTC bounds."""
    low, high = min(low, high), max(low, high)
    before = low.astimezone(zone).utcoffset()
    while (high - low) > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).utcoffset() == before:
            low = mid
        else:
            high = mid
    return high.replace(microsecond=0)


def next_run(cadence: Cadence, after: datetime, *, rate_factor: float = 1.0) -> datetime | None:
    """The first due time strictly after ``after``, in UTC.

    For cron, ``rate_factor`` is not applied here (a reduced cron worker keeps its
    due times and skips some of them, see ``cron_stride``).
    """
    after = after.astimezone(UTC)
    if cadence.cron:
        zone = ZoneInfo(cadence.timezone)
        every_hour = cadence.cron.split()[1] == "*"
        start = after.astimezone(zone).replace(tzinfo=None) - _FOLD_MARGIN
        it = croniter(cadence.cron, start)
        best: datetime | None = None
        while True:
            wall = it.get_next(datetime)
            if best is not None and wall - _FOLD_MARGIN > best.astimezone(zone).replace(tzinfo=None):
                return best
            for instant in _instants(wall, zone, both_folds=every_hour):
                if instant > after and (best is None or instant < best):
                    best = instant
    if cadence.interval_seconds:
        step = effective_interval(cadence.interval_seconds, rate_factor)
        epoch = int(after.timestamp())
        return datetime.fromtimestamp((epoch // step + 1) * step, tz=UTC)
    return None


def next_runs(cadence: Cadence, after: datetime, count: int = 5, *, rate_factor: float = 1.0) -> list[datetime]:
    """The next ``count`` due times after ``after`` (what API, admin and console show)."""
    out: list[datetime] = []
    cursor = after
    while len(out) < count:
        due = next_run(cadence, cursor, rate_factor=rate_factor)
        if due is None:
            break
        out.append(due)
        cursor = due
    return out


def runs_between(
    cadence: Cadence, start: datetime, end: datetime, *, rate_factor: float = 1.0, limit: int = 100_000
) -> list[datetime]:
    """Every due time in (start, end]."""
    out: list[datetime] = []
    cursor = start
    while len(out) < limit:
        due = next_run(cadence, cursor, rate_factor=rate_factor)
        if due is None or due > end:
            break
        out.append(due)
        cursor = due
    return out


# --- firing -----------------------------------------------------------------------------
def jitter(worker: str, due: datetime, jitter_seconds: int) -> int:
    """Seconds (0..jitter_seconds) this due time waits. A hash of worker and due time,
    so every node computes the same delay and a retried firing does not move it."""
    if jitter_seconds <= 0:
        return 0
    digest = hashlib.sha256(f"{worker}|{due.astimezone(UTC).isoformat()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (jitter_seconds + 1)


@dataclass(frozen=True)
class Firing:
    """What a scheduler does with a worker whose due time has come."""

    run: list[datetime]  # due times to run now, oldest first
    missed: list[datetime]  # due times outside the catch-up window: skipped, counted
    rate_skipped: list[datetime]  # due times a rate reduction skips (cron: every Nth runs)
    next_due: datetime | None  # the cursor's new value
    due_count: int  # due times seen so far (drives the cron stride)


def plan_firing(
    cadence: Cadence,
    due: datetime,
    now: datetime,
    *,
    catch_up_seconds: int,
    rate_factor: float = 1.0,
    due_count: int = 0,
    max_runs: int = 1000,
) -> Firing:
    """Every due time from ``due`` (the stored cursor) up to ``now``: those inside the
    catch-up window run, oldest first; older ones are missed. Pure."""
    times: list[datetime] = []
    cursor = due
    while cursor is not None and cursor <= now:
        times.append(cursor)
        cursor = next_run(cadence, cursor, rate_factor=rate_factor)
        if len(times) > max_runs * 10:  # a decade of minutes: skip ahead instead
            cursor = next_run(cadence, now, rate_factor=rate_factor)
            break
    horizon = now - timedelta(seconds=max(0, catch_up_seconds))
    missed = [t for t in times if t < horizon]
    inside = [t for t in times if t >= horizon]
    if len(inside) > max_runs:
        missed += inside[:-max_runs]
        inside = inside[-max_runs:]
    stride = cron_stride(rate_factor) if cadence.cron else 1
    run, rate_skipped = [], []
    count = due_count
    keep = set(inside)
    for t in times:
        if t in keep:
            (run if count % stride == 0 else rate_skipped).append(t)
        count += 1
    return Firing(run=run, missed=missed, rate_skipped=rate_skipped, next_due=cursor, due_count=count)


def late_by(due: datetime, started: datetime) -> timedelta:
    return started - due
