"""Dispatch latency: from ``enqueue`` to the job starting, on an idle cluster.

A real ``qcluster`` and the loop runner (``manage.py run_orchestrator``) run beside
this process, as in ``make run``. Jobs are queued one at a time, each once the
previous one finished, with a random pause between them, so the cluster is idle each
time: the figure is the queue's own delay (``started_at - created_at``: the node
noticing the job, claiming it, handing it to a worker process and the start
statement), not waiting for capacity. An idle node on SQLite looks every
``JOB_POLL_SECONDS`` at most; on PostgreSQL the enqueue's NOTIFY wakes it.

Targets: on SQLite p50 ≤ 15 ms and p99 ≤ 50 ms; on PostgreSQL p50 ≤ 5 ms.

    python bench/dispatch_latency.py [--samples 200] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    Report,
    Row,
    check,
    finish,
    percentile,
    progress,
    running,
    setup_django,
    table,
    wait_for,
)

TARGETS_MS = {"sqlite": (15, 50), "postgresql": (5, None)}  # (p50, p99)


def run(*, quick: bool = False, samples: int | None = None) -> Report:
    samples = samples or (40 if quick else 200)
    setup_django("latency", fresh=True)

    from django.db import connection
    from django.utils import timezone

    from bench.common import profile_name
    from orchestration.core.jobs import queue
    from orchestration.core.models import Job
    from orchestration.loop.models import LoopState

    p50_target, p99_target = TARGETS_MS[connection.vendor]
    print(f"Dispatch latency benchmark on {profile_name()}: {samples} jobs, one at a time")
    rng = random.Random(7)
    LoopState.get()

    def job_latency() -> float:
        job = queue.enqueue("noop")
        row = Job.objects.filter(pk=job.pk)
        wait_for(lambda: row.filter(status="completed").exists(), timeout=30, what=f"job {job.pk}", procs=procs)
        created, started = row.values_list("created_at", "started_at").get()
        return (started - created).total_seconds()

    with running(("qcluster", ["qcluster"]), ("loop", ["run_orchestrator"])) as procs:
        progress("waiting for the cluster and the loop runner")
        wait_for(
            lambda: LoopState.get().dedicated_runner_alive(timezone.now()),
            timeout=60,
            what="the loop runner",
            procs=procs,
        )
        for _ in range(3):  # warm-up: imports, connections
            job_latency()
        ours = []
        for n in range(samples):
            time.sleep(rng.uniform(0.05, 0.25))  # idle again, and not phase-locked with a poll
            ours.append(job_latency())
            if (n + 1) % max(1, samples // 5) == 0:
                progress(f"{n + 1}/{samples}: job p50 {statistics.median(ours) * 1000:.1f} ms")

    p50, p99 = percentile(ours, 50) * 1000, percentile(ours, 99) * 1000
    print()
    print(
        table(
            ["path", "p50 ms", "p99 ms", "max ms"],
            [["orchestrator: enqueue → job started", f"{p50:.1f}", f"{p99:.1f}", f"{max(ours) * 1000:.1f}"]],
            left=1,
        )
    )
    figure = f"enqueue → started, {samples} jobs, idle cluster"
    rows = [
        Row(
            "dispatch_latency",
            f"{figure}, p50",
            round(p50, 1),
            "ms",
            target=f"≤ {p50_target} ms",
            passed=check(p50, "≤", p50_target),
        ),
        Row(
            "dispatch_latency",
            f"{figure}, p99",
            round(p99, 1),
            "ms",
            target=f"≤ {p99_target} ms" if p99_target else "",
            passed=check(p99, "≤", p99_target) if p99_target else None,
        ),
    ]
    return Report(
        "dispatch_latency",
        {
            "samples": samples,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(max(ours) * 1000, 1),
            "mean_ms": round(statistics.mean(ours) * 1000, 1),
        },
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int)
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(quick=args.quick, samples=args.samples)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


if __name__ == "__main__":
    main()
