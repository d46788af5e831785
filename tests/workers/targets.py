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
