"""Validation and judgement of the check kinds, without servers or the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from health.kinds import CheckConfigError, get_kind
from health.kinds.http import _prepared, _session, judge, parse_json_path
from health.kinds.tls import judge_expiry


def test_json_paths_read_keys_and_indexes():
    assert parse_json_path("$.a.b[2].c") == ["a", "b", 2, "c"]
    assert parse_json_path("status") == ["status"]
    with pytest.raises(ValueError):
        parse_json_path("$.")


def test_without_expected_codes_a_2xx_with_a_failing_status_word_fails():
    assert judge({}, 200, "application/json", b'{"status": "down"}', 5, True) == "service reports status 'down'"
    assert judge({}, 503, "text/plain", b"", 5, True) == "HTTP 503"
    assert judge({"expected_status": [503]}, 503, "text/plain", b"", 5, True) is None


@pytest.mark.parametrize(
    "method, url, headers",
    [
        ("GET", "http://127.0.0.1:8000/health", {}),
        ("POST", "http://127.0.0.1:8000/a b?x=1&y=é", {"X-Token": "1", "Content-Type": "text/plain"}),
        ("HEAD", "http://bücher.example/health", {"user-agent": "mine"}),
        ("DELETE", "https://example.com:8443/x#frag", {}),
        ("OPTIONS", "http://user:secret@example.com/x", {}),
    ],
)
def test_a_probe_sends_the_request_the_session_would_prepare(method, url, headers):
    session = _session()
    for _ in range(2):  # built, then from the templates
        wanted = session.prepare_request(requests.Request(method, url, headers=headers))
        sent = _prepared(session, method, url, headers)
        assert (sent.method, sent.url, list(sent.headers.items()), sent.body) == (
            wanted.method,
            wanted.url,
            list(wanted.headers.items()),
            wanted.body,
        )


def test_a_session_holding_cookies_sends_them():
    session = requests.Session()
    session.cookies.set("seen", "1", domain="example.com")
    assert _prepared(session, "GET", "http://example.com/health", {}).headers["Cookie"] == "seen=1"


def test_a_falsy_json_path_value_fails_without_json_equals():
    assert judge({"json_path": "$.ok"}, 200, "application/json", b'{"ok": false}', 5, True) == "$.ok is false"


def test_tls_expiry_is_judged_against_the_threshold():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert judge_expiry(now + timedelta(days=30), now, 14) is None
    assert judge_expiry(now + timedelta(days=3), now, 14).startswith("certificate expires in 3.0 days")
    assert judge_expiry(now - timedelta(days=1), now, 14).startswith("certificate expired on 2025-12-31")


@pytest.mark.parametrize(
    ("kind", "config", "field"),
    [
        ("http", {"method": "FETCH"}, "method"),
        ("http", {"expected_status": [200, 700]}, "expected_status"),
        ("http", {"headers": {"X": 1}}, "headers"),
        ("http", {"json_equals": 1}, "json_equals"),
        ("http", {"json_path": "$."}, "json_path"),
        ("http", {"max_response_ms": 0}, "max_response_ms"),
        ("tcp", {"host": "127.0.0.1"}, "port"),
        ("tcp", {"host": "", "port": 80}, "host"),
        ("tcp", {"host": "a", "port": 70000}, "port"),
        ("dns", {"record_type": "A"}, "name"),
        ("dns", {"name": "x.test", "record_type": "BOGUS"}, "record_type"),
        ("dns", {"name": "x.test", "server": "resolver.local"}, "server"),
        ("tls", {"host": "h", "warn_days": -1}, "warn_days"),
        ("tls", {"host": "h", "verify": "no"}, "verify"),
    ],
)
def test_bad_settings_name_the_field(kind, config, field):
    with pytest.raises(CheckConfigError) as caught:
        get_kind(kind).clean(config)
    assert caught.value.field == field


def test_defaults_are_filled_in():
    assert get_kind("tls").clean({"host": "example.org"}) == {
        "host": "example.org",
        "port": 443,
        "warn_days": 14,
        "verify": True,
    }
    assert get_kind("http").clean({}) == {"method": "GET"}
    assert get_kind("dns").clean({"name": "example.org"}) == {"name": "example.org", "record_type": "A"}
