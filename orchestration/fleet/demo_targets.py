"""Targets of the demo fleet.

Seed 004's 14 workers call this server's own ``/demo/workers/<name>`` endpoints, which
answer with the metrics a real worker of that kind reports (items processed, quota
left, items failed, cache misses). ``demo_metrics`` is pure and varies with the run's
number, so the first runs already show score reports and several anomaly codes
(API_QUOTA_LOW, PARTIAL_SUCCESS, CACHE_MISS, DATA_CORRUPTION, failures). The python
targets below are those of the older five-worker demo, kept for rows that name them.
"""

from __future__ import annotations

import random
import time
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from orchestration.core.demo import DEMO_PREFIX
from orchestration.core.runnables import runnable
from orchestration.fleet.models import Worker, WorkerRun

# The demo playbook's output schema: a run that reports no generated report breaks it,
# and the orchestrator itself raises DATA_CORRUPTION.
PLAYBOOK_SCHEMA = {
    "type": "object",
    "properties": {"report_generated": {"const": True}, "items_total": {"type": "integer", "minimum": 0}},
    "required": ["report_generated", "items_total"],
}


def demo_metrics(name: str, n: int) -> tuple[int, dict[str, Any]]:
    """(HTTP status, metrics) of the demo worker ``name`` on its ``n``-th run. Pure."""
    if name in ("youtube-trending", "youtube-games"):
        quota = [12.0, 64.0, 48.0, 31.0][n % 4]  # the day's quota runs low, then resets
        total = 12 if name == "youtube-trending" else 40
        return 200, {"items_total": total, "items_failed": 0, "quota_remaining_pct": quota, "requests": total * 2}
    if name == "twitch-streams":
        return 200, {"items_total": 20, "items_failed": 1 if n % 2 == 0 else 0, "total_viewers": 1_250_000 + 7919 * n}
    if name == "clip-radar":
        return 200, {"items_total": 300, "viral_detected": 4, "cache_misses": 3 if n % 2 == 0 else 0}
    if name == "creator-intel":
        return 200, {"items_total": 8, "items_failed": 0, "analyzers_succeeded": 5}
    if name == "thumbnail-intel":
        return 200, {"items_total": 10, "thumbnails_processed": 480, "memory_mb": 900}
    if name.startswith("intel-aggregation"):
        return 200, {"items_total": 12, "categories_aggregated": 12, "cache_misses": 0}
    if name == "playbook":
        return 200, {"report_generated": n % 3 != 0, "items_total": 6}
    if name == "analytics-flush":
        if n % 3 == 0:
            return 503, {"error": "analytics store unavailable (demo failure)"}
        return 200, {"items_total": 420, "events_flushed": 420, "asset_types_updated": 7}
    if name == "coach-cleanup":
        return 200, {"items_total": 16, "sessions_cleaned": 14, "sessions_skipped": 2}
    if name == "clip-radar-recap":
        return 200, {"items_total": 1200, "clips_compressed": 1200, "viral_clips": 17}
    if name in ("generation", "twitch-packs"):
        return 202, {"items_total": 1, "jobs_completed": 1}
    return 404, {}


@csrf_exempt
@require_POST
def demo_worker_endpoint(request: HttpRequest, name: str) -> JsonResponse:
    """Answers only while the demo fleet has the worker calling it: anonymous (a
    worker's HTTP call carries no session) but not open on every install."""

    worker = Worker.objects.filter(name=f"{DEMO_PREFIX}-{name}").first()
    if worker is None:
        return JsonResponse({"detail": "Not found."}, status=404)
    n = WorkerRun.objects.filter(worker=worker, started_at__isnull=False).count() - 1
    status, metrics = demo_metrics(name, max(0, n))
    if status >= 400:
        return JsonResponse({"detail": metrics.get("error", "failed")}, status=status)
    return JsonResponse({"metrics": metrics}, status=status)


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
