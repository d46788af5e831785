"""Pure logic: backoff, rule evaluation, health score, channel windows. No database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestration.core.jobs.backoff import retry_delay, retry_schedule
from orchestration.loop import decider
from orchestration.loop.default_rules import DEFAULT_DEDUCTIONS
from orchestration.loop.health_score import DeductionSpec, health_score, status_for
from orchestration.loop.windows import window_state


class TestBackoff:
    def test_it_doubles_from_one_second(self):
        assert [retry_delay(n, "exponential") for n in range(1, 6)] == [1, 2, 4, 8, 16]

    def test_it_grows_linearly_in_steps_of_five(self):
        assert [retry_delay(n, "linear") for n in range(1, 5)] == [5, 10, 15, 20]

    def test_it_caps_huge_attempts(self):
        assert retry_delay(10_000, "exponential") == 3600
        assert retry_delay(10_000, "linear", cap=60) == 60

    def test_schedule_has_one_delay_between_each_pair_of_attempts(self):
        assert retry_schedule(4) == [1, 2, 4]
        assert retry_schedule(1) == []

    @pytest.mark.parametrize("attempt,strategy", [(0, "exponential"), (1, "fibonacci")])
    def test_it_refuses_bad_input(self, attempt, strategy):
        with pytest.raises(ValueError):
            retry_delay(attempt, strategy)


def rule(name="r", conditions=None, action="retry_failed", priority=5, **kw):
    return decider.RuleSpec(name=name, conditions=conditions or [], action_type=action, priority=priority, **kw)


class TestDecider:
    snapshot = {"jobs": {"pending": 60, "failed_last_hour": 0, "avg_score": None}, "system": {"health_score": 45}}

    def test_it_fires_when_every_condition_holds_and_records_the_trigger(self):
        action = decider.evaluate(
            rule(conditions=[{"field": "jobs.pending", "op": ">", "value": 50}], reason="Queue saturated"),
            self.snapshot,
        )
        assert action is not None
        assert action.trigger == {"jobs.pending": 60}
        assert action.reason == "Queue saturated (jobs.pending=60)"

    def test_conditions_are_anded(self):
        spec = rule(
            conditions=[
                {"field": "jobs.pending", "op": ">", "value": 50},
                {"field": "jobs.failed_last_hour", "op": ">", "value": 0},
            ]
        )
        assert decider.evaluate(spec, self.snapshot) is None

    @pytest.mark.parametrize("field", ["jobs.missing", "nosection.x", "jobs.avg_score", "jobs.pending.deeper"])
    def test_a_missing_or_null_field_never_fires(self, field):
        assert decider.evaluate(rule(conditions=[{"field": field, "op": ">", "value": 0}]), self.snapshot) is None

    def test_an_empty_rule_never_fires(self):
        assert decider.evaluate(rule(conditions=[]), self.snapshot) is None

    def test_actions_come_sorted_by_priority(self):
        rules = [
            rule("low", [{"field": "jobs.pending", "op": ">=", "value": 1}], "downgrade_low_score", 3),
            rule("top", [{"field": "system.health_score", "op": "<", "value": 50}], "rebalance_queue", 10),
            rule("mid", [{"field": "jobs.pending", "op": "!=", "value": 0}], "retry_failed", 8),
        ]
        assert [a.rule for a in decider.decide(rules, self.snapshot)] == ["top", "mid", "low"]

    def test_summary_names_the_top_action(self):
        actions = decider.decide(
            [rule("a", [{"field": "jobs.pending", "op": ">", "value": 1}], "rebalance_queue", 9)], self.snapshot
        )
        assert decider.summarize(actions) == "1 action(s): rebalance_queue; top priority 9 (rebalance_queue)"
        assert decider.summarize([]) == "No actions needed"

    @pytest.mark.parametrize(
        "condition,message",
        [
            ("jobs.pending > 5", "must be an object"),
            ({"field": "jobs.pending", "op": "~", "value": 5}, "op must be one of"),
            ({"field": "", "op": ">", "value": 5}, "dotted path"),
            ({"field": "jobs..x", "op": ">", "value": 5}, "dotted path"),
            ({"field": "jobs.pending", "op": ">"}, "value is required"),
            ({"field": "jobs.pending", "op": ">", "value": "5"}, "numeric"),
            ({"field": "jobs.pending", "op": ">", "value": [1]}, "number, string or boolean"),
            ({"field": "jobs.pending", "op": ">", "value": 1, "x": 1}, "unknown keys"),
            ({"field": "jobs.pending", "op": "__import__('os')", "value": 1}, "op must be one of"),
        ],
    )
    def test_bad_conditions_are_refused_with_a_reason(self, condition, message):
        with pytest.raises(decider.ConditionError, match=message):
            decider.validate_condition(condition)

    def test_comparing_incomparable_values_does_not_crash(self):
        snapshot = {"jobs": {"pending": {"a": 1}}}
        assert decider.evaluate(rule(conditions=[{"field": "jobs.pending", "op": ">", "value": 1}]), snapshot) is None


def seed_deductions() -> list[DeductionSpec]:
    """The seeded rows, as the monitor hands them to the score."""
    return [DeductionSpec(**{k: v for k, v in spec.items() if k != "enabled"}) for spec in DEFAULT_DEDUCTIONS]


def score(snapshot, deductions=None):
    return health_score(snapshot, seed_deductions() if deductions is None else deductions)


class TestHealthScore:
    def test_a_quiet_system_scores_100(self):
        result = score({"jobs": {"pending": 0}, "ledger": {"errors_last_hour": 0}})
        assert result["health_score"] == 100 and result["status"] == "healthy"
        assert result["deductions"] == []

    def test_each_seed_deduction_applies_with_the_values_that_made_it(self):
        snapshot = {
            "jobs": {"pending": 51, "oldest_pending_minutes": 31, "failed_last_hour": 2},
            "ledger": {"errors_last_hour": 3},
        }
        result = score(snapshot)
        assert result["health_score"] == 100 - 20 - 15 - 10 - 15
        assert result["status"] == "critical"
        assert [(d["name"], d["points"]) for d in result["deductions"]] == [
            ("queue-saturated", 20),
            ("job-waiting-long", 15),
            ("recent-failures", 10),
            ("ledger-errors", 15),
        ]
        assert result["deductions"][0]["values"] == {"jobs.pending": 51}
        assert result["deductions"][3]["values"] == {"ledger.errors_last_hour": 3}
        assert result["deductions"][3]["reason"].startswith("Ledger errors")

    def test_thresholds_are_strict(self):
        snapshot = {"jobs": {"pending": 50, "oldest_pending_minutes": 30, "failed_last_hour": 0}}
        assert score(snapshot)["health_score"] == 100

    def test_it_never_goes_below_zero(self):
        assert score({"ledger": {"errors_last_hour": 1000}})["health_score"] == 0

    def test_a_per_unit_deduction_is_capped(self):
        circuits = DeductionSpec(
            "circuits",
            [{"field": "services.breakers_open", "op": ">", "value": 0}],
            5,
            "open circuits",
            per_field="services.breakers_open",
            max_points=20,
            scope="services",
        )
        assert score({"services": {"breakers_open": 2}}, [circuits])["health_score"] == 90
        assert score({"services": {"breakers_open": 9}}, [circuits])["health_score"] == 80

    def test_the_queue_score_counts_only_the_queue_deductions(self):
        outage = DeductionSpec(
            "down", [{"field": "services.down", "op": ">", "value": 0}], 60, "down", scope="services"
        )
        result = score({"jobs": {"failed_last_hour": 1}, "services": {"down": 2}}, [*seed_deductions(), outage])
        assert result["health_score"] == 30 and result["status"] == "critical"
        assert result["queue_health_score"] == 90 and result["queue_status"] == "healthy"

    def test_no_conditions_or_nothing_to_count_never_deducts(self):
        empty = DeductionSpec("empty", [], 50, "never")
        per_missing = DeductionSpec(
            "per", [{"field": "jobs.pending", "op": ">", "value": 0}], 5, "x", per_field="jobs.nothing"
        )
        assert score({"jobs": {"pending": 3}}, [empty, per_missing])["deductions"] == []

    @pytest.mark.parametrize(
        "score,status", [(100, "healthy"), (80, "healthy"), (79, "degraded"), (50, "degraded"), (49, "critical")]
    )
    def test_status_bands(self, score, status):
        assert status_for(score) == status


class TestWindows:
    def at(self, hour, minute=0):
        return datetime(2026, 3, 1, hour, minute, tzinfo=UTC)

    def test_inside_and_outside(self):
        assert window_state(18, 23, self.at(18))["active"] is True
        assert window_state(18, 23, self.at(23))["active"] is False
        assert window_state(18, 23, self.at(17, 59))["active"] is False

    def test_closing_soon_within_the_last_hour(self):
        state = window_state(17, 22, self.at(21, 15))
        assert state["closes_in_minutes"] == 45 and state["closing_soon"] is True
        assert window_state(17, 22, self.at(20, 59))["closing_soon"] is False

    def test_a_window_until_midnight(self):
        assert window_state(16, 24, self.at(23, 30))["closes_in_minutes"] == 30

    def test_a_window_over_midnight(self):
        assert window_state(22, 2, self.at(1))["active"] is True
        assert window_state(22, 2, self.at(1))["closes_in_minutes"] == 60
        assert window_state(22, 2, self.at(12))["active"] is False
