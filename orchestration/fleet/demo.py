"""Demo loader: a small fleet with python targets, run a few times at once so the
first visit shows runs, scores and anomalies. Everything is named ``demo-…``."""

from __future__ import annotations

from orchestration.core.demo import DEMO_PREFIX, register_demo
from orchestration.core.models import Anomaly

P = "orchestration.fleet.demo_targets."

DEMO_WORKERS = [
    {
        "name": f"{DEMO_PREFIX}-youtube",
        "category": "collection",
        "interval_seconds": 1800,
        "timeout_seconds": 300,
        "expected_duration_seconds": 1,
        "freshness_seconds": 3600,
        "target": {"type": "python", "path": P + "collect_trending"},
    },
    {
        "name": f"{DEMO_PREFIX}-twitch-streams",
        "category": "collection",
        "interval_seconds": 900,
        "timeout_seconds": 300,
        "expected_duration_seconds": 1,
        "freshness_seconds": 1800,
        "target": {"type": "python", "path": P + "collect_streams"},
    },
    {
        "name": f"{DEMO_PREFIX}-creator-intel",
        "category": "intelligence",
        "cron": "0 */4 * * *",
        "timeout_seconds": 1800,
        "expected_duration_seconds": 2,
        "freshness_seconds": 14400,
        "depends_on": [f"{DEMO_PREFIX}-youtube"],
        "run_after_upstream": True,
        "target": {"type": "python", "path": P + "analyse_creators"},
    },
    {
        "name": f"{DEMO_PREFIX}-intel-aggregation",
        "category": "aggregation",
        "cron": "5 * * * *",
        "timeout_seconds": 300,
        "expected_duration_seconds": 1,
        "depends_on": [f"{DEMO_PREFIX}-creator-intel"],
        "run_after_upstream": True,
        "target": {"type": "python", "path": P + "aggregate_intel"},
    },
    {
        "name": f"{DEMO_PREFIX}-analytics-flush",
        "category": "maintenance",
        "interval_seconds": 3600,
        "timeout_seconds": 600,
        "expected_duration_seconds": 1,
        "target": {"type": "python", "path": P + "flaky_flush"},
    },
]


class WorkersDemo:
    def load(self) -> str:
        from orchestration.fleet.builtins import ensure_builtin_workers
        from orchestration.fleet.models import Worker, WorkerRun
        from orchestration.fleet.runner import execute_run, request_run

        ensure_builtin_workers()
        if Worker.objects.filter(name__startswith=f"{DEMO_PREFIX}-").exists():
            return "already loaded"
        for spec in DEMO_WORKERS:
            Worker.objects.create(**spec)
        # Run the fleet a few times now (inline), upstreams first; downstream runs
        # queued by "run after upstream" are executed too.
        for _ in range(3):
            for name in (f"{DEMO_PREFIX}-youtube", f"{DEMO_PREFIX}-twitch-streams", f"{DEMO_PREFIX}-analytics-flush"):
                execute_run(request_run(Worker.objects.get(name=name), actor="demo").pk)
            for run_id in (
                WorkerRun.objects.filter(worker__name__startswith=f"{DEMO_PREFIX}-", status="queued")
                .order_by("id")
                .values_list("pk", flat=True)
            ):
                execute_run(run_id)
        runs = WorkerRun.objects.filter(worker__name__startswith=f"{DEMO_PREFIX}-").count()
        return f"{len(DEMO_WORKERS)} demo workers (plus the built-in ones), {runs} runs"

    def remove(self) -> int:
        from orchestration.fleet.models import Worker

        anomalies = Anomaly.objects.filter(subject__startswith=f"worker:{DEMO_PREFIX}-").delete()[0]
        return anomalies + Worker.objects.filter(name__startswith=f"{DEMO_PREFIX}-").delete()[0]


register_demo("workers", WorkersDemo())
