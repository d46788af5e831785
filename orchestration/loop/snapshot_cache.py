"""A short-lived, per-process copy of the snapshot for the read API.

Dashboards and scrapers poll ``/orchestrator/snapshot`` from many clients at once;
each snapshot costs a few aggregate queries plus their Python work. Within
``SNAPSHOT_MAX_AGE_SECONDS`` (default 1 s, half the loop's interval) every request of a
process shares one snapshot. Once it is older, requests still answer with it at once
while a background thread of the process rebuilds it: no request waits for a build
(the request that did used to be the slowest of all under load), except the first
ones of a process and any after a quiet spell, when the copy is too old to show
(older than ``STALE_LIMIT`` max ages). It is derived data: nothing is lost on restart,
and ``taken_at`` in the snapshot says how old it is. 0 turns it off.

Each build is also put in Django's cache: where that cache is shared (Redis, on the
scale profile), every web process adopts a copy another one built, so a deployment
builds about one snapshot per max age, not one per process. A cache that does not
answer only costs the sharing.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from orchestration.core.refresher import Refresher
from orchestration.loop.monitor import build_snapshot

log = logging.getLogger("orchestration.loop")

# A copy up to this many max ages old is served while the next one is built.
STALE_LIMIT = 5
SHARED_KEY = "orchestrator:snapshot"

_lock = threading.Lock()  # held while a request builds the snapshot itself
_built_at: float | None = None
_snapshot: dict[str, Any] | None = None


def _age() -> float | None:
    return None if _snapshot is None or _built_at is None else time.monotonic() - _built_at


def current_snapshot() -> dict[str, Any]:
    max_age = settings.SNAPSHOT_MAX_AGE_SECONDS
    if max_age <= 0:
        return build_snapshot()
    age = _age()
    if age is not None and age < max_age:
        return _snapshot  # type: ignore[return-value]
    if _adopt_shared(max_age):
        return _snapshot  # type: ignore[return-value]
    if age is not None and age < max_age * STALE_LIMIT:
        _refresher.wake()
        return _snapshot  # type: ignore[return-value]
    with _lock:
        age = _age()  # built while we waited for the lock?
        if age is not None and age < max_age:
            return _snapshot  # type: ignore[return-value]
        return _build_and_store()


def _build_and_store() -> dict[str, Any]:
    """Under ``_lock`` (so forget() never races a build that would then land)."""
    global _built_at, _snapshot
    snapshot = build_snapshot()
    _snapshot, _built_at = snapshot, time.monotonic()
    _share(snapshot)
    return snapshot


def _share(snapshot: dict[str, Any]) -> None:
    from django.core.cache import cache

    max_age = settings.SNAPSHOT_MAX_AGE_SECONDS
    try:
        cache.set(SHARED_KEY, (time.time(), snapshot), timeout=max(1, int(max_age * STALE_LIMIT) + 1))
    except Exception as exc:  # the cache is optional: this process keeps its own copy
        log.warning("snapshot not shared through the cache: %s", exc)


def _adopt_shared(max_age: float) -> bool:
    """Take a copy another process built less than ``max_age`` ago, if the cache has one."""
    global _built_at, _snapshot
    from django.core.cache import cache

    try:
        shared = cache.get(SHARED_KEY)
    except Exception as exc:
        log.warning("shared snapshot unavailable: %s", exc)
        return False
    if not shared:
        return False
    built_wall, snapshot = shared
    age = time.time() - built_wall
    if age >= max_age:
        return False
    _snapshot, _built_at = snapshot, time.monotonic() - max(0.0, age)
    return True


def _refresh() -> None:
    age = _age()
    if age is not None and age < settings.SNAPSHOT_MAX_AGE_SECONDS:
        return  # a request built it meanwhile
    try:
        close_old_connections()
        with _lock:
            _build_and_store()
    except Exception:  # the next stale request asks again
        log.exception("snapshot refresh failed")
        connection.close()


_refresher = Refresher("snapshot-refresh", _refresh)


def forget() -> None:
    """Drop the cached copy (after a write that changes what it shows)."""
    global _built_at, _snapshot
    from django.core.cache import cache

    with _lock:
        _built_at, _snapshot = None, None
        try:
            cache.delete(SHARED_KEY)
        except Exception as exc:
            log.warning("shared snapshot not dropped: %s", exc)
