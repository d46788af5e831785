"""A short-lived, per-process copy of the snapshot for the read API.

Dashboards and scrapers poll ``/orchestrator/snapshot`` from many clients at once;
each snapshot costs a few aggregate queries plus their Python work. Within
``SNAPSHOT_MAX_AGE_SECONDS`` (default 1 s, half the loop's interval) every request of a
process shares one snapshot; when it is stale one request rebuilds it while the others
answer with the previous copy (only the very first requests wait for a build). It is derived data: nothing is lost
on restart, and ``taken_at`` in the snapshot says how old it is. 0 turns it off.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings

from orchestration.loop.monitor import build_snapshot

_lock = threading.Lock()
_built_at: float | None = None
_snapshot: dict[str, Any] | None = None


def _fresh(max_age: float) -> dict[str, Any] | None:
    if _snapshot is not None and _built_at is not None and time.monotonic() - _built_at < max_age:
        return _snapshot
    return None


def current_snapshot() -> dict[str, Any]:
    global _built_at, _snapshot
    max_age = settings.SNAPSHOT_MAX_AGE_SECONDS
    if max_age <= 0:
        return build_snapshot()
    cached = _fresh(max_age)
    if cached is not None:
        return cached
    if not _lock.acquire(blocking=_snapshot is None):
        # Another request is rebuilding it: the copy we have is at most one build older.
        return _snapshot
    try:
        cached = _fresh(max_age)  # rebuilt while we waited for the lock
        if cached is not None:
            return cached
        snapshot = build_snapshot()
        _snapshot, _built_at = snapshot, time.monotonic()
        return snapshot
    finally:
        _lock.release()


def forget() -> None:
    """Drop the cached copy (after a write that changes what it shows)."""
    global _built_at, _snapshot
    with _lock:
        _built_at, _snapshot = None, None
