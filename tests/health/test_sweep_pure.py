"""The sweep's decisions over plain data (no database): health after a check, who is
blamed, which alerts should be open and why one is resolved."""

from __future__ import annotations

from health.sweep import blame_context, check_health, opened_message, plan_alerts, resolution


def test_a_failed_check_reads_circuit_open_once_its_breaker_opened():
    assert check_health(True, "open") == "healthy"
    assert check_health(False, "closed") == "unhealthy"
    assert check_health(False, "open") == "circuit_open"


def test_a_dependent_failing_because_of_another_is_only_informational():
    roots = {"api": ["db"], "db": ["db"]}
    assert blame_context("api", roots) == {"root_cause": "db", "severity": "info"}
    assert blame_context("db", roots) is None
    assert blame_context("other", roots) is None  # not failing: its own cause


def test_one_alert_per_root_cause_naming_its_failing_dependents():
    by_name = {
        "db": (1, "unhealthy", 3, "refused"),
        "api": (2, "unhealthy", 5, "HTTP 502"),
        "web": (3, "healthy", 0, ""),
    }
    plan = plan_alerts(by_name, threshold=2, graph={"api": ["db"], "web": ["api"]})
    assert plan.wanted == {"db": ["api"]} and plan.failing == {"db", "api"}
    assert resolution("api", plan) == "now explained by db (root cause)"
    assert resolution("web", plan) == "recovered"


def test_no_alert_before_the_threshold_unless_the_circuit_is_open():
    assert plan_alerts({"db": (1, "unhealthy", 1, "")}, threshold=2, graph={}).wanted == {}
    assert plan_alerts({"db": (1, "circuit_open", 1, "")}, threshold=2, graph={}).wanted == {"db": []}


def test_the_opening_message_counts_the_dependents():
    assert opened_message("db", "", []) == "db is down: failing"
    assert opened_message("db", "refused", ["api", "web"]) == (
        "db is down: refused; 2 dependent(s) failing because of it: api, web"
    )
