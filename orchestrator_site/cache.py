"""Redis as Django's cache, optional at run time.

What the cache holds is derived and short-lived (the write throttle's counts, django-q2's
cluster statistics), so a Redis that is down, restarting or unreachable must not turn
requests into 500s: each call falls back to this process's own memory, as if CACHE_URL
were unset, and the outage is logged once when it begins and once when it ends. While
Redis is down it is tried again every ``RETRY_SECONDS`` only, so requests do not each
pay a refused connection.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from orchestration.core.dbfaults import is_cache_outage

log = logging.getLogger("orchestrator.cache")

RETRY_SECONDS = 5.0

_lock = threading.Lock()
_health: dict[str, CacheHealth] = {}


class CacheHealth:
    """Up or down, and when to try again. Pure: the clock is passed in."""

    def __init__(self, retry_seconds: float = RETRY_SECONDS) -> None:
        self.retry_seconds = retry_seconds
        self.down_since: float | None = None
        self.retry_at = 0.0

    def usable(self, now: float) -> bool:
        return self.down_since is None or now >= self.retry_at

    def failed(self, now: float) -> bool:
        """A call failed; True when that begins an outage."""
        began = self.down_since is None
        if began:
            self.down_since = now
        self.retry_at = now + self.retry_seconds
        return began

    def succeeded(self, now: float) -> float | None:
        """A call worked; the outage's length when that ends one."""
        if self.down_since is None:
            return None
        lasted, self.down_since = now - self.down_since, None
        return lasted


class FallbackRedisCache(RedisCache):
    """Django's RedisCache; each call that finds Redis unreachable answers from a cache
    in this process's memory instead."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        # Django makes a cache object per thread (runserver: per request); whether
        # Redis is up, and the memory answering meanwhile, are the process's.
        with _lock:
            self._health = _health.setdefault(server, CacheHealth())
        self._lock = _lock
        self._local = LocMemCache(f"fallback:{server}", {"TIMEOUT": params.get("TIMEOUT", 300)})

    def _either(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._health.usable(time.monotonic()):
            try:
                value = getattr(super(), name)(*args, **kwargs)
            except Exception as exc:
                if not is_cache_outage(exc):
                    raise
                with self._lock:
                    if self._health.failed(time.monotonic()):
                        log.warning("cache (Redis) unreachable, using this process's memory until it is back: %s", exc)
            else:
                if self._health.down_since is not None:
                    with self._lock:
                        lasted = self._health.succeeded(time.monotonic())
                    if lasted is not None:
                        log.warning("cache (Redis) reachable again after %.1f s", lasted)
                return value
        return getattr(self._local, name)(*args, **kwargs)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("add", *args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("get", *args, **kwargs)

    def set(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("set", *args, **kwargs)

    def touch(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("touch", *args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("delete", *args, **kwargs)

    def get_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("get_many", *args, **kwargs)

    def has_key(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("has_key", *args, **kwargs)

    def incr(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("incr", *args, **kwargs)

    def set_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("set_many", *args, **kwargs)

    def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._either("delete_many", *args, **kwargs)

    def clear(self) -> Any:
        return self._either("clear")
