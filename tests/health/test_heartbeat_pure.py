"""The heartbeat verdict: a pure function of its settings, its pings and the time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from health.kinds import CheckConfigError, get_kind
from health.kinds.heartbeat import heartbeat_verdict

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOURLY = {"period_seconds": 3600, "grace_seconds": 300}


def state(**kw):
    return {"last_ping_at": None, "last_ping_kind": "", "last_start_at": None, "created_at": T0, **kw}


def test_it_is_up_until_period_plus_grace_after_the_last_ping():
    pinged = state(last_ping_at=T0, last_ping_kind="success")
    assert heartbeat_verdict(HOURLY, pinged, T0 + timedelta(minutes=64)) is None
    late = heartbeat_verdict(HOURLY, pinged, T0 + timedelta(minutes=66))
    assert late == "late: last ping at 2026-03-02 12:00:00 UTC; one was due by 2026-03-02 13:05:00 UTC (grace included)"


def test_a_new_heartbeat_counts_from_its_creation():
    assert heartbeat_verdict(HOURLY, state(), T0 + timedelta(minutes=60)) is None
    assert heartbeat_verdict(HOURLY, state(), T0 + timedelta(minutes=66)).startswith(
        "late: no ping since it was created"
    )


def test_a_fail_ping_is_down_at_once():
    verdict = heartbeat_verdict(HOURLY, state(last_ping_at=T0, last_ping_kind="fail"), T0 + timedelta(seconds=1))
    assert verdict == "the job reported failure at 2026-03-02 12:00:00 UTC"


def test_a_start_without_success_within_grace_is_down():
    started = state(last_ping_at=T0, last_ping_kind="success", last_start_at=T0 + timedelta(minutes=30))
    assert heartbeat_verdict(HOURLY, started, T0 + timedelta(minutes=34)) is None
    assert "has not reported success" in heartbeat_verdict(HOURLY, started, T0 + timedelta(minutes=36))
    finished = {**started, "last_ping_at": T0 + timedelta(minutes=31)}
    assert heartbeat_verdict(HOURLY, finished, T0 + timedelta(minutes=36)) is None


def test_a_cron_schedule_expects_the_ping_after_the_next_fire_time_in_its_zone():
    # 09:00 every weekday in Paris (UTC+1 in March before DST): 08:00 UTC.
    daily = {"cron": "0 9 * * 1-5", "timezone": "Europe/Paris", "grace_seconds": 600}
    pinged = state(last_ping_at=datetime(2026, 3, 2, 8, 1, tzinfo=UTC), last_ping_kind="success")  # Monday
    assert heartbeat_verdict(daily, pinged, datetime(2026, 3, 3, 8, 9, tzinfo=UTC)) is None
    assert heartbeat_verdict(daily, pinged, datetime(2026, 3, 3, 8, 11, tzinfo=UTC)).startswith("late:")
    friday = state(last_ping_at=datetime(2026, 3, 6, 8, 1, tzinfo=UTC), last_ping_kind="success")
    assert heartbeat_verdict(daily, friday, datetime(2026, 3, 8, 20, 0, tzinfo=UTC)) is None  # Sunday: none due


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "period_seconds"),
        ({"period_seconds": 0}, "period_seconds"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "0 9 * * *", "period_seconds": 60}, "cron"),
        ({"period_seconds": 60, "grace_seconds": -1}, "grace_seconds"),
        ({"period_seconds": 60, "every": 3}, "every"),
    ],
)
def test_bad_settings_name_the_field(config, field):
    with pytest.raises(CheckConfigError) as caught:
        get_kind("heartbeat").clean(config)
    assert caught.value.field == field
