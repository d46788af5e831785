"""Concurrent probes of every kind: a bounded thread pool, one timeout per probe.

No database here: the sweep hands in plain ``Probe`` values and persists the
``ProbeResult`` values it gets back, so threads never hold a database connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from health.kinds import CheckConfigError, Probe, ProbeResult, get_kind
from health.kinds.http import USER_AGENT, http_probe

__all__ = ["USER_AGENT", "Probe", "ProbeResult", "probe", "run_probes"]


def probe(item: Probe, *, max_body_bytes: int = 65536) -> ProbeResult:
    """Probe once with the item's kind; never raises (a kind's bug is the check's failure)."""
    try:
        if item.kind == "http":
            return http_probe(item, max_body_bytes=max_body_bytes)
        return get_kind(item.kind).probe(item)
    except CheckConfigError as exc:
        return ProbeResult(item.key, False, None, 0.0, str(exc))
    except Exception as exc:  # one broken probe must not lose the sweep's other results
        return ProbeResult(item.key, False, None, 0.0, f"probe error: {type(exc).__name__}: {str(exc)[:200]}")


# One pool per process and size, kept between sweeps: its threads keep their pooled
# HTTP sessions (keep-alive) and no sweep pays for starting 64 threads. Keyed by pid
# as well, since a pool's threads do not survive a fork.
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(size: int) -> ThreadPoolExecutor:
    key = (os.getpid(), size)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ThreadPoolExecutor(max_workers=size, thread_name_prefix="health-probe")
        return pool


def run_probes(
    items: Sequence[Probe],
    *,
    max_workers: int = 64,
    max_body_bytes: int = 65536,
    on_result: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe everything concurrently, at most ``max_workers`` at a time; results in the
    order of ``items`` (``on_result`` is called with each, in that order, once all are in).

    The pool gets one task per thread used, each taking the next item of a shared list
    until none is left: a Future (and its Condition) per probe cost a tenth of a check's CPU.
    """
    if not items:
        return []
    pool = _pool(max(1, max_workers))
    results: list[ProbeResult | None] = [None] * len(items)
    indexes = iter(range(len(items)))
    taking = threading.Lock()

    def drain() -> None:
        while True:
            with taking:
                index = next(indexes, None)
            if index is None:
                return
            results[index] = probe(items[index], max_body_bytes=max_body_bytes)

    tasks = [pool.submit(drain) for _ in range(min(max(1, max_workers), len(items)))]
    for task in tasks:
        task.result()  # (probe never raises; anything else is the caller's to see)
    done = cast(list[ProbeResult], results)
    if on_result is not None:
        for outcome in done:
            on_result(outcome)
    return done
