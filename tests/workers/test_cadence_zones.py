"""Cron in IANA zones across daylight-saving changes, jitter and catch-up: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from orchestration.fleet import cadence


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_it_reads_cron_as_wall_time_in_the_worker_zone():
    paris_9am = cadence.validate(None, "0 9 * * *", "Europe/Paris")
    # Winter: Paris is UTC+1; summer: UTC+2.
    assert cadence.next_run(paris_9am, utc(2026, 1, 10, 0, 0)) == utc(2026, 1, 10, 8, 0)
    assert cadence.next_run(paris_9am, utc(2026, 7, 10, 0, 0)) == utc(2026, 7, 10, 7, 0)


def test_it_never_loses_a_run_when_the_clock_springs_forward():
    # New York, 8 March 2026: 02:00 EST jumps to 03:00 EDT; 02:30 never shows.
    daily_0230 = cadence.validate(None, "30 2 * * *", "America/New_York")
    runs = cadence.runs_between(daily_0230, utc(2026, 3, 7, 0, 0), utc(2026, 3, 10, 0, 0))
    assert runs == [
        utc(2026, 3, 7, 7, 30),  # 02:30 EST
        utc(2026, 3, 8, 7, 0),  # the gap ends: 03:00 EDT
        utc(2026, 3, 9, 6, 30),  # 02:30 EDT
    ]


def test_it_never_runs_twice_when_the_clock_falls_back():
    # New York, 1 November 2026: 02:00 EDT falls back to 01:00 EST; 01:30 shows twice.
    daily_0130 = cadence.validate(None, "30 1 * * *", "America/New_York")
    runs = cadence.runs_between(daily_0130, utc(2026, 10, 31, 0, 0), utc(2026, 11, 3, 0, 0))
    assert runs == [utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]


def test_an_every_hour_cron_runs_in_both_passes_of_the_repeated_hour():
    hourly = cadence.validate(None, "15 * * * *", "America/New_York")
    runs = cadence.runs_between(hourly, utc(2026, 11, 1, 4, 0), utc(2026, 11, 1, 8, 0))
    # 00:15 EDT, 01:15 EDT, 01:15 EST, 02:15 EST: an hour apart each, as real time is.
    assert runs == [utc(2026, 11, 1, 4, 15), utc(2026, 11, 1, 5, 15), utc(2026, 11, 1, 6, 15), utc(2026, 11, 1, 7, 15)]
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(runs))


def test_next_runs_lists_five_due_times_in_order():
    every_4h = cadence.validate(None, "10 */4 * * *", "UTC")
    runs = cadence.next_runs(every_4h, utc(2026, 3, 10, 9, 0))
    assert [r.hour for r in runs] == [12, 16, 20, 0, 4] and all(r.minute == 10 for r in runs)


def test_it_refuses_a_zone_that_is_not_iana():
    with pytest.raises(cadence.CadenceError, match="IANA"):
        cadence.validate(None, "0 9 * * *", "Mars/Olympus")
    with pytest.raises(cadence.CadenceError, match="IANA"):
        cadence.validate(None, "0 9 * * *", "../../etc/passwd")


def test_jitter_is_the_same_for_a_due_time_everywhere_and_within_bounds():
    due = utc(2026, 3, 10, 10, 0)
    assert cadence.jitter("collector", due, 0) == 0
    values = {cadence.jitter("collector", due + timedelta(minutes=i), 30) for i in range(200)}
    assert values <= set(range(31)) and len(values) > 20  # spread, not constant
    assert cadence.jitter("collector", due, 30) == cadence.jitter("collector", due, 30)
    assert cadence.jitter("collector", due, 30) != cadence.jitter("other", due, 30) or cadence.jitter(
        "collector", due + timedelta(minutes=5), 30
    ) != cadence.jitter("other", due + timedelta(minutes=5), 30)


def test_catch_up_runs_missed_times_inside_the_window_oldest_first_and_counts_the_rest():
    every_5 = cadence.validate(300, "")
    # Down from 10:00 to 10:32; a 12-minute window keeps 10:20, 10:25, 10:30.
    firing = cadence.plan_firing(every_5, utc(2026, 3, 10, 10, 0), utc(2026, 3, 10, 10, 32), catch_up_seconds=720)
    assert firing.run == [utc(2026, 3, 10, 10, 20), utc(2026, 3, 10, 10, 25), utc(2026, 3, 10, 10, 30)]
    assert firing.missed == [utc(2026, 3, 10, 10, m) for m in (0, 5, 10, 15)]
    assert firing.next_due == utc(2026, 3, 10, 10, 35)


def test_a_reduced_cron_runs_every_second_due_time():
    hourly = cadence.validate(None, "5 * * * *")
    seen = []
    cursor, count = utc(2026, 3, 10, 10, 5), 0
    for hour in range(10, 16):
        firing = cadence.plan_firing(
            hourly, cursor, utc(2026, 3, 10, hour, 6), catch_up_seconds=120, rate_factor=2.0, due_count=count
        )
        seen += [(t.hour, "run") for t in firing.run] + [(t.hour, "skip") for t in firing.rate_skipped]
        cursor, count = firing.next_due, firing.due_count
    assert seen == [(10, "run"), (11, "skip"), (12, "run"), (13, "skip"), (14, "run"), (15, "skip")]
    assert "every 2nd due time" in hourly.describe(rate_factor=2.0)
