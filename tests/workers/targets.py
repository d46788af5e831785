"""Python targets for the fleet tests (allowed through PYTHON_JOB_ALLOWED_PREFIXES)."""

from __future__ import annotations

import threading
import time

CALLS: list[str] = []
started = threading.Event()


def ok(**metrics) -> dict:
    CALLS.append("ok")
    return dict(metrics)


def boom() -> dict:
    raise RuntimeError("target exploded")


def sleep(seconds: float = 1.0, **metrics) -> dict:
    started.set()
    time.sleep(seconds)
    return {"slept": seconds, **metrics}


def hang_first_time(marker: str, seconds: float = 60) -> dict:
    """Hangs on the first call (the test kills the process meanwhile), returns at once after."""
    from pathlib import Path

    path = Path(marker)
    if not path.exists():
        path.write_text("started")
        time.sleep(seconds)
        return {"first": True}
    return {"first": False}
