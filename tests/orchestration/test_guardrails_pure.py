"""The guardrails' decisions as plain data: no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestration.loop import guardrails as g

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def run_times(policy: g.Policy, n: int, start: datetime = T0, step: timedelta = timedelta(minutes=1)):
    counter, outcomes = g.Counter(), []
    for i in range(n):
        verdict = g.judge(policy, counter, start + i * step)
        counter = verdict.counter
        outcomes.append(verdict.outcome)
    return outcomes, counter


def test_it_runs_up_to_the_hourly_limit_then_holds_back():
    outcomes, counter = run_times(g.Policy(max_per_hour=3), 5)
    assert outcomes == [g.RUN, g.RUN, g.RUN, g.RATE_LIMITED, g.RATE_LIMITED]
    assert (counter.runs, counter.attempts) == (3, 5)


def test_it_starts_a_new_hour_from_zero():
    policy = g.Policy(max_per_hour=1)
    first = g.judge(policy, g.Counter(), T0)
    held = g.judge(policy, first.counter, T0 + timedelta(minutes=59))
    later = g.judge(policy, held.counter, T0 + timedelta(minutes=60))
    assert [first.outcome, held.outcome, later.outcome] == [g.RUN, g.RATE_LIMITED, g.RUN]
    assert later.counter.attempts == 1


def test_loop_protection_pauses_above_the_limit_and_stays_paused_next_hour():
    outcomes, counter = run_times(g.Policy(max_per_hour=2, loop_limit=4), 6)
    assert outcomes == [g.RUN, g.RUN, g.RATE_LIMITED, g.RATE_LIMITED, g.TRIPPED, g.PAUSED]
    assert counter.paused_at == T0 + timedelta(minutes=4)
    next_hour = g.judge(g.Policy(max_per_hour=2, loop_limit=4), counter, T0 + timedelta(hours=2))
    assert next_hour.outcome == g.PAUSED
    assert "paused since" in next_hour.reason


def test_a_rule_in_approval_mode_waits_for_a_person_and_an_approval_runs_whatever_the_counts():
    policy = g.Policy(max_per_hour=1, needs_approval=True)
    asked = g.judge(policy, g.Counter(), T0)
    assert asked.outcome == g.APPROVAL and asked.counter.runs == 0
    full = g.Counter(window_started_at=T0, attempts=5, runs=1)
    assert g.judge(policy, full, T0, approved=True).outcome == g.RUN


def test_zero_switches_limits_off():
    outcomes, _ = run_times(g.Policy(), 200, step=timedelta(seconds=2))
    assert set(outcomes) == {g.RUN}


def test_risk_decides_only_while_nobody_chose_a_mode():
    assert g.needs_approval("", risky=True) is True
    assert g.needs_approval("", risky=False) is False
    assert g.needs_approval("automatic", risky=True) is False
    assert g.needs_approval("approval", risky=False) is True
    assert g.default_mode(True) == "approval"


def test_verification_reads_the_conditions_again():
    conditions = [{"field": "jobs.pending", "op": ">", "value": 50}, {"field": "jobs.failed", "op": ">", "value": 0}]
    assert g.cleared(conditions, {"jobs": {"pending": 80, "failed": 2}}) is False
    assert g.cleared(conditions, {"jobs": {"pending": 10, "failed": 2}}) is True
    assert g.cleared([], {"jobs": {}}) is None


def test_effectiveness_counts_only_verified_outcomes():
    e = g.effectiveness([True, False, None, True])
    assert e.as_dict() == {"verified": 3, "effective": 2, "rate": 0.667}
    assert g.effectiveness([None]).rate is None
