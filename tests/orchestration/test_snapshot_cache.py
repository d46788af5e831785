"""The read API's snapshot: shared within SNAPSHOT_MAX_AGE_SECONDS, fresh when it is 0."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from orchestration.core.models import Job
from orchestration.loop import snapshot_cache

pytestmark = pytest.mark.django_db


def _queries(client) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get("/orchestrator/snapshot")
    assert response.status_code == 200
    return len(ctx.captured_queries), response.json()["snapshot"]


def test_within_the_max_age_requests_share_one_snapshot(staff_client, settings):
    settings.SNAPSHOT_MAX_AGE_SECONDS = 60
    first_queries, first = _queries(staff_client)
    Job.objects.create(kind="noop")
    second_queries, second = _queries(staff_client)
    assert second == first and second["jobs"]["pending"] == 0
    assert second_queries < first_queries  # only authentication, no snapshot queries
    snapshot_cache.forget()
    assert _queries(staff_client)[1]["jobs"]["pending"] == 1


class FrozenClock:
    """snapshot_cache's clocks (monotonic and wall), still until the test moves them, so
    how long the machine takes between two requests does not decide what they read."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._monotonic, self._time = time.monotonic(), time.time()

    def monotonic(self) -> float:
        return self._monotonic + self.offset

    def time(self) -> float:
        return self._time + self.offset


def test_with_the_default_max_age_the_snapshot_is_shared_until_it_has_passed(staff_client, settings, monkeypatch):
    assert settings.SNAPSHOT_MAX_AGE_SECONDS == 1.0  # production's: nothing overrides it here
    clock = FrozenClock()
    monkeypatch.setattr(snapshot_cache, "time", clock)
    first_queries, first = _queries(staff_client)
    Job.objects.create(kind="noop")
    clock.offset += 0.9
    second_queries, second = _queries(staff_client)
    assert second == first and second["jobs"]["pending"] == 0
    assert second_queries < first_queries
    # Past every age a copy is served at (STALE_LIMIT max ages), the request builds anew.
    clock.offset += settings.SNAPSHOT_MAX_AGE_SECONDS * snapshot_cache.STALE_LIMIT
    third_queries, third = _queries(staff_client)
    assert third["jobs"]["pending"] == 1 and third["taken_at"] != first["taken_at"]
    assert third_queries > second_queries
    # Shared through the cache too, stamped with the same clock.
    assert cache.get(snapshot_cache.SHARED_KEY) == (clock.time(), third)


def test_zero_means_always_fresh(staff_client, settings):
    settings.SNAPSHOT_MAX_AGE_SECONDS = 0
    assert _queries(staff_client)[1]["jobs"]["pending"] == 0
    Job.objects.create(kind="noop")
    assert _queries(staff_client)[1]["jobs"]["pending"] == 1


def test_concurrent_requests_on_a_stale_copy_build_it_once(monkeypatch, settings):
    settings.SNAPSHOT_MAX_AGE_SECONDS = 60
    builds = []
    gate = threading.Event()

    def slow_build():
        builds.append(1)
        gate.wait(5)
        return {"taken_at": "now"}

    monkeypatch.setattr(snapshot_cache, "build_snapshot", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(snapshot_cache.current_snapshot())) for _ in range(5)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 5


def test_a_stale_copy_is_served_at_once_while_a_background_thread_rebuilds_it(monkeypatch, settings):
    settings.SNAPSHOT_MAX_AGE_SECONDS = 0.2
    monkeypatch.setattr(snapshot_cache, "build_snapshot", lambda: {"taken_at": "old"})
    assert snapshot_cache.current_snapshot() == {"taken_at": "old"}
    time.sleep(0.3)  # stale, within STALE_LIMIT max ages
    started, gate = threading.Event(), threading.Event()
    requester = threading.get_ident()
    builders = []

    def slow_build():
        builders.append(threading.get_ident())
        started.set()
        gate.wait(5)
        return {"taken_at": "new"}

    monkeypatch.setattr(snapshot_cache, "build_snapshot", slow_build)
    # Neither request waits for the build, which runs in another thread.
    assert snapshot_cache.current_snapshot() == {"taken_at": "old"}
    assert started.wait(5)
    assert snapshot_cache.current_snapshot() == {"taken_at": "old"}
    gate.set()
    deadline = time.monotonic() + 5
    while snapshot_cache.current_snapshot() != {"taken_at": "new"} and time.monotonic() < deadline:
        time.sleep(0.01)
    assert snapshot_cache.current_snapshot() == {"taken_at": "new"}
    assert builders and requester not in builders


def test_a_copy_too_old_to_show_is_rebuilt_by_the_request(monkeypatch, settings):
    settings.SNAPSHOT_MAX_AGE_SECONDS = 0.02
    monkeypatch.setattr(snapshot_cache, "build_snapshot", lambda: {"taken_at": "old"})
    snapshot_cache.current_snapshot()
    time.sleep(0.02 * snapshot_cache.STALE_LIMIT + 0.05)  # after a quiet spell
    monkeypatch.setattr(snapshot_cache, "build_snapshot", lambda: {"taken_at": "new"})
    assert snapshot_cache.current_snapshot() == {"taken_at": "new"}


def test_a_copy_another_process_built_is_adopted_from_the_shared_cache(monkeypatch, settings):
    """With a shared cache (Redis on the scale profile), a web process takes the copy
    another one built within the max age instead of building its own."""
    from django.core.cache import cache

    settings.SNAPSHOT_MAX_AGE_SECONDS = 60
    cache.set(snapshot_cache.SHARED_KEY, (time.time() - 1, {"taken_at": "built elsewhere"}), timeout=30)

    def must_not_build():
        raise AssertionError("built although a fresh shared copy was there")

    monkeypatch.setattr(snapshot_cache, "build_snapshot", must_not_build)
    assert snapshot_cache.current_snapshot() == {"taken_at": "built elsewhere"}
    # Too old a shared copy is not adopted: this process builds (and shares) its own.
    snapshot_cache.forget()
    cache.set(snapshot_cache.SHARED_KEY, (time.time() - 61, {"taken_at": "too old"}), timeout=30)
    monkeypatch.setattr(snapshot_cache, "build_snapshot", lambda: {"taken_at": "mine"})
    assert snapshot_cache.current_snapshot() == {"taken_at": "mine"}
    assert cache.get(snapshot_cache.SHARED_KEY)[1] == {"taken_at": "mine"}
