"""Probes against a real local HTTP server: every kind of failure has its message."""

from __future__ import annotations

from health.checker import Probe, probe, run_probes
from tests.health.servers import Behaviour


def one(server, behaviour: str, timeout: float = 2.0):
    server.behaviour["/h"] = behaviour
    return probe(Probe(1, server.url("/h"), timeout))


def test_it_reports_a_healthy_service_with_its_response_time(server):
    result = one(server, Behaviour.OK)
    assert result.success and result.status_code == 200 and result.error_message == ""
    assert result.response_time_ms > 0
    assert server.hits["/h"] == 1


def test_a_500_is_a_failure_naming_the_status(server):
    result = one(server, Behaviour.ERROR)
    assert not result.success and result.status_code == 500 and result.error_message == "HTTP 500"


def test_a_response_slower_than_the_timeout_is_a_timeout(server):
    server.delay = 3
    result = one(server, Behaviour.SLOW, timeout=0.3)
    assert not result.success and result.status_code is None
    assert result.error_message == "timeout: no response within 0.3s"


def test_a_refused_port_says_so(refused_url):
    result = probe(Probe(1, refused_url + "/health", 1.0))
    assert not result.success and result.error_message == "connection refused"


def test_an_invalid_json_body_is_a_failure(server):
    result = one(server, Behaviour.INVALID)
    assert not result.success and result.status_code == 200
    assert result.error_message.startswith("invalid response: body is not valid JSON")


def test_a_body_reporting_down_is_a_failure(server):
    result = one(server, Behaviour.DOWN)
    assert not result.success and result.error_message == "service reports status 'down'"


def test_a_plain_text_2xx_is_healthy(server):
    assert one(server, Behaviour.PLAIN).success


def test_probes_run_concurrently_in_a_bounded_pool(server):
    server.delay = 0.5
    for i in range(12):
        server.behaviour[f"/s{i}"] = Behaviour.SLOW
    items = [Probe(i, server.url(f"/s{i}"), 5.0) for i in range(12)]
    results = run_probes(items, max_workers=4)
    assert [r.key for r in results] == list(range(12)) and all(r.success for r in results)
    # All four pool threads were waiting on the server at once, never more.
    assert server.max_in_flight == 4


def test_all_probes_are_in_flight_together_when_the_pool_allows(server):
    # Long enough that the last request arrives before the first is answered, even on a
    # loaded machine (at 0.5 s a CI run once saw only 9 of 10 at once).
    server.delay = 2.0
    for i in range(10):
        server.behaviour[f"/s{i}"] = Behaviour.SLOW
    run_probes([Probe(i, server.url(f"/s{i}"), 5.0) for i in range(10)], max_workers=64)
    assert server.max_in_flight == 10


def test_one_broken_probe_loses_none_of_the_others(server, monkeypatch):
    from health import checker

    real = checker.http_probe

    def broken_for_two(item, **kwargs):
        if item.key == 2:
            raise RuntimeError("bug")
        return real(item, **kwargs)

    monkeypatch.setattr(checker, "http_probe", broken_for_two)
    server.behaviour["/h"] = Behaviour.OK
    results = run_probes([Probe(i, server.url("/h"), 2.0) for i in range(5)], max_workers=2)
    assert [r.key for r in results] == [0, 1, 2, 3, 4]
    assert [r.success for r in results] == [True, True, False, True, True]
    assert results[2].error_message == "probe error: RuntimeError: bug"


def test_slow_services_get_more_threads_than_the_first_few(server):
    # Threads start at FIRST_THREADS and double while probes are slow: 20 services that
    # take two seconds each (long enough for a loaded machine, as above) are all in
    # flight at once well before the first answers.
    server.delay = 2.0
    for i in range(20):
        server.behaviour[f"/s{i}"] = Behaviour.SLOW
    results = run_probes([Probe(i, server.url(f"/s{i}"), 5.0) for i in range(20)], max_workers=64)
    assert all(r.success for r in results) and server.max_in_flight == 20


def test_services_answering_in_a_tenth_of_a_second_get_more_threads_while_that_pays(server):
    # Each doubling of the threads doubles how many such probes finish per interval, so
    # the threads keep doubling past the first test of it.
    server.delay = 0.1
    for i in range(300):
        server.behaviour[f"/m{i}"] = Behaviour.SLOW
    results = run_probes([Probe(i, server.url(f"/m{i}"), 5.0) for i in range(300)], max_workers=64)
    assert all(r.success for r in results) and server.max_in_flight > 16
