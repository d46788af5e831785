"""Dispatch latency: from ``enqueue`` to the job starting, with free capacity.

A real ``qcluster`` and the loop runner (``manage.py run_orchestrator``) run beside
this process, as in ``make run``. Jobs are queued one at a time, each once the
previous one finished, so there is always a free worker: the figure is the queue's
own delay (``started_at - created_at``), not waiting for capacity. Baseline, measured
alternately in the same run: bare django-q2, ``async_task`` of the same no-op until
its task stopped (django-q2 stamps ``started`` at enqueue time).

Targets: p50 ≤ 100 ms, p99 ≤ 1 s.

    python bench/dispatch_latency.py [--samples 200] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
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

P50_TARGET_MS = 100
P99_TARGET_MS = 1000
NOOP = "orchestration.jobs.kinds.noop"


def run(*, quick: bool = False, samples: int | None = None) -> Report:
    samples = samples or (40 if quick else 200)
    setup_django("latency", fresh=True)

    from django.utils import timezone
    from django_q.models import Task
    from django_q.tasks import async_task

    from bench.common import profile_name
    from orchestration.jobs import queue
    from orchestration.models import Job, LoopState

    print(f"Dispatch latency benchmark on {profile_name()}: {samples} jobs, one at a time")
    rng = random.Random(7)
    LoopState.get()

    def job_latency() -> float:
        job = queue.enqueue("noop")
        row = Job.objects.filter(pk=job.pk)
        wait_for(lambda: row.filter(status="completed").exists(), timeout=30, what=f"job {job.pk}", procs=procs)
        created, started = row.values_list("created_at", "started_at").get()
        return (started - created).total_seconds()

    def task_latency() -> float:
        group = uuid.uuid4().hex[:12]
        async_task(NOOP, {}, None, group=group)
        rows = Task.objects.filter(group=group)
        wait_for(rows.exists, timeout=30, what=f"task {group}", procs=procs)
        started, stopped = rows.values_list("started", "stopped").get()
        return (stopped - started).total_seconds()

    with running(("qcluster", ["qcluster"]), ("loop", ["run_orchestrator"]), Q_SAVE_LIMIT="0") as procs:
        progress("waiting for the cluster and the loop runner")
        wait_for(
            lambda: LoopState.get().dedicated_runner_alive(timezone.now()),
            timeout=60,
            what="the loop runner",
            procs=procs,
        )
        for _ in range(3):  # warm-up: imports, connections
            job_latency(), task_latency()
        ours, base = [], []
        for n in range(samples):
            ours.append(job_latency())
            time.sleep(rng.uniform(0, 0.05))  # do not phase-lock with the cluster's poll
            base.append(task_latency())
            time.sleep(rng.uniform(0, 0.05))
            if (n + 1) % max(1, samples // 5) == 0:
                progress(f"{n + 1}/{samples}: job p50 {statistics.median(ours) * 1000:.0f} ms")

    p50, p99 = percentile(ours, 50) * 1000, percentile(ours, 99) * 1000
    b50, b99 = percentile(base, 50) * 1000, percentile(base, 99) * 1000
    print()
    print(
        table(
            ["path", "p50 ms", "p99 ms", "max ms"],
            [
                ["orchestrator: enqueue → job started", f"{p50:.1f}", f"{p99:.1f}", f"{max(ours) * 1000:.1f}"],
                ["bare django-q2: async_task → task done", f"{b50:.1f}", f"{b99:.1f}", f"{max(base) * 1000:.1f}"],
            ],
            left=1,
        )
    )
    figure = f"enqueue → started, {samples} jobs"
    return Report(
        "dispatch_latency",
        {
            "samples": samples,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "max_ms": round(max(ours) * 1000, 1),
            "mean_ms": round(statistics.mean(ours) * 1000, 1),
            "baseline_p50_ms": round(b50, 1),
            "baseline_p99_ms": round(b99, 1),
        },
        [
            Row(
                "dispatch_latency",
                f"{figure}, p50",
                round(p50, 1),
                "ms",
                baseline=round(b50, 1),
                ratio=round(p50 / b50, 2),
                target=f"≤ {P50_TARGET_MS} ms",
                passed=check(p50, "≤", P50_TARGET_MS),
            ),
            Row(
                "dispatch_latency",
                f"{figure}, p99",
                round(p99, 1),
                "ms",
                baseline=round(b99, 1),
                ratio=round(p99 / b99, 2),
                target=f"≤ {P99_TARGET_MS} ms",
                passed=check(p99, "≤", P99_TARGET_MS),
            ),
        ],
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
