"""Outlier detection, cooldowns, retry budgets and the new strategies as pure functions."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from orchestration.routing import outliers
from orchestration.routing.learning import ERROR_PENALTY_MS, ServiceStats, ewma_sample
from orchestration.routing.outliers import BudgetConfig, OutlierConfig, OutlierStatus
from orchestration.routing.strategies import StrategyContext, get_strategy

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CONFIG = OutlierConfig()


def fail(status: OutlierStatus, n: int, now=T0, **kw) -> outliers.Observation:
    result = outliers.Observation(status)
    for _ in range(n):
        result = outliers.observe(result.status, False, now, CONFIG, **kw)
        if result.transition:
            return result
    return result


def test_it_ejects_after_n_consecutive_failures_and_a_success_resets_the_count():
    four = fail(OutlierStatus(), 4)
    assert four.transition is None and four.status.consecutive_failures == 4
    ok = outliers.observe(four.status, True, T0, CONFIG)
    assert ok.status.consecutive_failures == 0 and ok.transition is None
    fifth = fail(four.status, 1)
    assert fifth.transition == outliers.EJECTED
    assert fifth.status.until == T0 + timedelta(seconds=30) and fifth.status.ejections == 1
    assert fifth.status.reason.startswith("5 consecutive failures")


def test_it_ejects_on_the_failure_rate_only_with_enough_requests():
    status = OutlierStatus()
    for i in range(9):  # 4 failures in 9: under the minimum request count, never 5 in a row
        status = outliers.observe(status, i % 2 == 0, T0, CONFIG).status
    assert not status.ejected(T0)
    result = outliers.observe(status, False, T0, CONFIG)  # 10 tries, 5 failed = 50 %
    assert result.transition == outliers.EJECTED and result.status.reason.startswith("failure rate 50% over 10")


def test_the_window_starts_again_once_it_is_over():
    status = fail(OutlierStatus(), 4).status
    later = outliers.observe(status, True, T0 + timedelta(seconds=31), CONFIG).status
    assert (later.window_requests, later.window_failures) == (1, 0)


def test_each_new_ejection_lasts_longer_up_to_the_maximum():
    assert [outliers.ejection_seconds(n, CONFIG) for n in (1, 2, 3, 20)] == [30, 60, 90, 300]
    first = fail(OutlierStatus(), 5).status
    back = first.until + timedelta(seconds=1)
    # On probation after the ejection: one failure ejects it again, for longer.
    again = outliers.observe(first, False, back, CONFIG)
    assert again.transition == outliers.EJECTED and again.status.ejections == 2
    assert again.status.until == back + timedelta(seconds=60)
    assert again.status.reason.startswith("failed on probation")


def test_a_success_ends_an_ejection_early_and_clears_probation():
    ejected = fail(OutlierStatus(), 5).status
    ended = outliers.observe(ejected, True, T0 + timedelta(seconds=3), CONFIG)
    assert ended.transition == outliers.EJECTION_ENDED
    assert ended.status.until is None and not ended.status.probation and ended.status.ejections == 1


def test_the_share_cap_holds_an_ejection_back():
    assert outliers.may_eject(0, 3, CONFIG) and not outliers.may_eject(1, 3, CONFIG)
    assert outliers.may_eject(1, 4, CONFIG) and not outliers.may_eject(2, 4, CONFIG)
    assert not outliers.may_eject(0, 1, CONFIG)  # nowhere else to go
    held = fail(OutlierStatus(), 5, ejectable=False)
    assert held.transition is None and held.held_back.startswith("5 consecutive") and not held.status.until


def test_retry_after_sets_a_cooldown_that_is_not_an_ejection():
    assert outliers.parse_retry_after("12", T0) == 12
    assert outliers.parse_retry_after("Mon, 05 Jan 2026 12:01:00 GMT", T0) == 60
    assert outliers.parse_retry_after("soon", T0) is None and outliers.parse_retry_after(None, T0) is None
    result = outliers.cooldown(OutlierStatus(), 12, T0, "429")
    assert result.transition == outliers.COOLDOWN and result.status.reason == outliers.RETRY_AFTER
    assert result.status.until == T0 + timedelta(seconds=12) and result.status.ejections == 0
    assert outliers.cooldown(result.status, 5, T0, "429").transition is None  # a shorter one changes nothing
    assert outliers.cooldown(OutlierStatus(), 10**6, T0, "").status.until == T0 + timedelta(seconds=600)


def test_the_retry_budget_is_a_share_of_first_tries_with_a_floor():
    config = BudgetConfig()
    assert outliers.budget_allows(0, 2, 0, 0, 1.0, config)
    assert not outliers.budget_allows(0, 3, 0, 0, 1.0, config)  # at least three
    assert outliers.budget_allows(100, 19, 0, 0, 1.0, config)
    assert not outliers.budget_allows(100, 20, 0, 0, 1.0, config)  # 20 % of first tries
    # The previous bucket counts for the part of it still inside the window.
    assert outliers.budget_allows(0, 0, 100, 19, 1.0, config)
    assert not outliers.budget_allows(0, 3, 100, 100, 0.5, config)
    start = outliers.bucket_start(T0 + timedelta(seconds=7.5), config)
    assert start == T0 and outliers.previous_weight(T0 + timedelta(seconds=7.5), config) == 0.25


def test_a_fast_failure_is_a_penalty_never_a_fast_success():
    assert ewma_sample(True, 5) == 5
    assert ewma_sample(False, 2) == ERROR_PENALTY_MS
    assert ewma_sample(False, 900) == 4500


def test_ewma_prefers_the_lowest_expected_wait_and_tries_the_unknown_first():
    ctx = StrategyContext(
        stats={
            "fast": ServiceStats("fast", 10, 10, 5.0, 5.0),
            "slow": ServiceStats("slow", 10, 10, 200.0, 200.0),
            "throttled": ServiceStats("throttled", 10, 0, 2.0, ERROR_PENALTY_MS),
        },
        in_flight={"fast": 3},
    )
    assert get_strategy("ewma")(["slow", "throttled", "fast"], ctx) == ["fast", "slow", "throttled"]
    assert "20 ms" in ctx.notes["fast"] and "200 ms" in ctx.notes["slow"]
    busy = StrategyContext(stats=ctx.stats, in_flight={"fast": 45})
    assert get_strategy("ewma")(["slow", "fast"], busy)[0] == "slow"  # 5 × 46 > 200 × 1
    assert get_strategy("ewma")(["fast", "new"], StrategyContext(stats=ctx.stats))[0] == "new"


def test_least_request_picks_the_less_loaded_of_two_random_choices():
    in_flight = {"a": 5, "b": 1, "c": 9}
    firsts = []
    for seed in range(200):
        ctx = StrategyContext(in_flight=in_flight, rng=random.Random(seed))
        order = get_strategy("least_request")(["a", "b", "c"], ctx)
        assert sorted(order) == ["a", "b", "c"]
        firsts.append(order[0])
        assert "drawn with" in ctx.notes[order[0]]
    # c (the busiest) never wins a draw; b wins every draw it is in (two of three pairs).
    assert "c" not in firsts and 110 < firsts.count("b") < 160


def test_an_ejection_whose_time_is_up_waits_for_its_probe_and_a_held_back_one_is_back_in_traffic():
    ejected = fail(OutlierStatus(), 5).status
    assert ejected.ejected(T0) and not ejected.awaiting_probe(T0)
    later = T0 + timedelta(seconds=31)
    assert not ejected.ejected(later) and ejected.awaiting_probe(later)
    # Its probe failed but a new ejection is held back (share cap or guardrails).
    held = outliers.observe(ejected, False, later, CONFIG, ejectable=False)
    assert held.held_back.startswith("failed on probation after ejection 1")
    assert not held.status.probation and held.status.until is None and not held.status.awaiting_probe(later)


def test_an_ended_ejection_is_effective_when_later_tries_fail_below_the_ejection_rate():
    assert outliers.recovered(10, 4, CONFIG) == (
        True,
        "6/10 routed tries succeeded after the ejection ended (failure rate 40%, ejection at 50%)",
    )
    assert outliers.recovered(4, 2, CONFIG)[0] is False
