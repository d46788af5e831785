"""A short-lived, per-process copy of the whole ``/health/status`` body, rendered.

At 20,000 services that body is 6 MB and costs about 0.2 s of CPU to read and render;
with ten clients polling it, its builds left no CPU for any other page of the same
process. Within ``HEALTH_STATUS_MAX_AGE_SECONDS`` (default 5 s, counted from when it
was ready) every request of a process answers the same rendered body. Once it is
older, requests still answer with it at once while one background thread of the
process rebuilds it, so no request queues behind a build; only when there is no copy
or it is older than ``STALE_LIMIT`` max ages (the first requests, or after a quiet
spell) does a request build, one at a time, the others waiting and taking its body.
Its ``timestamp`` is when it was read, so a reader sees how old it is. A sweep or a
change to a service or breaker made in this process drops it (a build in flight then
is not kept). Filtered answers are always built fresh. 0 turns it off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections, connection

from orchestration.core.refresher import Refresher

log = logging.getLogger("health")

# A copy up to this many max ages old is answered while the next one is built.
STALE_LIMIT = 5

_lock = threading.Lock()  # held while a build runs (a request's or the refresher's)
_store_lock = threading.Lock()  # makes "still the same generation? keep it" one step
_copy: tuple[float, bytes] | None = None  # (monotonic time it was ready, body)
_generation = 0  # bumped by forget(): a build that started before is not kept
_builds = 0  # copies kept so far

_refresh_request: tuple[Callable[[], bytes], int] | None = None  # (build, generation it refreshes)
_refresher_lock = threading.Lock()


def body(build: Callable[[], bytes]) -> tuple[bytes, bool]:
    """(the body, whether it is the shared copy rather than built for this request)."""
    max_age = settings.HEALTH_STATUS_MAX_AGE_SECONDS
    if max_age <= 0:
        return build(), False
    copy, builds, generation = _copy, _builds, _generation
    if copy is not None:
        age = time.monotonic() - copy[0]
        if age < max_age:
            return copy[1], True
        if age < max_age * STALE_LIMIT:
            _request_refresh(build, generation)
            return copy[1], True
    with _lock:
        copy = _copy
        # Built while this request waited: it is taken whatever its age, since a build
        # can outlast the max age under load, and each waiter building again in turn
        # made answers take seconds (20,000 services on a busy machine).
        if copy is not None and (_builds != builds or time.monotonic() - copy[0] < max_age):
            return copy[1], True
        return _build(build), False


def _build(build: Callable[[], bytes]) -> bytes:
    """Under ``_lock``."""
    global _copy, _builds
    generation = _generation
    data = build()
    with _store_lock:
        if generation == _generation:
            # Aged from when it is ready: counted from the start, a build that outlasts
            # the max age would be stale at once and the next request asks again.
            _copy, _builds = (time.monotonic(), data), _builds + 1
    return data


def _request_refresh(build: Callable[[], bytes], generation: int) -> None:
    global _refresh_request
    with _refresher_lock:
        _refresh_request = (build, generation)
    _refresher.wake()


def _refresh() -> None:
    with _refresher_lock:
        wanted = _refresh_request
    if wanted is None:
        return
    build, generation = wanted
    try:
        with _lock:
            copy = _copy
            # Dropped since it was asked for (a change here, or the next test): the
            # next request builds; a copy made meanwhile needs no refresh.
            if generation != _generation or copy is None:
                return
            if time.monotonic() - copy[0] < settings.HEALTH_STATUS_MAX_AGE_SECONDS:
                return
            close_old_connections()
            _build(build)
    except Exception:  # the next stale request asks again
        log.exception("/health/status refresh failed")
        connection.close()


_refresher = Refresher("health-status-refresh", _refresh)


def forget(*args: object, **kwargs: object) -> None:
    """Drop the copy (also a signal receiver: saves and deletes of services, breakers
    and dependencies)."""
    global _copy, _generation
    with _store_lock:
        _generation += 1
        _copy = None
