"""Control-loop cycle cost against data size.

For 1k, 10k and 100k jobs beside 1M ledger rows: queries per cycle, median cycle time,
and the ratio of the largest to the smallest. Measured cycles are dry runs so every
sample sees the same data (an executing cycle's cost depends on what its actions do,
which is bounded by their batch size); one executing cycle per size is shown too.

Targets: largest/smallest median ≤ 3, queries per cycle constant and ≤ 15, median
cycle at the largest size ≤ 100 ms. ``--quick``: 100k ledger rows, 1k and 10k jobs.

    python bench/cycle.py [--ledger 1000000] [--sizes 1000,10000,100000] [--cycles 15] [--quick]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Report, Row, check, finish, median_ms, progress, setup_django, table

BATCH = 5000
STATUS_MIX = [("completed", 70), ("failed", 10), ("pending", 10), ("retry", 5), ("processing", 5)]


def run(
    *, quick: bool = False, ledger: int | None = None, sizes: str | None = None, cycles: int | None = None
) -> Report:
    ledger = ledger if ledger is not None else (100_000 if quick else 1_000_000)
    job_sizes = [int(x) for x in (sizes or ("1000,10000" if quick else "1000,10000,100000")).split(",")]
    cycles = cycles or (5 if quick else 15)
    # Not fresh: the ledger rows are written once and reused by later runs.
    setup_django("cycle")

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from bench.common import profile_name
    from orchestration.core.models import Job, LedgerEntry
    from orchestration.loop.cycle import run_cycle
    from orchestration.loop.models import Action, LoopState

    print(f"Cycle benchmark on {profile_name()}")
    rng = random.Random(42)
    now = timezone.now()
    Job.objects.all().delete()
    Action.objects.all().delete()
    # Entries the measured cycles wrote last time go; the seeded ones stay.
    LedgerEntry.objects.exclude(message="bench").delete()
    have = LedgerEntry.objects.count()
    if have != ledger:
        progress(f"writing {ledger:,} ledger rows over 30 days (once; reused by later runs)")
        LedgerEntry.objects.all().delete()
        for start in range(0, ledger, BATCH):
            LedgerEntry.objects.bulk_create(
                LedgerEntry(
                    event_type=rng.choice(["orchestrator.cycle_idle", "job.failed", "health.check"]),
                    severity="error" if rng.random() < 0.001 else "info",
                    message="bench",
                    created_at=now - timedelta(seconds=rng.uniform(0, 30 * 86400)),
                )
                for _ in range(min(BATCH, ledger - start))
            )
            if (start // BATCH) % 40 == 0:
                progress(f"ledger {start + BATCH:,}/{ledger:,}")
    LoopState.get()
    statuses = [s for s, weight in STATUS_MIX for _ in range(weight)]
    rows = []
    for size in job_sizes:
        missing = size - Job.objects.count()
        progress(f"growing the queue to {size:,} jobs")
        for start in range(0, missing, BATCH):
            batch = []
            for _ in range(min(BATCH, missing - start)):
                status = rng.choice(statuses)
                created = now - timedelta(seconds=rng.uniform(0, 3 * 86400))
                batch.append(
                    Job(
                        kind="noop",
                        status=status,
                        priority=rng.choice(["low", "normal", "normal", "high", "critical"]),
                        score=rng.uniform(0, 100) if rng.random() < 0.5 else None,
                        created_at=created,
                        finished_at=created + timedelta(seconds=5) if status in ("completed", "failed") else None,
                        lease_expires_at=now + timedelta(hours=1) if status == "processing" else None,
                    )
                )
            Job.objects.bulk_create(batch)
        run_cycle(dry_run=True)  # warm caches
        samples, queries = [], set()
        for _ in range(cycles):
            with CaptureQueriesContext(connection) as ctx:
                started = time.perf_counter()
                run_cycle(dry_run=True)
                samples.append(time.perf_counter() - started)
            queries.add(len(ctx.captured_queries))
        started = time.perf_counter()
        with CaptureQueriesContext(connection) as ctx:
            executed = run_cycle(dry_run=False)
        executing_ms = round((time.perf_counter() - started) * 1000, 1)
        rows.append(
            {
                "jobs": size,
                "queries": sorted(queries),
                "median_ms": median_ms(samples),
                "executing_cycle_ms": executing_ms,
                "executing_actions": len(executed["decision"]["actions"]),
            }
        )
        progress(f"{size:,} jobs: median {rows[-1]['median_ms']} ms, queries {sorted(queries)}")
        Job.objects.filter(created_at__gt=now - timedelta(seconds=1)).delete()  # anything an action created
    ratio = round(rows[-1]["median_ms"] / rows[0]["median_ms"], 2)
    print()
    print(
        table(
            ["jobs", "ledger rows", "queries/cycle", "median cycle ms", "executing cycle ms (actions)"],
            [
                [
                    f"{r['jobs']:,}",
                    f"{ledger:,}",
                    ",".join(map(str, r["queries"])),
                    r["median_ms"],
                    f"{r['executing_cycle_ms']} ({r['executing_actions']})",
                ]
                for r in rows
            ],
        )
    )
    constant = len({q for r in rows for q in r["queries"]}) == 1
    most = max(q for r in rows for q in r["queries"])
    largest = rows[-1]
    print(f"\nratio largest/smallest median: {ratio}  (target ≤ 3)")
    print(f"queries constant: {constant}; max {most} (target ≤ 15)")
    print(f"median at {largest['jobs']:,} jobs: {largest['median_ms']} ms (target ≤ 100 ms)")
    at = f"{largest['jobs']:,} jobs + {ledger:,} ledger rows"
    return Report(
        "cycle",
        {"ledger_rows": ledger, "rows": rows, "ratio": ratio, "queries_constant": constant},
        [
            Row(
                "cycle",
                f"median cycle, {at}",
                largest["median_ms"],
                "ms",
                baseline=rows[0]["median_ms"],
                ratio=ratio,
                target="ratio ≤ 3",
                passed=check(ratio, "≤", 3),
            ),
            Row(
                "cycle",
                f"median cycle, {at}",
                largest["median_ms"],
                "ms",
                target="≤ 100 ms",
                passed=check(largest["median_ms"], "≤", 100),
            ),
            Row(
                "cycle",
                "queries per cycle, every size",
                most,
                "",
                target="constant, ≤ 15",
                passed=constant and check(most, "≤", 15),
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ledger", type=int)
    parser.add_argument("--sizes")
    parser.add_argument("--cycles", type=int)
    parser.add_argument("--quick", action="store_true", help="smaller ledger and queue, fewer cycles")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(quick=args.quick, ledger=args.ledger, sizes=args.sizes, cycles=args.cycles)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


if __name__ == "__main__":
    main()
