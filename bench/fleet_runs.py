"""Worker-run overhead and the cost of the fleet's snapshot section.

1. Per-run cost of an orchestrated worker run (request → gates → lock → target →
   run row, score report, anomaly rules, ledger) for a no-op python target, against
   a baseline measured in the same process: the same no-op as a plain queue job.
2. The ``workers`` snapshot section (one query of four parts: the fleet, its active
   runs, the last hour's per-minute run counts, its open anomalies) on a small and a
   large history, with the ratio of the two. Per read, each side reads every worker
   row, the active runs through their index, at most 61 minute rows and the open
   anomalies; the large history is written in bulk, so its minute counts are rebuilt
   from the runs table once, untimed, as if each run had been counted as it ended.

Targets: a no-op worker run ≤ 3 ms; the section over the large history ≤ 2× its
cost over the small one (its cost does not follow the size of the history). ``--quick``: 50 runs, a
history of 10,000 runs.

    python bench/fleet_runs.py [--runs 200] [--workers 200] [--history 100000] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Report, Row, check, finish, median_ms, progress, setup_django, table


def run(*, quick: bool = False, runs: int | None = None, workers: int = 200, history: int | None = None) -> Report:
    runs = runs or (50 if quick else 200)
    history = history or (10_000 if quick else 100_000)
    progress("migrating a fresh benchmark database")
    setup_django("fleet", fresh=True)

    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from orchestration.core.jobs import queue
    from orchestration.core.models import Anomaly, Job
    from orchestration.fleet import tally
    from orchestration.fleet.loop import workers_section
    from orchestration.fleet.models import Worker, WorkerRun
    from orchestration.fleet.runner import execute_run, request_run

    settings.RUNNABLE_PATHS = [*settings.RUNNABLE_PATHS, "bench.fleet_runs.noop_target"]
    worker = Worker.objects.create(
        name="bench-noop",
        category="maintenance",
        execution_model="on_demand",
        timeout_seconds=30,
        target={"type": "python", "path": "bench.fleet_runs.noop_target"},
    )

    progress(f"baseline: {runs} plain no-op jobs through the queue")
    base = []
    for _ in range(runs):
        job = queue.enqueue("noop", wake_nodes=False)
        t = time.perf_counter()
        Job.objects.filter(pk=job.pk).update(status="processing", lease_token="b")
        queue.execute(job.pk, "b")
        base.append(time.perf_counter() - t)

    progress(f"{runs} orchestrated worker runs")
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        execute_run(request_run(worker).pk)
        samples.append(time.perf_counter() - t)
    assert WorkerRun.objects.filter(worker=worker, status="succeeded").count() == runs

    def section_cost() -> tuple[float, int]:
        samples = []
        for _ in range(7):
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                workers_section(timezone.now())
                samples.append(time.perf_counter() - t)
        return median_ms(samples), len(ctx.captured_queries)

    small_ms, small_q = section_cost()
    progress(f"building a large history: {workers} workers, {history} runs")
    now = timezone.now()
    fleet = Worker.objects.bulk_create(
        [
            Worker(name=f"bench-{i}", category="collection", target={"type": "python", "path": "x.y"})
            for i in range(workers)
        ]
    )
    per = max(1, history // workers)
    for start in range(0, len(fleet), 20):
        WorkerRun.objects.bulk_create(
            [
                WorkerRun(
                    worker=w,
                    execution_id=f"{w.pk:08d}{n:024d}",
                    status="failed" if n % 9 == 0 else "succeeded",
                    completed_at=now - timedelta(minutes=n % 180),
                )
                for w in fleet[start : start + 20]
                for n in range(per)
            ],
            batch_size=2000,
        )
    tally.recount(now - timedelta(hours=3))
    Anomaly.objects.bulk_create(
        [Anomaly(code="CACHE_MISS", severity="medium", subject=f"worker:{w.name}") for w in fleet]
    )
    large_ms, large_q = section_cost()

    print()
    print(
        table(
            ["measure", "median ms", "queries", "ratio"],
            [
                ["no-op queue job (baseline)", median_ms(base), "", "1.0"],
                ["no-op worker run", median_ms(samples), "", f"{median_ms(samples) / median_ms(base):.1f}"],
                [f"workers section, {runs} runs / 1 worker", small_ms, small_q, "1.0"],
                [
                    f"workers section, {history} runs / {workers} workers",
                    large_ms,
                    large_q,
                    f"{large_ms / small_ms:.1f}",
                ],
            ],
        )
    )

    run_ms, base_ms = median_ms(samples), median_ms(base)
    return Report(
        "fleet_runs",
        {
            "runs": runs,
            "worker_run_median_ms": run_ms,
            "queue_job_median_ms": base_ms,
            "section_small": {"runs": runs, "workers": 1, "median_ms": small_ms, "queries": small_q},
            "section_large": {"runs": history, "workers": workers, "median_ms": large_ms, "queries": large_q},
        },
        [
            Row(
                "fleet_runs",
                "no-op worker run (baseline: no-op queue job)",
                run_ms,
                "ms",
                baseline=base_ms,
                ratio=round(run_ms / base_ms, 2),
                target="≤ 3 ms",
                passed=check(run_ms, "≤", 3),
            ),
            Row(
                "fleet_runs",
                f"workers section, {history:,} runs / {workers} workers (baseline: {runs} / 1)",
                large_ms,
                "ms",
                baseline=small_ms,
                ratio=round(large_ms / small_ms, 2),
                target="ratio ≤ 2",
                passed=check(large_ms / small_ms, "≤", 2),
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--history", type=int)
    parser.add_argument("--quick", action="store_true", help="fewer runs, a smaller history")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(quick=args.quick, runs=args.runs, workers=args.workers, history=args.history)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


def noop_target() -> dict:
    return {}


if __name__ == "__main__":
    main()
