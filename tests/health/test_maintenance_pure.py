"""Maintenance windows, pure: when one is on and what it covers (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from health.maintenance import (
    Recurrence,
    WindowSpec,
    covers,
    current_occurrence,
    next_occurrence,
    quiet_services,
    recurrence_problem,
)

T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # a Sunday


def one_off(**kw) -> WindowSpec:
    return WindowSpec(starts_at=T0, ends_at=T0 + timedelta(hours=2), **kw)


def test_it_is_on_from_its_start_until_its_end_excluded():
    spec = one_off(all_services=True)
    assert current_occurrence(spec, T0 - timedelta(seconds=1)) is None
    assert current_occurrence(spec, T0) == (T0, T0 + timedelta(hours=2))
    assert current_occurrence(spec, T0 + timedelta(hours=2)) is None
    assert next_occurrence(spec, T0 - timedelta(minutes=1)) == (T0, T0 + timedelta(hours=2))
    assert next_occurrence(spec, T0 + timedelta(minutes=1)) is None


def test_a_weekly_window_opens_at_each_firing_for_its_duration():
    spec = WindowSpec(starts_at=T0, ends_at=None, recurrence=Recurrence("0 2 * * sun", 60))
    assert current_occurrence(spec, T0 + timedelta(hours=1)) is None
    assert current_occurrence(spec, T0 + timedelta(hours=2)) == (T0 + timedelta(hours=2), T0 + timedelta(hours=3))
    assert current_occurrence(spec, T0 + timedelta(hours=3)) is None
    week = T0 + timedelta(days=7, hours=2, minutes=30)
    assert current_occurrence(spec, week) is not None
    assert next_occurrence(spec, T0 + timedelta(hours=4))[0] == T0 + timedelta(days=7, hours=2)


def test_a_recurrence_follows_its_time_zone_and_stays_inside_its_span():
    paris = WindowSpec(
        starts_at=T0, ends_at=T0 + timedelta(days=3), recurrence=Recurrence("0 2 * * *", 30, "Europe/Paris")
    )
    # 02:00 in Paris in March (UTC+1) is 01:00 UTC.
    assert current_occurrence(paris, T0 + timedelta(hours=1, minutes=10)) is not None
    assert current_occurrence(paris, T0 + timedelta(hours=2, minutes=10)) is None
    assert current_occurrence(paris, T0 + timedelta(days=3, hours=1, minutes=10)) is None  # past ends_at
    assert next_occurrence(paris, T0 + timedelta(days=2, hours=2)) is None


def test_a_firing_before_the_window_starts_does_not_count():
    spec = WindowSpec(starts_at=T0 + timedelta(minutes=30), ends_at=None, recurrence=Recurrence("0 0 * * *", 60))
    assert current_occurrence(spec, T0 + timedelta(minutes=40)) is None


def test_it_covers_named_services_tagged_services_or_everything():
    assert covers(one_off(services=frozenset({"db"})), "db", [])
    assert not covers(one_off(services=frozenset({"db"})), "web", ["db"])
    assert covers(one_off(tags=frozenset({"eu"})), "web", ["eu", "prod"])
    assert covers(one_off(all_services=True), "anything", [])
    services = {"db": ["eu"], "web": [], "cache": ["us"]}
    specs = [
        one_off(tags=frozenset({"eu"})),
        WindowSpec(T0 + timedelta(days=1), T0 + timedelta(days=2), all_services=True),
    ]
    assert quiet_services(specs, services, T0 + timedelta(minutes=5)) == {"db"}
    assert quiet_services(specs, services, T0 + timedelta(days=1, hours=1)) == {"db", "web", "cache"}


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"cron": "every sunday", "duration_minutes": 60}, "cron"),
        ({"cron": "0 2 * * sun", "duration_minutes": 0}, "duration_minutes"),
        ({"cron": "0 2 * * sun", "duration_minutes": 60, "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 2 * * sun", "duration_minutes": 60, "every": 2}, "object"),
        ("weekly", "object"),
    ],
)
def test_a_bad_recurrence_says_which_part_is_wrong(value, problem):
    assert problem in recurrence_problem(value)


def test_a_good_recurrence_or_none_is_fine():
    assert recurrence_problem(None) is None
    assert recurrence_problem({"cron": "0 2 * * sun", "duration_minutes": 60, "timezone": "Europe/Paris"}) is None


# --- the weekly shape ---------------------------------------------------------------
def test_a_weekly_window_is_written_as_cron_and_read_back_as_its_parts():
    from datetime import time

    from health.maintenance import Weekly, weekly_of, weekly_recurrence

    weekly = Weekly(("fri", "mon"), time(2, 30), 90, "Europe/Paris")
    stored = weekly_recurrence(weekly)
    assert stored == {"cron": "30 2 * * mon,fri", "duration_minutes": 90, "timezone": "Europe/Paris"}
    assert recurrence_problem(stored) is None
    assert weekly_of(stored) == Weekly(("mon", "fri"), time(2, 30), 90, "Europe/Paris")
    # Mondays 02:30 in Paris is 01:30 UTC in March (CET): on from then for 90 minutes.
    spec = WindowSpec(starts_at=T0, ends_at=None, recurrence=Recurrence(**stored))
    monday = T0 + timedelta(days=1, hours=1, minutes=30)
    assert current_occurrence(spec, monday) == (monday, monday + timedelta(minutes=90))
    assert current_occurrence(spec, monday - timedelta(minutes=1)) is None
    assert current_occurrence(spec, T0 + timedelta(days=2, hours=1, minutes=45)) is None  # a Tuesday


def test_other_recurrences_are_not_read_as_weekly():
    from health.maintenance import weekly_of

    for cron in ("0 2 1 * *", "0 2 * * 1-5", "*/5 * * * *", "0 2 * * 1"):
        assert weekly_of({"cron": cron, "duration_minutes": 30}) is None
    assert weekly_of(None) is None


@pytest.mark.parametrize(
    "days, start, minutes, zone, part",
    [
        ([], "02:00", 60, "UTC", "days"),
        (["someday"], "02:00", 60, "UTC", "days"),
        (["mon"], None, 60, "UTC", "start"),
        (["mon"], "02:00:30", 60, "UTC", "start"),
        (["mon"], "02:00", 0, "UTC", "duration_minutes"),
        (["mon"], "02:00", 7 * 24 * 60 + 1, "UTC", "duration_minutes"),
        (["mon"], "02:00", 60, "Mars/Olympus", "timezone"),
    ],
)
def test_a_weekly_window_names_the_part_at_fault(days, start, minutes, zone, part):
    from datetime import time

    from health.maintenance import weekly_problem

    assert set(weekly_problem(days, time.fromisoformat(start) if start else None, minutes, zone)) == {part}
