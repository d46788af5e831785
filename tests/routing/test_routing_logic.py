"""Pure routing logic: priority scores, confidence, strategies."""

from __future__ import annotations

import random

import pytest

from orchestration.routing import learning
from orchestration.routing.learning import ServiceStats, best_scores, confidence, percentile
from orchestration.routing.priority import prioritize, priority_score
from orchestration.routing.strategies import StrategyContext, get_strategy


class TestPriority:
    def test_the_seed_example_orders_and_scores_exactly(self):
        tasks = [
            {"type": "email_campaign", "priority": "normal"},
            {"type": "fraud_detection", "priority": "high"},
            {"type": "video_generation", "priority": "high"},
            {"type": "finance", "priority": "critical"},
        ]
        ordered = prioritize(tasks)
        assert [(t["type"], t["score"]) for t in ordered] == [
            ("finance", 6.0),
            ("fraud_detection", 4.5),
            ("video_generation", 2.4),
            ("email_campaign", 2.0),
        ]

    def test_unknown_types_count_as_one_and_multipliers_are_editable(self):
        assert priority_score("low", "something_new") == 1.0
        assert priority_score("normal", "finance", {"finance": 3}) == 6.0

    def test_a_bad_priority_is_refused(self):
        with pytest.raises(ValueError, match="priority must be one of"):
            priority_score("urgent", "finance")


class TestConfidence:
    def test_it_starts_at_point_seven(self):
        assert confidence(0, 0) == 0.7

    def test_ten_successes_give_at_least_point_nine(self):
        assert confidence(10, 10) >= 0.9

    def test_a_hundred_at_95_percent_give_at_least_point_95(self):
        assert confidence(95, 100) >= 0.95

    def test_it_rises_with_evidence(self):
        values = [confidence(n, n) for n in range(0, 30)]
        assert values == sorted(values) and values[-1] > values[1]

    def test_failures_pull_it_below_the_default(self):
        assert confidence(2, 50) < 0.5 < confidence(25, 50) <= 0.7


class TestLearning:
    def test_best_prefers_success_then_speed(self):
        scores = best_scores(
            [
                ServiceStats("fast-flaky", count=20, successes=10, avg_ms=100),
                ServiceStats("slow-solid", count=20, successes=20, avg_ms=400),
                ServiceStats("fast-solid", count=20, successes=20, avg_ms=100),
            ]
        )
        assert max(scores, key=scores.get) == "fast-solid"
        assert scores["fast-solid"] > scores["fast-flaky"]
        assert scores["fast-solid"] > scores["slow-solid"]

    def test_an_unknown_service_gets_the_optimistic_prior(self):
        assert ServiceStats("new").smoothed_rate() == learning.PRIOR_SUCCESS_RATE

    def test_percentile_nearest_rank(self):
        assert percentile(list(range(1, 21)), 95) == 19
        assert percentile([], 95) is None
        assert percentile([7], 95) == 7


class TestStrategies:
    def test_round_robin_is_an_exact_rotation(self):
        rr = get_strategy("round_robin")
        picks = [rr(["c", "a", "b"], StrategyContext(rotation=i))[0] for i in range(7)]
        assert picks == ["a", "b", "c", "a", "b", "c", "a"]
        assert rr(["c", "a", "b"], StrategyContext(rotation=1)) == ["b", "c", "a"]

    def test_least_loaded_follows_in_flight_counts(self):
        order = get_strategy("least_loaded")(["a", "b", "c"], StrategyContext(in_flight={"a": 3, "b": 0, "c": 1}))
        assert order == ["b", "c", "a"]

    def test_random_uses_every_candidate(self):
        order = get_strategy("random")(["a", "b", "c"], StrategyContext(rng=random.Random(1)))
        assert sorted(order) == ["a", "b", "c"]

    def test_best_uses_learned_stats(self):
        stats = {"a": ServiceStats("a", 50, 20, 100), "b": ServiceStats("b", 50, 49, 120)}
        assert get_strategy("best")(["a", "b"], StrategyContext(stats=stats)) == ["b", "a"]

    def test_unknown_strategy_is_refused(self):
        with pytest.raises(ValueError, match="strategy must be one of"):
            get_strategy("psychic")
