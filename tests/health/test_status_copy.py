"""/health/status shares one rendered body per process for HEALTH_STATUS_MAX_AGE_SECONDS:
its timestamp says when it was read, changes made in this process drop it, changes made
elsewhere show once it is older than the max age (answered stale while a background
thread rebuilds it, built by the request once far too old), and filtered answers are
always fresh."""

from __future__ import annotations

import json
import threading
import time

import pytest

from health.models import CircuitBreaker, Service
from health.sweep import check_services
from tests.health.servers import Behaviour

pytestmark = pytest.mark.django_db


def make(server, name: str) -> Service:
    return Service.objects.create(name=name, base_url=server.base_url, health_path=f"/{name}", failure_threshold=5)


def status(client, query: str = "") -> dict:
    response = client.get(f"/health/status{query}")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    return response.json()


def test_reads_within_the_max_age_share_one_body_and_a_sweep_here_drops_it(user_client, server, settings):
    assert settings.HEALTH_STATUS_MAX_AGE_SECONDS == 5.0  # production's: nothing overrides it here
    make(server, "api")
    first = status(user_client)
    assert status(user_client) == first  # the same copy, timestamp and all
    server.behaviour["/api"] = Behaviour.ERROR
    check_services()
    after = status(user_client)
    assert after["timestamp"] > first["timestamp"]
    assert after["services"]["api"]["health"] == "unhealthy" and after["services"]["api"]["total_checks"] == 1


@pytest.mark.django_db(transaction=True)  # the refresher thread reads through a connection of its own
def test_a_change_made_elsewhere_shows_once_the_copy_is_older_than_the_max_age(user_client, server, settings):
    settings.HEALTH_STATUS_MAX_AGE_SECONDS = 0.3
    make(server, "api")
    first = status(user_client)
    # As another process's sweep writes: a bulk UPDATE, no signal reaches this process.
    Service.objects.filter(name="api").update(health="unhealthy", last_error="HTTP 503")
    assert status(user_client) == first  # still the copy, its timestamp says how old
    time.sleep(0.35)
    # Older than the max age: answered at once with the copy while it is rebuilt.
    assert status(user_client) == first
    deadline = time.monotonic() + 5
    while (later := status(user_client)) == first and time.monotonic() < deadline:
        time.sleep(0.02)
    assert later["timestamp"] > first["timestamp"] and later["services"]["api"]["error_message"] == "HTTP 503"


def test_a_copy_older_than_the_stale_limit_is_not_answered(user_client, server, settings):
    from health import status_copy

    settings.HEALTH_STATUS_MAX_AGE_SECONDS = 0.05
    make(server, "api")
    first = status(user_client)
    Service.objects.filter(name="api").update(health="unhealthy", last_error="HTTP 503")
    time.sleep(0.05 * status_copy.STALE_LIMIT + 0.05)  # a quiet spell
    later = status(user_client)  # built by this request, in its transaction
    assert later["timestamp"] > first["timestamp"] and later["services"]["api"]["error_message"] == "HTTP 503"


def test_saves_of_services_and_breakers_here_drop_the_copy(user_client, server):
    make(server, "api")
    assert set(status(user_client)["services"]) == {"api"}
    make(server, "db")
    assert set(status(user_client)["services"]) == {"api", "db"}
    breaker = CircuitBreaker.objects.get(name="service:db")
    breaker.state = "open"
    breaker.save()
    assert status(user_client)["services"]["db"]["circuit_breaker_state"] == "open"
    Service.objects.get(name="api").depends_on.add(Service.objects.get(name="db"))
    assert status(user_client)["services"]["api"]["depends_on"] == ["db"]


def test_filtered_answers_and_a_max_age_of_zero_are_always_fresh(user_client, server, settings):
    make(server, "api")
    status(user_client)
    Service.objects.filter(name="api").update(health="unhealthy")
    assert set(status(user_client, "?health=unhealthy")["services"]) == {"api"}
    settings.HEALTH_STATUS_MAX_AGE_SECONDS = 0
    assert status(user_client)["services"]["api"]["health"] == "unhealthy"


def test_requests_waiting_for_a_build_take_it_even_when_it_outlasted_the_max_age(settings):
    from health import status_copy

    settings.HEALTH_STATUS_MAX_AGE_SECONDS = 0.05
    building = threading.Event()
    builds: list[int] = []

    def slow_build() -> bytes:
        builds.append(1)
        building.set()
        time.sleep(0.3)  # longer than the max age, as a 6 MB body on a busy machine
        return b'{"n": %d}' % len(builds)

    answers: list[tuple[bytes, bool]] = []
    first = threading.Thread(target=lambda: answers.append(status_copy.body(slow_build)))
    first.start()
    building.wait(2)
    waiters = [threading.Thread(target=lambda: answers.append(status_copy.body(slow_build))) for _ in range(3)]
    for thread in waiters:
        thread.start()
    for thread in [first, *waiters]:
        thread.join(5)
    assert len(builds) == 1 and sorted(answers) == [(b'{"n": 1}', False)] + [(b'{"n": 1}', True)] * 3
    time.sleep(0.05 * status_copy.STALE_LIMIT + 0.01)  # after a quiet spell a request builds anew
    assert status_copy.body(slow_build) == (b'{"n": 2}', False)


def test_a_stale_copy_is_answered_at_once_while_one_thread_rebuilds_it(settings):
    from health import status_copy

    settings.HEALTH_STATUS_MAX_AGE_SECONDS = 0.1
    release = threading.Event()
    builds: list[str] = []

    def build() -> bytes:
        builds.append(threading.current_thread().name)
        if len(builds) > 1:
            release.wait(5)  # a slow rebuild: requests must not wait for it
        return b'{"n": %d}' % len(builds)

    assert status_copy.body(build) == (b'{"n": 1}', False)
    time.sleep(0.12)
    started = time.monotonic()
    answers = [status_copy.body(build) for _ in range(5)]
    assert time.monotonic() - started < 0.5
    assert answers == [(b'{"n": 1}', True)] * 5
    release.set()
    deadline = time.monotonic() + 5
    while status_copy.body(build)[0] == b'{"n": 1}' and time.monotonic() < deadline:
        time.sleep(0.01)
    assert status_copy.body(build) == (b'{"n": 2}', True)
    assert builds == ["MainThread", "health-status-refresh"]  # one rebuild, in the background


def test_the_shared_body_is_encoded_in_pieces_byte_for_byte_as_in_one(user_client, server, monkeypatch, settings):
    """Encoded a few services a call (so a 6 MB body never holds the interpreter lock
    for its whole encoding), the body is the one a single call makes."""
    from health.report import status_report
    from orchestrator_site.api import renderers

    settings.HEALTH_STATUS_MAX_AGE_SECONDS = 0
    for name in ("api", "db", "cache", "queue", "search"):
        make(server, name)
    Service.objects.filter(name="db").update(last_error="line\u2028break é")
    monkeypatch.setattr(renderers, "PIECE", 2)
    renderer = renderers.RedactingJSONRenderer()
    report = status_report()
    assert len(report["services"]) == 5
    pieces = renderer.render_in_pieces(report, "services")
    assert pieces == renderer.render(report)
    assert b"\\u2028" in pieces and list(json.loads(pieces)["services"]) == ["api", "cache", "db", "queue", "search"]
    settings.HEALTH_STATUS_MAX_AGE_SECONDS = 60
    served = user_client.get("/health/status").content
    assert json.loads(served)["services"] == json.loads(pieces)["services"]


def test_the_shared_body_reencodes_only_what_changed_and_matches_a_full_build(server, monkeypatch):
    """The shared body keeps each service's encoded entry while its row and dependencies
    stay the same; after any change it is the body a full build writes."""
    from health import report
    from health.views import _shared_status
    from orchestrator_site.api.renderers import RedactingJSONRenderer

    renderer = RedactingJSONRenderer()

    def same_as_a_full_build() -> None:
        shared = json.loads(_shared_status(renderer))
        full = json.loads(renderer.render(report.status_report()))
        assert shared.pop("timestamp") <= full.pop("timestamp")
        assert shared == full and list(shared["services"]) == list(full["services"])

    for name in ("api", "db", "cache"):
        make(server, name)
    same_as_a_full_build()
    encoded = []
    real = report._entry
    monkeypatch.setattr(report, "_entry", lambda row, deps: encoded.append(row[1]) or real(row, deps))
    same_as_a_full_build()
    assert encoded.count("api") == 1  # the full build's only: the shared body kept its entry
    encoded.clear()
    server.behaviour["/db"] = Behaviour.ERROR
    check_services(list(Service.objects.filter(name="db")))
    Service.objects.get(name="api").depends_on.add(Service.objects.get(name="cache"))
    Service.objects.filter(name="cache").update(enabled=False)
    make(server, "queue")
    same_as_a_full_build()
    # The shared build ran first, then the full one (the three enabled services).
    assert len(encoded) == 6 and sorted(encoded[:3]) == ["api", "db", "queue"]  # changed, changed, new
