"""The cache is optional at run time: with Redis unreachable (CACHE_URL at a closed
port) the API answers, writes are still throttled (per process), nothing is written
twice, and the outage is logged once; when Redis answers again it is used again."""

from __future__ import annotations

import logging

import pytest
from django.core.cache import caches

from orchestration.core.models import Job
from orchestrator_site.api.throttles import WriteRateThrottle
from orchestrator_site.cache import CacheHealth, FallbackRedisCache
from tests.support.processes import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_down(settings):
    port = free_port()  # nothing listens there
    settings.CACHES = {
        "default": {
            "BACKEND": "orchestrator_site.cache.FallbackRedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    yield caches["default"]
    caches["default"].close()


def test_cache_health_is_down_until_the_retry_time_then_back():
    health = CacheHealth(retry_seconds=5)
    assert health.usable(0) and health.failed(10) and not health.failed(11)
    assert not health.usable(15.9) and health.usable(16)
    assert health.succeeded(17) == 7 and health.succeeded(18) is None


def test_with_redis_down_the_api_answers_throttles_and_logs_the_outage_once(
    redis_down, staff_client, monkeypatch, caplog
):
    assert isinstance(redis_down, FallbackRedisCache)
    monkeypatch.setattr(WriteRateThrottle, "THROTTLE_RATES", {"writes": "5/min"})
    caplog.set_level(logging.WARNING, logger="orchestrator.cache")
    statuses = [
        staff_client.post("/api/v1/jobs/", {"kind": "noop", "payload": {"n": n}}, format="json").status_code
        for n in range(7)
    ]
    assert statuses == [201] * 5 + [429] * 2  # the throttle counted in this process
    assert Job.objects.count() == 5
    for path in ("/orchestrator/snapshot", "/api/v1/jobs/", "/orchestrator/status", "/metrics"):
        assert staff_client.get(path).status_code == 200, path
    outage = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outage) == 1 and "Redis" in outage[0].getMessage()


def test_redis_is_used_again_once_it_answers(redis_down, monkeypatch, caplog):
    import redis
    from django.core.cache.backends.redis import RedisCache

    from orchestrator_site import cache as cache_module

    caplog.set_level(logging.WARNING, logger="orchestrator.cache")
    store: dict[str, object] = {}
    state = {"up": False}

    def get(self, key, default=None, version=None):
        if not state["up"]:
            raise redis.exceptions.ConnectionError("Error 111 connecting. Connection refused.")
        return store.get(key, default)

    monkeypatch.setattr(RedisCache, "get", get)
    clock = {"now": 100.0}
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: clock["now"])
    redis_down._local.set("k", "local")
    assert redis_down.get("k") == "local"  # down: this process's memory answers
    state["up"] = True
    store["k"] = "shared"
    assert redis_down.get("k") == "local"  # not tried again before the retry time
    clock["now"] += cache_module.RETRY_SECONDS
    assert redis_down.get("k") == "shared"
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again after 5.0 s" in m for m in messages) == 1


def test_a_cache_bug_is_not_taken_for_an_outage(redis_down, monkeypatch):
    from django.core.cache.backends.redis import RedisCache

    def get(self, key, default=None, version=None):
        raise TypeError("cannot pickle")

    monkeypatch.setattr(RedisCache, "get", get)
    with pytest.raises(TypeError):
        redis_down.get("k")
