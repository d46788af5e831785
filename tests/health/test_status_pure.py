"""Pure health arithmetic."""

from __future__ import annotations

import pytest

from health import status


@pytest.mark.parametrize(
    ("total", "ok", "expected"),
    [(0, 0, None), (1, 1, 100.0), (3, 2, 66.67), (120, 118, 98.33), (7, 0, 0.0), (3, 1, 33.33)],
)
def test_uptime_arithmetic(total, ok, expected):
    assert status.uptime_percentage(total, ok) == expected


@pytest.mark.parametrize(
    ("healths", "expected"),
    [
        (["healthy", "healthy"], "healthy"),
        (["healthy", "unhealthy"], "degraded"),
        (["healthy", "circuit_open", "unknown"], "degraded"),
        (["unhealthy", "circuit_open"], "unhealthy"),
        (["unknown"], "unhealthy"),
        ([], "healthy"),
    ],
)
def test_overall_health(healths, expected):
    assert status.overall_health(healths) == expected


@pytest.mark.parametrize(
    ("code", "ctype", "body", "expected"),
    [
        (200, "application/json", b'{"status":"ok"}', None),
        (204, "", b"", None),
        (301, "text/html", b"", "HTTP 301"),
        (503, "application/json", b"{}", "HTTP 503"),
        (200, "application/json", b"", "invalid response: empty JSON body"),
        (200, "application/json; charset=utf-8", b'{"status": "FAIL"}', "service reports status 'FAIL'"),
        (200, "application/json", b'["ok"]', None),
    ],
)
def test_classify_response(code, ctype, body, expected):
    assert status.classify_response(code, ctype, body) == expected


GRAPH = {"web": ["api", "search"], "api": ["db"], "search": [], "db": [], "reports": ["db"]}


def test_a_chain_is_blamed_on_its_deepest_down_member():
    assert status.root_causes(GRAPH, {"web", "api", "db", "reports"}) == {
        "api": ["db"],
        "db": ["db"],
        "reports": ["db"],
        "web": ["db"],
    }


def test_a_healthy_link_breaks_the_chain():
    assert status.root_causes(GRAPH, {"web", "db"}) == {"db": ["db"], "web": ["web"]}


def test_two_independent_causes_are_both_named():
    assert status.root_causes(GRAPH, {"web", "api", "db", "search"})["web"] == ["db", "search"]


def test_a_down_cycle_names_one_member_for_all():
    result = status.root_causes({"a": ["b"], "b": ["a"], "c": ["a"]}, {"a", "b", "c"})
    assert result == {"a": ["a"], "b": ["a"], "c": ["a"]}


def test_cycle_path_finds_the_loop_a_new_dependency_would_close():
    assert status.cycle_path({"a": ["b"], "b": ["c"]}, "c", ["a"]) == ["c", "a", "b", "c"]
    assert status.cycle_path({"a": ["b"]}, "b", ["c"]) == []
