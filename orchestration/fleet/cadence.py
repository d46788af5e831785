"""Cadence arithmetic: when a worker is due next, in UTC. Pure: no Django.

A worker has either an interval (seconds, a whole number of minutes because
django-q2's smallest schedule step is one minute) or a five-field cron expression
read in UTC. ``schedule_fields`` turns that into the fields of a django-q2
``Schedule`` so the cluster fires it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

MIN_INTERVAL_SECONDS = 60


class CadenceError(ValueError):
    pass


@dataclass(frozen=True)
class Cadence:
    interval_seconds: int | None = None
    cron: str = ""

    @property
    def kind(self) -> str:
        if self.cron:
            return "cron"
        if self.interval_seconds:
            return "interval"
        return "none"

    def describe(self) -> str:
        if self.cron:
            return f"cron {self.cron} (UTC)"
        if self.interval_seconds:
            return f"every {_human(self.interval_seconds)}"
        return "on demand"


def _human(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def validate(interval_seconds: int | None, cron: str) -> Cadence:
    """A valid cadence, or CadenceError saying what is wrong."""
    cron = (cron or "").strip()
    if interval_seconds and cron:
        raise CadenceError("give either interval_seconds or cron, not both")
    if cron:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise CadenceError(f"{cron!r} is not a five-field cron expression (minute hour day month weekday)")
        # Valid syntax may name a day that never comes (30 February): its schedule could
        # not be built, and the worker was saved without one.
        try:
            croniter(cron, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
        except CroniterBadDateError:
            raise CadenceError(f"{cron!r} never fires: no date matches it") from None
        return Cadence(cron=cron)
    if interval_seconds is not None and interval_seconds != 0:
        if interval_seconds < MIN_INTERVAL_SECONDS or interval_seconds % 60:
            raise CadenceError("interval_seconds must be a whole number of minutes (60, 120, …)")
        return Cadence(interval_seconds=int(interval_seconds))
    return Cadence()


def effective_interval(interval_seconds: int, rate_factor: float) -> int:
    """The interval after a rate reduction, rounded up to whole minutes."""
    return int(math.ceil(interval_seconds * max(1.0, rate_factor) / 60.0) * 60)


def next_run(cadence: Cadence, after: datetime, *, rate_factor: float = 1.0) -> datetime | None:
    """The first due time strictly after ``after`` (UTC).

    Intervals are aligned to the epoch (an hourly worker runs at :00), so every
    process computes the same due times.
    """
    after = after.astimezone(UTC)
    if cadence.cron:
        return croniter(cadence.cron, after).get_next(datetime).astimezone(UTC)
    if cadence.interval_seconds:
        step = effective_interval(cadence.interval_seconds, rate_factor)
        epoch = int(after.timestamp())
        return datetime.fromtimestamp((epoch // step + 1) * step, tz=UTC)
    return None


def runs_between(cadence: Cadence, start: datetime, end: datetime, *, rate_factor: float = 1.0) -> list[datetime]:
    """Every due time in (start, end]; for previews and tests."""
    out: list[datetime] = []
    cursor = start
    while True:
        due = next_run(cadence, cursor, rate_factor=rate_factor)
        if due is None or due > end:
            return out
        out.append(due)
        cursor = due


def schedule_fields(cadence: Cadence, now: datetime, *, rate_factor: float = 1.0) -> dict | None:
    """Fields of the django-q2 Schedule for this cadence (None: no schedule)."""
    due = next_run(cadence, now, rate_factor=rate_factor)
    if due is None:
        return None
    if cadence.cron:
        return {"schedule_type": "C", "cron": cadence.cron, "minutes": None, "next_run": due}
    minutes = effective_interval(cadence.interval_seconds or 60, rate_factor) // 60
    return {"schedule_type": "I", "minutes": minutes, "cron": None, "next_run": due}


def late_by(due: datetime, started: datetime) -> timedelta:
    return started - due
