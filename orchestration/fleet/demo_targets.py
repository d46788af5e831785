"""Python targets of the demo fleet: quick, deterministic, with the metrics a real
worker of their kind would report."""

from __future__ import annotations

import random
import time

from orchestration.core.runnables import runnable


@runnable
def collect_trending(categories: int = 12) -> dict:
    time.sleep(0.05)
    return {"items_total": categories, "items_failed": 0, "quota_remaining_pct": 64.0, "requests": 24, "retries": 0}


@runnable
def collect_streams(games: int = 20) -> dict:
    time.sleep(0.05)
    failed = random.choice([0, 0, 1])
    return {"items_total": games, "items_failed": failed, "total_viewers": 1_250_000, "requests": games, "retries": 1}


@runnable
def analyse_creators() -> dict:
    time.sleep(0.1)
    return {"games_processed": 8, "items_total": 8, "items_failed": 0, "validation_warnings": 1}


@runnable
def aggregate_intel() -> dict:
    time.sleep(0.05)
    return {"categories_aggregated": 12, "items_total": 12, "cache_misses": 0}


@runnable
def flaky_flush() -> dict:
    """Fails one time in three, so the demo shows failures, scores and anomalies."""
    if random.random() < 1 / 3:
        raise RuntimeError("analytics store unavailable (demo failure)")
    return {"events_flushed": 420, "items_total": 420}
