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


# Threads a run starts with, doubled every RAMP_SECONDS for as long as doubling pays, and
# again whenever most of them wait on slow services (up to max_workers): 64 threads
# runnable at once cost a tenth more CPU per check in GIL hand-offs than 16 when the
# services answer at once (2 cores), while services that keep threads waiting still get
# every thread within about 0.15 s.
FIRST_THREADS = 8
RAMP_SECONDS = 0.05
RAMP_GAIN = 1.5  # probes finished per interval after a doubling, against before it


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
    Threads are added while the probes are slow rather than all at once (see FIRST_THREADS).
    """
    if not items:
        return []
    pool = _pool(max(1, max_workers))
    limit = min(max(1, max_workers), len(items))
    results: list[ProbeResult | None] = [None] * len(items)
    indexes = iter(range(len(items)))
    taking = threading.Lock()
    finished = 0
    all_done = threading.Event()

    def drain() -> None:
        nonlocal finished
        while True:
            with taking:
                index = next(indexes, None)
            if index is None:
                return
            try:
                results[index] = probe(items[index], max_body_bytes=max_body_bytes)
            finally:
                with taking:
                    finished += 1
                    if finished == len(items):
                        all_done.set()

    tasks = [pool.submit(drain) for _ in range(min(limit, FIRST_THREADS))]
    seen, before, trying = 0, 0, True
    while len(tasks) < limit and not all_done.wait(RAMP_SECONDS):
        pace, seen = finished - seen, finished
        if trying and len(tasks) > FIRST_THREADS and pace < before * RAMP_GAIN:
            # The last doubling did not speed the probes up by half: the threads are busy,
            # not waiting on services, and more would only contend for the GIL and cores.
            trying = False
        # (Past that, threads are added only when most wait on slow services.)
        if trying or pace < len(tasks) / 4:
            before = pace
            tasks += [pool.submit(drain) for _ in range(min(len(tasks), limit - len(tasks)))]
    for task in tasks:
        task.result()  # (probe never raises; anything else is the caller's to see)
    done = cast(list[ProbeResult], results)
    if on_result is not None:
        for outcome in done:
            on_result(outcome)
    return done
