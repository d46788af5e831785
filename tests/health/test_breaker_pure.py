"""The breaker's rules, with no database and no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from health import breaker
from health.breaker import BreakerConfig, BreakerStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CFG = BreakerConfig()


def fail_times(status: BreakerStatus, n: int, now: datetime = T0) -> tuple[BreakerStatus, list[str | None]]:
    transitions = []
    for _ in range(n):
        status, t = breaker.apply_result(status, CFG, False, now)
        transitions.append(t)
    return status, transitions


def test_it_has_the_documented_defaults():
    assert (CFG.failure_threshold, CFG.success_threshold, CFG.open_timeout_seconds) == (5, 2, 60)


def test_it_opens_on_the_fifth_consecutive_failure_only():
    status, transitions = fail_times(BreakerStatus(), 5)
    assert transitions == [None, None, None, None, "opened"]
    assert status.state == breaker.OPEN and status.opened_at == T0 and status.consecutive_failures == 5


def test_a_success_between_failures_resets_the_count():
    status, _ = fail_times(BreakerStatus(), 4)
    status, t = breaker.apply_result(status, CFG, True, T0)
    assert t is None and status.consecutive_failures == 0
    status, transitions = fail_times(status, 4)
    assert status.state == breaker.CLOSED and transitions == [None] * 4


def test_open_refuses_until_the_timeout_then_lets_exactly_one_trial_through():
    status, _ = fail_times(BreakerStatus(), 5)
    refused = breaker.allow(status, CFG, T0 + timedelta(seconds=59.9))
    assert not refused.allowed and refused.status == status

    first = breaker.allow(status, CFG, T0 + timedelta(seconds=60))
    assert first.allowed and first.transition == "half_opened" and first.status.state == breaker.HALF_OPEN
    second = breaker.allow(first.status, CFG, T0 + timedelta(seconds=61))
    assert not second.allowed and second.transition is None


def test_two_half_open_successes_close_it_one_trial_at_a_time():
    status, _ = fail_times(BreakerStatus(), 5)
    now = T0 + timedelta(seconds=60)
    status = breaker.allow(status, CFG, now).status
    status, t = breaker.apply_result(status, CFG, True, now)
    assert t is None and status.state == breaker.HALF_OPEN and status.trial_started_at is None
    nxt = breaker.allow(status, CFG, now)
    assert nxt.allowed and nxt.transition is None
    assert not breaker.allow(nxt.status, CFG, now).allowed
    status, t = breaker.apply_result(nxt.status, CFG, True, now)
    assert t == "closed" and status.state == breaker.CLOSED and status.consecutive_failures == 0


def test_a_half_open_failure_reopens_with_a_fresh_timeout():
    status, _ = fail_times(BreakerStatus(), 5)
    later = T0 + timedelta(seconds=90)
    status = breaker.allow(status, CFG, later).status
    status, t = breaker.apply_result(status, CFG, False, later)
    assert t == "opened" and status.state == breaker.OPEN and status.opened_at == later
    assert not breaker.allow(status, CFG, later + timedelta(seconds=59)).allowed
    assert breaker.allow(status, CFG, later + timedelta(seconds=60)).allowed


def test_a_trial_whose_caller_vanished_is_handed_out_again_after_a_timeout():
    status, _ = fail_times(BreakerStatus(), 5)
    status = breaker.allow(status, CFG, T0 + timedelta(seconds=60)).status
    assert not breaker.allow(status, CFG, T0 + timedelta(seconds=119)).allowed
    assert breaker.allow(status, CFG, T0 + timedelta(seconds=120)).allowed


def test_late_results_while_open_never_close_it():
    status, _ = fail_times(BreakerStatus(), 5)
    for _ in range(5):
        status, t = breaker.apply_result(status, CFG, True, T0)
        assert t is None
    assert status.state == breaker.OPEN


def test_closed_always_allows_and_retry_at_is_only_for_open():
    assert breaker.allow(BreakerStatus(), CFG, T0).allowed
    assert breaker.retry_at(BreakerStatus(), CFG) is None
    status, _ = fail_times(BreakerStatus(), 5)
    assert breaker.retry_at(status, CFG) == T0 + timedelta(seconds=60)


def test_custom_thresholds_apply():
    cfg = BreakerConfig(failure_threshold=1, success_threshold=1, open_timeout_seconds=0)
    status, t = breaker.apply_result(BreakerStatus(), cfg, False, T0)
    assert t == "opened"
    d = breaker.allow(status, cfg, T0)
    assert d.allowed and d.transition == "half_opened"
    status, t = breaker.apply_result(d.status, cfg, True, T0)
    assert t == "closed"


@pytest.mark.parametrize("kwargs", [{"failure_threshold": 0}, {"success_threshold": 0}, {"open_timeout_seconds": -1}])
def test_it_refuses_nonsense_config(kwargs):
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)


@pytest.mark.parametrize("state", [breaker.CLOSED, breaker.HALF_OPEN])
def test_trip_opens_from_any_other_state_and_keeps_the_failure_count(state):
    status, t = breaker.trip(BreakerStatus(state=state, consecutive_failures=2, trial_started_at=T0), T0)
    assert t == breaker.OPENED
    assert status == BreakerStatus(state=breaker.OPEN, consecutive_failures=2, opened_at=T0)


def test_trip_leaves_an_open_breaker_and_its_opening_time_alone():
    status, _ = fail_times(BreakerStatus(), 5)
    assert breaker.trip(status, T0 + timedelta(seconds=30)) == (status, None)
