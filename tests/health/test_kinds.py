"""Each check kind against a real server on 127.0.0.1."""

from __future__ import annotations

import datetime as dt

import pytest

from health.checker import probe
from health.kinds import Probe, get_kind
from tests.health.probe_servers import Scripted, dns_server, http_server, make_certificate, tcp_listener, tls_server
from tests.support.processes import free_port


def item(kind: str, config: dict, url: str = "", timeout: float = 2.0) -> Probe:
    return Probe(1, url, timeout, kind, get_kind(kind).clean(config))


# --- HTTP -------------------------------------------------------------------------------
def test_it_sends_the_method_and_headers_asked_for():
    script = Scripted()
    with http_server(script) as base:
        result = probe(item("http", {"method": "post", "headers": {"X-Check": "yes"}}, base + "/h"))
    assert result.success
    method, headers = script.seen[0]
    assert method == "POST" and headers["X-Check"] == "yes"


def test_it_accepts_only_the_expected_status_codes():
    script = Scripted(status=404, body=b"gone", content_type="text/plain")
    with http_server(script) as base:
        assert probe(item("http", {"expected_status": [404]}, base)).success
        result = probe(item("http", {"expected_status": [200, 204]}, base))
    assert not result.success and result.error_message == "HTTP 404 (expected 200, 204)"


def test_a_missing_keyword_fails_and_a_present_one_passes():
    script = Scripted(body=b"<html>all systems operational</html>", content_type="text/html")
    with http_server(script) as base:
        assert probe(item("http", {"keyword": "operational"}, base)).success
        result = probe(item("http", {"keyword": "green"}, base))
    assert not result.success and result.error_message == "keyword 'green' not found in the body"


def test_a_json_path_condition_is_checked_against_the_body():
    script = Scripted(body=b'{"db": {"replicas": [{"lag": 0}, {"lag": 12}]}, "ready": true}')
    with http_server(script) as base:
        assert probe(item("http", {"json_path": "$.ready"}, base)).success
        assert probe(item("http", {"json_path": "$.db.replicas[0].lag", "json_equals": 0}, base)).success
        wrong = probe(item("http", {"json_path": "$.db.replicas[1].lag", "json_equals": 0}, base))
        missing = probe(item("http", {"json_path": "$.db.primary"}, base))
    assert not wrong.success and wrong.error_message == "$.db.replicas[1].lag is 12, expected 0"
    assert not missing.success and missing.error_message == "$.db.primary not found in the body"


def test_an_answer_slower_than_the_maximum_response_time_fails():
    script = Scripted(delay=0.3)
    with http_server(script) as base:
        result = probe(item("http", {"max_response_ms": 100}, base))
        assert probe(item("http", {"max_response_ms": 5000}, base)).success
    assert not result.success and result.status_code == 200
    assert result.error_message.startswith("slow: answered in ") and result.error_message.endswith("(limit 100 ms)")


# --- TCP --------------------------------------------------------------------------------
def test_a_listening_port_passes_and_a_closed_one_is_refused():
    with tcp_listener() as port:
        ok = probe(item("tcp", {"host": "127.0.0.1", "port": port}))
    closed = probe(item("tcp", {"host": "127.0.0.1", "port": free_port()}))
    assert ok.success and ok.error_message == ""
    assert not closed.success and closed.error_message == "connection refused"


def test_tcp_refuses_an_address_outside_the_allowed_networks(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    with tcp_listener() as port:
        result = probe(item("tcp", {"host": "127.0.0.1", "port": port}))
    assert not result.success and "outside OUTBOUND_ALLOWED_NETWORKS" in result.error_message


# --- DNS --------------------------------------------------------------------------------
RECORDS = {
    ("api.example.test.", "A"): ["127.0.0.7", "127.0.0.8"],
    ("api.example.test.", "TXT"): ['"v=ok"'],
    ("alias.example.test.", "CNAME"): ["api.example.test."],
}


def test_a_name_that_resolves_to_the_expected_answers_passes():
    with dns_server(RECORDS) as server:
        assert probe(item("dns", {"name": "api.example.test", "server": server})).success
        assert probe(item("dns", {"name": "api.example.test", "expected": ["127.0.0.8"], "server": server})).success
        assert probe(
            item(
                "dns",
                {
                    "name": "alias.example.test",
                    "record_type": "CNAME",
                    "expected": ["api.example.test"],
                    "server": server,
                },
            )
        ).success
        assert probe(
            item("dns", {"name": "api.example.test", "record_type": "TXT", "expected": ["v=ok"], "server": server})
        ).success


def test_unexpected_answers_and_unknown_names_fail_saying_why():
    with dns_server(RECORDS) as server:
        wrong = probe(item("dns", {"name": "api.example.test", "expected": ["127.0.0.9"], "server": server}))
        gone = probe(item("dns", {"name": "nope.example.test", "server": server}))
        no_record = probe(item("dns", {"name": "api.example.test", "record_type": "AAAA", "server": server}))
    assert not wrong.success and wrong.error_message == "expected 127.0.0.9; got 127.0.0.7, 127.0.0.8"
    assert not gone.success and gone.error_message == "nope.example.test does not exist (NXDOMAIN)"
    assert not no_record.success and no_record.error_message == "no AAAA record for api.example.test"


def test_a_silent_dns_server_is_a_timeout():
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        result = probe(item("dns", {"name": "x.test", "server": f"127.0.0.1:{silent.getsockname()[1]}"}, timeout=0.3))
    finally:
        silent.close()
    assert not result.success and result.error_message == "timeout: no DNS answer within 0.3s"


# --- TLS --------------------------------------------------------------------------------
def in_days(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(days=days)


def test_a_certificate_with_time_left_passes(tmp_path):
    with tls_server(*make_certificate(tmp_path, not_after=in_days(60))) as port:
        result = probe(item("tls", {"host": "127.0.0.1", "port": port, "warn_days": 14, "verify": False}))
    assert result.success, result.error_message


def test_a_certificate_under_the_warning_threshold_fails_with_its_days_left(tmp_path):
    with tls_server(*make_certificate(tmp_path, not_after=in_days(5))) as port:
        result = probe(item("tls", {"host": "127.0.0.1", "port": port, "warn_days": 14, "verify": False}))
    assert not result.success
    assert result.error_message.startswith("certificate expires in 4.9 days") or result.error_message.startswith(
        "certificate expires in 5.0 days"
    )
    assert result.error_message.endswith("under the 14-day threshold")


def test_an_expired_certificate_fails(tmp_path):
    with tls_server(*make_certificate(tmp_path, not_after=in_days(-2))) as port:
        result = probe(item("tls", {"host": "127.0.0.1", "port": port, "verify": False}))
    assert not result.success and result.error_message.startswith("certificate expired on ")


def test_an_untrusted_certificate_fails_when_verified(tmp_path):
    with tls_server(*make_certificate(tmp_path, not_after=in_days(60))) as port:
        result = probe(item("tls", {"host": "127.0.0.1", "port": port}))
    assert not result.success and result.error_message.startswith("certificate not trusted: ")


def test_tls_to_a_closed_port_is_refused():
    result = probe(item("tls", {"host": "127.0.0.1", "port": free_port(), "verify": False}))
    assert not result.success and result.error_message == "connection refused"


@pytest.mark.parametrize("kind", ["tcp", "tls", "dns", "heartbeat", "http"])
def test_every_kind_is_registered(kind):
    assert get_kind(kind).name == kind
