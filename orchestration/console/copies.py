"""Short-lived, per-process copies of the console's show-only panels, read and rendered.

At 20,000 services the dashboard cost about 35 ms of CPU a request (some 26 queries
and the templates), the services page about 20; ten people, or one screen on a wall
per team, polling them left little CPU for the checks sharing the machine. Within
``CONSOLE_COPY_MAX_AGE_SECONDS`` (default 2 s, counted from when the copy was read)
every request of a process that sees the same panels shares one copy: what they show,
and the HTML of those without forms (a form's CSRF token is the reader's own), keyed by
what changes them for a reader (whether they are staff); the page says when the copy
was read. The page around them is rendered once per copy and per reader as well
(``Copy.pages``), each request putting in its own CSRF token.

Once a copy is older than that, requests still answer with it at once while one
background thread of the process reads the next one (the request that rebuilt it paid
~35 ms of CPU at 20,000 services, the slowest of every hundred answers); only a copy
older than ``STALE_LIMIT`` max ages, or none, is built by a request, one at a time, the
others waiting for it. A request carrying a message (the page after a person's own
action) builds fresh, so what they just did shows; a write in this process to a model
of the project drops every copy, and one being built then is not kept. 0 turns
copying off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.messages import get_messages
from django.db import close_old_connections, connection
from django.http import HttpRequest

from orchestration.core.refresher import Refresher

# Distinct keys kept (pages × filters × staff or not); the oldest goes first.
KEEP = 64
# A copy up to this many max ages old is answered while the next one is read.
STALE_LIMIT = 5
log = logging.getLogger("orchestration.console")


@dataclass(frozen=True)
class Copy:
    taken_at: datetime  # when its data was read
    data: dict[str, Any] = field(default_factory=dict)  # panel name → what it shows
    html: dict[str, str] = field(default_factory=dict)  # panel name → rendered (safe) HTML
    copied: bool = False  # answered from the copy rather than built for this request
    # Whole pages made from this copy, per reader (views.render_page): they live as long
    # as the copy, and ``replace`` hands the same dict on.
    pages: dict[Hashable, str] = field(default_factory=dict)


_store: OrderedDict[Hashable, tuple[float, Copy]] = OrderedDict()
_store_lock = threading.Lock()
_build_locks: dict[Hashable, threading.Lock] = {}
_generation = 0  # bumped by forget(): a build that started before is not kept
# Keys the refresher thread is asked to read again: key → (build, generation asked in).
_wanted: dict[Hashable, tuple[Callable[[], Copy], int]] = {}


def wants_fresh(request: HttpRequest) -> bool:
    """After an action the page shows its message; it then shows what the action did."""
    return len(get_messages(request)) > 0


def take(key: Hashable, build: Callable[[], Copy], *, fresh: bool = False, refresh: bool = True) -> Copy:
    """The copy under ``key``: while younger than the max age; older (up to STALE_LIMIT
    max ages) while the refresher reads the next; else one built now (one build per key
    at a time: requests arriving meanwhile wait and share it). ``refresh=False``: a copy
    that cannot change (its key names the data it was made from) is not read again."""
    max_age = settings.CONSOLE_COPY_MAX_AGE_SECONDS
    if max_age <= 0:
        return build()
    if not fresh:
        hit = _aged(key)
        if hit is not None and hit[0] < max_age * STALE_LIMIT:
            if hit[0] >= max_age and refresh:
                _request_refresh(key, build)
            return replace(hit[1], copied=True)
    with _lock_for(key):
        if not fresh:
            hit = _aged(key)
            if hit is not None and hit[0] < max_age:
                return replace(hit[1], copied=True)
        return _build(key, build)


def _build(key: Hashable, build: Callable[[], Copy]) -> Copy:
    """Under the key's lock."""
    generation = _generation
    made = build()
    with _store_lock:
        if generation == _generation:
            _store[key] = (time.monotonic(), made)
            _store.move_to_end(key)
            while len(_store) > KEEP:
                _store.popitem(last=False)
    return made


def _request_refresh(key: Hashable, build: Callable[[], Copy]) -> None:
    with _store_lock:
        _wanted[key] = (build, _generation)
    _refresher.wake()


def _refresh() -> None:
    with _store_lock:
        wanted = list(_wanted.items())
        _wanted.clear()
    for key, (build, generation) in wanted:
        try:
            with _lock_for(key):
                hit = _aged(key)
                # Dropped since it was asked for (a write here, the next test), or
                # read meanwhile: the next request decides.
                if generation != _generation or hit is None:
                    continue
                if hit[0] < settings.CONSOLE_COPY_MAX_AGE_SECONDS:
                    continue
                close_old_connections()
                _build(key, build)
        except Exception:  # the next request asks again
            log.exception("console copy refresh of %r failed", key)
        finally:
            # Not held between refreshes: a connection kept by this thread would
            # outlive what opened it (a test database being dropped, among others).
            connection.close()


_refresher = Refresher("console-copies-refresh", _refresh)


def forget(*args: Any, **kwargs: Any) -> None:
    """Drop every copy (a signal receiver as well: any arguments)."""
    global _generation
    with _store_lock:
        _generation += 1
        _store.clear()


# Whose writes drop the copies: the project's own models (not sessions, sign-in records).
PROJECT_APPS = frozenset({"orchestration", "routing", "health", "pipeline"})


def forget_on_write(sender: type, **kwargs: Any) -> None:
    """post_save / post_delete / m2m_changed receiver."""
    if sender._meta.app_label in PROJECT_APPS:
        forget()


def connect() -> None:
    from django.db.models.signals import m2m_changed, post_delete, post_save

    for signal in (post_save, post_delete, m2m_changed):
        signal.connect(forget_on_write, dispatch_uid=f"console.copies.{id(signal)}")


def _aged(key: Hashable) -> tuple[float, Copy] | None:
    """(seconds since the copy was read, the copy), if there is one."""
    with _store_lock:
        hit = _store.get(key)
    return (time.monotonic() - hit[0], hit[1]) if hit is not None else None


def _lock_for(key: Hashable) -> threading.Lock:
    with _store_lock:
        lock = _build_locks.get(key)
        if lock is None:
            if len(_build_locks) > KEEP * 4:
                _build_locks.clear()  # (held locks stay with their holders)
            lock = _build_locks[key] = threading.Lock()
        return lock
