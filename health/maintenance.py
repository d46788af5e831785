"""Maintenance windows, pure: when a window is on, and which services it covers.

A window is one-off (``starts_at`` → ``ends_at``) or recurring: a cron expression
(a weekly window is one, e.g. ``0 2 * * sun``) in a time zone, each firing opening
the window for ``duration_minutes``, between ``starts_at`` and ``ends_at`` (open-ended
when ``ends_at`` is empty). During a window nothing alerts about the services it
covers; checks, breakers and uptime go on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MAX_DURATION_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class Recurrence:
    cron: str
    duration_minutes: int
    timezone: str = "UTC"


@dataclass(frozen=True)
class WindowSpec:
    starts_at: datetime
    ends_at: datetime | None
    recurrence: Recurrence | None = None
    services: frozenset[str] = field(default_factory=frozenset)
    tags: frozenset[str] = field(default_factory=frozenset)
    all_services: bool = False


def recurrence_problem(value: object) -> str | None:
    """Why ``value`` is not a recurrence object, or None (None itself is fine: one-off)."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or set(value) - {"cron", "duration_minutes", "timezone"}:
        return "An object with cron, duration_minutes and optionally timezone."
    cron, minutes, zone = value.get("cron"), value.get("duration_minutes"), value.get("timezone", "UTC")
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        return "cron: a five-field cron expression, e.g. '0 2 * * sun' (Sundays at 02:00)."
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= MAX_DURATION_MINUTES:
        return f"duration_minutes: a whole number from 1 to {MAX_DURATION_MINUTES}."
    try:
        ZoneInfo(zone) if isinstance(zone, str) and zone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if not isinstance(zone, str) or not zone:
        return "timezone: an IANA time zone name, e.g. Europe/Paris."
    return None


# --- the weekly shape: what a person picks instead of writing cron -----------------
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # cron's names, in ISO order
_WEEKLY = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* ([a-z]{3}(?:,[a-z]{3})*)$")


@dataclass(frozen=True)
class Weekly:
    days: tuple[str, ...]  # of WEEKDAYS, in that order
    start: time
    duration_minutes: int
    timezone: str = "UTC"


def weekly_problem(days: Iterable[str], start: time | None, duration_minutes: int | None, zone: str) -> dict[str, str]:
    """What is wrong with a weekly window's parts, by part (empty when nothing is)."""
    problems: dict[str, str] = {}
    picked = list(days)
    if not picked or set(picked) - set(WEEKDAYS):
        problems["days"] = f"Pick at least one day ({', '.join(WEEKDAYS)})."
    if start is None:
        problems["start"] = "A start time, e.g. 02:00."
    elif start.second or start.microsecond:
        problems["start"] = "Whole minutes, e.g. 02:30."
    if (
        not isinstance(duration_minutes, int)
        or isinstance(duration_minutes, bool)
        or not 1 <= duration_minutes <= MAX_DURATION_MINUTES
    ):
        problems["duration_minutes"] = f"A whole number of minutes from 1 to {MAX_DURATION_MINUTES}."
    try:
        ZoneInfo(zone) if zone else None
    except (ZoneInfoNotFoundError, ValueError):
        zone = ""
    if not zone:
        problems["timezone"] = "An IANA time zone name, e.g. Europe/Paris."
    return problems


def weekly_recurrence(weekly: Weekly) -> dict:
    """The stored recurrence (cron, duration, time zone) of a weekly window."""
    days = ",".join(d for d in WEEKDAYS if d in weekly.days)
    cron = f"{weekly.start.minute} {weekly.start.hour} * * {days}"
    return {"cron": cron, "duration_minutes": weekly.duration_minutes, "timezone": weekly.timezone}


def weekly_of(recurrence: dict | None) -> Weekly | None:
    """The weekly parts of a stored recurrence, or None when it is not of that shape
    (another cron stays as written)."""
    if not recurrence or recurrence_problem(recurrence):
        return None
    match = _WEEKLY.match(recurrence["cron"].strip().lower())
    if match is None:
        return None
    minute, hour, days = int(match[1]), int(match[2]), match[3].split(",")
    if minute > 59 or hour > 23 or set(days) - set(WEEKDAYS):
        return None
    ordered = tuple(d for d in WEEKDAYS if d in days)
    return Weekly(ordered, time(hour, minute), recurrence["duration_minutes"], recurrence.get("timezone") or "UTC")


def parse_recurrence(value: dict | None) -> Recurrence | None:
    if not value:
        return None
    return Recurrence(value["cron"], int(value["duration_minutes"]), value.get("timezone") or "UTC")


def current_occurrence(spec: WindowSpec, now: datetime) -> tuple[datetime, datetime] | None:
    """The (start, end) of the occurrence ``now`` falls in, or None when the window is off."""
    if now < spec.starts_at or (spec.ends_at is not None and now >= spec.ends_at):
        return None
    if spec.recurrence is None:
        return (spec.starts_at, spec.ends_at) if spec.ends_at is not None else None
    zone = ZoneInfo(spec.recurrence.timezone)
    # The latest firing at or before now (a firing exactly now counts).
    fired = croniter(spec.recurrence.cron, now.astimezone(zone) + timedelta(seconds=1)).get_prev(datetime)
    start = fired.astimezone(UTC)
    end = start + timedelta(minutes=spec.recurrence.duration_minutes)
    if start < spec.starts_at or now >= end:
        return None  # (a firing before the window's start does not count)
    return start, min(end, spec.ends_at) if spec.ends_at is not None else end


def next_occurrence(spec: WindowSpec, now: datetime) -> tuple[datetime, datetime] | None:
    """The next occurrence that starts after ``now``, or None when there is none."""
    if spec.recurrence is None:
        if spec.ends_at is None or spec.starts_at <= now:
            return None
        return spec.starts_at, spec.ends_at
    zone = ZoneInfo(spec.recurrence.timezone)
    start = croniter(spec.recurrence.cron, max(now, spec.starts_at).astimezone(zone)).get_next(datetime)
    start = start.astimezone(UTC)
    if spec.ends_at is not None and start >= spec.ends_at:
        return None
    end = start + timedelta(minutes=spec.recurrence.duration_minutes)
    return start, min(end, spec.ends_at) if spec.ends_at else end


def covers(spec: WindowSpec, name: str, tags: Iterable[str]) -> bool:
    return spec.all_services or name in spec.services or bool(spec.tags & set(tags))


def quiet_services(specs: Sequence[WindowSpec], services: dict[str, Sequence[str]], now: datetime) -> set[str]:
    """Names (of ``services``: name → tags) under an active window at ``now``."""
    active = [spec for spec in specs if current_occurrence(spec, now) is not None]
    if not active:
        return set()
    return {name for name, tags in services.items() if any(covers(spec, name, tags) for spec in active)}
