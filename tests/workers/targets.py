"""Python targets for the fleet tests (declared @runnable; tests/conftest.py imports them)."""

from __future__ import annotations

import threading
import time

from orchestration.core.runnables import runnable

CALLS: list[str] = []
started = threading.Event()


@runnable
def ok(**metrics) -> dict:
    CALLS.append("ok")
    return dict(metrics)


@runnable
def boom() -> dict:
    raise RuntimeError("target exploded")


@runnable
def sleep(seconds: float = 1.0, **metrics) -> dict:
    started.set()
    time.sleep(seconds)
    return {"slept": seconds, **metrics}


@runnable
def hang_first_time(marker: str, seconds: float = 60) -> dict:
    """Hangs on the first call (the test kills the process meanwhile), returns at once after."""
    from pathlib import Path

    path = Path(marker)
    if not path.exists():
        path.write_text("started")
        time.sleep(seconds)
        return {"first": True}
    return {"first": False}


# hold(): the first call waits for ``release`` (a run that is still going); later
# calls return at once. Reset by the overlap tests.
hold_started = threading.Event()
hold_release = threading.Event()
HOLD_CALLS: list[str] = []


@runnable
def hold(**metrics) -> dict:
    first = not hold_started.is_set()
    HOLD_CALLS.append("first" if first else "next")
    if first:
        hold_started.set()
        hold_release.wait(20)
    return {"first": first, **metrics}
