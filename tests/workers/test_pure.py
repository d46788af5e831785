"""Pure fleet logic: cadence, graph, scoring and the 17 anomaly rules (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestration.core import anomaly_rules as rules
from orchestration.fleet import cadence, graph, scoring, specs

DAY = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)  # an ordinary UTC day


# --- cadence -------------------------------------------------------------------------
def test_it_computes_interval_runs_aligned_to_the_clock_across_a_day():
    every_15 = cadence.validate(900, "")
    runs = cadence.runs_between(every_15, DAY, DAY.replace(hour=23, minute=59))
    assert len(runs) == 95  # (00:00, 23:59]: 00:15 … 23:45
    assert runs[0] == datetime(2026, 3, 10, 0, 15, tzinfo=UTC)
    assert all(r.tzinfo is not None and r.utcoffset().total_seconds() == 0 for r in runs)
    assert cadence.next_run(every_15, datetime(2026, 3, 10, 10, 14, 59, tzinfo=UTC)) == datetime(
        2026, 3, 10, 10, 15, tzinfo=UTC
    )
    # Exactly on a due time: the next one, never the same again.
    assert cadence.next_run(every_15, datetime(2026, 3, 10, 10, 15, tzinfo=UTC)).minute == 30


def test_it_computes_cron_runs_in_utc():
    hourly_05 = cadence.validate(None, "5 * * * *")
    runs = cadence.runs_between(hourly_05, DAY, DAY.replace(hour=23, minute=59))
    assert len(runs) == 24 and {r.minute for r in runs} == {5}
    daily = cadence.validate(None, "0 11 * * *")
    assert cadence.next_run(daily, datetime(2026, 3, 10, 11, 0, tzinfo=UTC)) == datetime(2026, 3, 11, 11, 0, tzinfo=UTC)
    every_4h = cadence.validate(None, "10 */4 * * *")
    assert [r.hour for r in cadence.runs_between(every_4h, DAY, DAY.replace(hour=23, minute=59))] == [
        0,
        4,
        8,
        12,
        16,
        20,
    ]


def test_it_stretches_the_interval_when_the_rate_is_reduced():
    every_5 = cadence.validate(300, "")
    assert cadence.effective_interval(300, 2.0) == 600
    assert len(cadence.runs_between(every_5, DAY, DAY.replace(hour=1), rate_factor=2.0)) == 6


@pytest.mark.parametrize(
    ("interval", "cron", "message"),
    [
        (30, "", "whole number of minutes"),
        (90, "", "whole number"),
        (60, "* * * * *", "either"),
        (None, "61 * * * *", "five-field"),
        (None, "* * *", "five-field"),
    ],
)
def test_it_refuses_bad_cadences(interval, cron, message):
    with pytest.raises(cadence.CadenceError, match=message):
        cadence.validate(interval, cron)


def test_it_finds_dependency_cycles():
    assert graph.find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    cycle = graph.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]})
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    with pytest.raises(graph.DependencyCycle, match="→"):
        graph.check_acyclic({"x": ["x"]})
    assert graph.downstream_of({"a": ["y"], "b": ["y", "z"], "c": []}, "y") == ["a", "b"]


# --- scoring -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("category", "expected"),
    [
        # components: reliability 100, performance 50 (2× expected), data quality 80 (2 warnings
        # → −10, 1 validation error → −10), resource 100.
        ("generation", 0.4 * 100 + 0.3 * 50 + 0.2 * 80 + 0.1 * 100),
        ("collection", 0.3 * 100 + 0.2 * 50 + 0.4 * 80 + 0.1 * 100),
        ("intelligence", 0.3 * 100 + 0.2 * 50 + 0.4 * 80 + 0.1 * 100),
        ("aggregation", 0.4 * 100 + 0.3 * 50 + 0.2 * 80 + 0.1 * 100),
        ("maintenance", 0.5 * 100 + 0.2 * 50 + 0.2 * 80 + 0.1 * 100),
    ],
)
def test_it_weights_the_overall_score_by_category(category, expected):
    outcome = scoring.RunOutcome(
        category=category,
        success=True,
        duration_s=20,
        expected_duration_s=10,
        timeout_s=300,
        metrics={"validation_warnings": 2, "validation_errors": 1},
        memory_percent=50,
    )
    result = scoring.score(outcome)
    assert (result.reliability, result.performance, result.data_quality, result.resource) == (100, 50, 80, 100)
    assert result.overall == pytest.approx(round(expected, 1))


def test_it_scores_each_component():
    base = {"category": "collection", "success": True, "timeout_s": 100}
    assert scoring.performance(scoring.RunOutcome(**base, duration_s=10, expected_duration_s=10)) == 100
    assert scoring.performance(scoring.RunOutcome(**base, duration_s=15, expected_duration_s=10)) == 75
    assert scoring.performance(scoring.RunOutcome(**base, duration_s=40, expected_duration_s=10)) == 0
    assert scoring.performance(scoring.RunOutcome(**base, duration_s=81)) < 100  # no expectation: 80 % of timeout
    partial = scoring.RunOutcome(**base, duration_s=1, metrics={"items_total": 10, "items_failed": 2})
    assert scoring.reliability(partial) == 80 and scoring.data_quality(partial) == 80
    corrupt = scoring.RunOutcome(**base, duration_s=1, metrics={"data_valid": False})
    assert scoring.data_quality(corrupt) == 0
    assert scoring.resource(scoring.RunOutcome(**base, duration_s=1, memory_percent=80)) == 75
    assert scoring.resource(scoring.RunOutcome(**base, duration_s=1, memory_percent=95)) == 25
    budget = scoring.RunOutcome(**base, duration_s=1, metrics={"rss_mb": 200, "memory_budget_mb": 100})
    assert scoring.resource(budget) == 50
    failed = scoring.score(scoring.RunOutcome(**{**base, "success": False}, duration_s=1))
    assert failed.reliability == 0 and failed.data_quality == 0 and failed.recommendations
    timed_out = scoring.score(scoring.RunOutcome(**base, duration_s=100, timed_out=True))
    assert timed_out.performance == 0 and "timed out" in timed_out.recommendations[0]


def test_it_rolls_scores_up():
    rows = [
        {
            k: v
            for k in ("reliability_score", "performance_score", "data_quality_score", "resource_score", "overall_score")
        }
        for v in (100, 50)
    ]
    assert scoring.rollup(rows) == {"runs": 2, **dict.fromkeys(rows[0], 75.0)}
    assert scoring.rollup([])["runs"] == 0


# --- anomaly rules: every code, a boundary case on either side ------------------------
def run(**kw):
    return rules.RunFacts(**{"status": "succeeded", **kw})


def fired(scope, facts) -> set[str]:
    return set(rules.evaluate(scope, facts).fired)


def cleared(scope, facts) -> set[str]:
    return rules.evaluate(scope, facts).cleared


def test_all_seventeen_codes_have_rules_with_the_seed_severities():
    assert len(rules.CODES) == 17
    by_severity = {
        s: sorted(r.code for r in rules.RULES if r.severity == s) for s in ("critical", "high", "medium", "low")
    }
    assert by_severity["critical"] == sorted(
        ["WORKER_CRASH", "QUEUE_OVERFLOW", "DATA_CORRUPTION", "DEPENDENCY_FAILURE", "RESOURCE_EXHAUSTION"]
    )
    assert by_severity["high"] == sorted(
        ["HIGH_FAILURE_RATE", "SLOW_EXECUTION", "STALE_DATA", "API_QUOTA_LOW", "LOCK_CONTENTION"]
    )
    assert by_severity["medium"] == sorted(["ELEVATED_RETRIES", "PARTIAL_SUCCESS", "CACHE_MISS", "TIMEOUT_WARNING"])
    assert by_severity["low"] == sorted(["SKIP_DUE_TO_LOCK", "SKIP_DUE_TO_FRESHNESS", "MINOR_VALIDATION_ISSUE"])
    assert [rules.alert_delay(s) for s in ("critical", "high", "medium", "low")] == [0, 300, 900, None]


@pytest.mark.parametrize(
    ("code", "scope", "present", "absent"),
    [
        ("WORKER_CRASH", "run", run(status="crashed"), run(status="failed")),
        ("QUEUE_OVERFLOW", "fleet", rules.FleetFacts(queue_depth=1001), rules.FleetFacts(queue_depth=1000)),
        ("DATA_CORRUPTION", "run", run(metrics={"corrupt_items": 1}), run(metrics={"corrupt_items": 0})),
        ("DATA_CORRUPTION", "run", run(metrics={"data_valid": False}), run(metrics={"data_valid": True})),
        ("DEPENDENCY_FAILURE", "run", run(status="skipped", skipped_reason="upstream_failed"), run()),
        (
            "RESOURCE_EXHAUSTION",
            "fleet",
            rules.FleetFacts(0, memory_percent=90.1, disk_percent=50),
            rules.FleetFacts(0, memory_percent=90.0, disk_percent=50),
        ),
        (
            "RESOURCE_EXHAUSTION",
            "fleet",
            rules.FleetFacts(0, memory_percent=10, disk_percent=99.0),
            rules.FleetFacts(0, memory_percent=10, disk_percent=98.9),
        ),
        ("HIGH_FAILURE_RATE", "worker", rules.WorkerFacts(100, 11, 0), rules.WorkerFacts(100, 10, 0)),
        (
            "SLOW_EXECUTION",
            "run",
            run(duration_s=20.1, expected_duration_s=10),
            run(duration_s=20, expected_duration_s=10),
        ),
        (
            "STALE_DATA",
            "worker",
            rules.WorkerFacts(1, 0, 0, last_success_age_s=601, freshness_s=600),
            rules.WorkerFacts(1, 0, 0, last_success_age_s=600, freshness_s=600),
        ),
        ("API_QUOTA_LOW", "run", run(metrics={"quota_remaining_pct": 19.9}), run(metrics={"quota_remaining_pct": 20})),
        ("LOCK_CONTENTION", "worker", rules.WorkerFacts(0, 0, 3), rules.WorkerFacts(0, 0, 2)),
        (
            "ELEVATED_RETRIES",
            "fleet",
            rules.FleetFacts(0, jobs_last_hour=100, retried_jobs_last_hour=6),
            rules.FleetFacts(0, jobs_last_hour=100, retried_jobs_last_hour=5),
        ),
        (
            "ELEVATED_RETRIES",
            "run",
            run(metrics={"requests": 100, "retries": 6}),
            run(metrics={"requests": 100, "retries": 5}),
        ),
        (
            "PARTIAL_SUCCESS",
            "run",
            run(metrics={"items_total": 10, "items_failed": 1}),
            run(metrics={"items_total": 10, "items_failed": 0}),
        ),
        ("CACHE_MISS", "run", run(metrics={"cache_misses": 1}), run(metrics={"cache_misses": 0})),
        ("TIMEOUT_WARNING", "run", run(duration_s=80.1, timeout_s=100), run(duration_s=80, timeout_s=100)),
        ("SKIP_DUE_TO_LOCK", "run", run(status="skipped", skipped_reason="lock_held"), run()),
        ("SKIP_DUE_TO_FRESHNESS", "run", run(status="skipped", skipped_reason="already_fresh"), run()),
        (
            "MINOR_VALIDATION_ISSUE",
            "run",
            run(metrics={"validation_warnings": 1}),
            run(metrics={"validation_warnings": 0}),
        ),
    ],
)
def test_each_rule_fires_past_its_threshold_and_clears_at_it(code, scope, present, absent):
    assert code in fired(scope, present)
    assert code not in fired(scope, absent)
    assert code in cleared(scope, absent)


def test_rules_stay_silent_when_the_facts_cannot_tell():
    skipped = run(status="skipped", skipped_reason="lock_held")
    evaluation = rules.evaluate("run", skipped)
    # A skipped run says nothing about speed or output: those anomalies neither open nor resolve.
    for code in ("SLOW_EXECUTION", "TIMEOUT_WARNING", "DATA_CORRUPTION", "PARTIAL_SUCCESS"):
        assert code not in evaluation.fired and code not in evaluation.cleared
    assert "HIGH_FAILURE_RATE" not in rules.evaluate("worker", rules.WorkerFacts(0, 0, 0)).cleared
    # Two failures out of two runs is not yet a rate; three out of three is.
    assert "HIGH_FAILURE_RATE" not in fired("worker", rules.WorkerFacts(2, 2, 0))
    assert "HIGH_FAILURE_RATE" in fired("worker", rules.WorkerFacts(3, 3, 0))
    assert "WORKER_CRASH" in rules.evaluate("run", run()).cleared


def test_a_run_may_not_outlast_the_clusters_task_timeout():
    specs.validate_timeouts(3600, None, 7201)  # up to twice the timeout: 7,200 s
    specs.validate_timeouts(3600, 3600, 3601)  # a cap pins it
    for timeout, cap, field in ((3600, None, "timeout_seconds"), (600, 7200, "max_timeout_seconds")):
        with pytest.raises(specs.SpecError) as caught:
            specs.validate_timeouts(timeout, cap, 7200)
        assert "Q_TIMEOUT = 7200 s" in caught.value.errors[field]
    with pytest.raises(specs.SpecError, match="must be at least timeout_seconds"):
        specs.validate_timeouts(600, 300, 7200)
