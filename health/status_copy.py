"""A short-lived, per-process copy of the whole ``/health/status`` body, rendered.

At 20,000 services that body is 6 MB and costs about 0.2 s of CPU to read and render;
with ten clients polling it, its builds left no CPU for any other page of the same
process. Within ``HEALTH_STATUS_MAX_AGE_SECONDS`` (default 1 s, counted from when it
was ready) every request of a process answers the same rendered body; one request
builds at a time and the others wait for it and take it. Its ``timestamp`` is when it
was read, so a reader sees how old it is. A sweep or a change to a service or breaker
made in this process drops it (a build in flight then is not kept). Filtered answers
are always built fresh. 0 turns it off.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.conf import settings

_lock = threading.Lock()  # held while a request builds the body
_copy: tuple[float, bytes] | None = None  # (monotonic time it was ready, body)
_generation = 0  # bumped by forget(): a build that started before is not kept
_builds = 0  # copies kept so far


def body(build: Callable[[], bytes]) -> tuple[bytes, bool]:
    """(the body, whether it is the shared copy rather than built for this request)."""
    max_age = settings.HEALTH_STATUS_MAX_AGE_SECONDS
    if max_age <= 0:
        return build(), False
    copy, builds = _copy, _builds
    if copy is not None and time.monotonic() - copy[0] < max_age:
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
    if generation == _generation:
        # Aged from when it is ready: counted from the start, a build that outlasts the
        # max age would serve nobody but its waiters, and the next request builds again.
        _copy, _builds = (time.monotonic(), data), _builds + 1
    return data


def forget(*args: object, **kwargs: object) -> None:
    """Drop the copy (also a signal receiver: saves and deletes of services, breakers
    and dependencies)."""
    global _copy, _generation
    _generation += 1
    _copy = None
