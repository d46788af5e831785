"""A short-lived, per-process copy of the snapshot for the read API.

Dashboards and scrapers poll ``/orchestrator/snapshot`` from many clients at once;
each snapshot costs a few aggregate queries plus their Python work. Within
``SNAPSHOT_MAX_AGE_SECONDS`` (default 1 s, half the loop's interval) every request of a
process shares one snapshot, and concurrent requests that find it stale wait for a
single rebuild instead of each building their own. It is derived data: nothing is lost
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
    with _lock:
        cached = _fresh(max_age)  # another request may have rebuilt it while we waited
        if cached is not None:
            return cached
        snapshot = build_snapshot()
        _snapshot, _built_at = snapshot, time.monotonic()
        return snapshot


def forget() -> None:
    """Drop the cached copy (after a write that changes what it shows)."""
    global _built_at, _snapshot
    with _lock:
        _built_at, _snapshot = None, None
