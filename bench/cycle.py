"""Control-loop cycle cost against data size.

For 1k, 10k and 100k jobs beside 1M ledger rows: queries per cycle, median cycle time,
and the ratio of the largest to the smallest. Measured cycles are dry runs so every
sample sees the same data (an executing cycle's cost depends on what its actions do,
which is bounded by their batch size); one executing cycle per size is shown too.

    python bench/cycle.py [--ledger 1000000] [--sizes 1000,10000,100000] [--cycles 15]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import median_ms, progress, save, setup_django, table

BATCH = 5000
STATUS_MIX = [("completed", 70), ("failed", 10), ("pending", 10), ("retry", 5), ("processing", 5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ledger", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--cycles", type=int, default=15)
    args = parser.parse_args()
    setup_django("bench-cycle.sqlite3")

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from bench.common import profile_name
    from orchestration.loop.cycle import run_cycle
    from orchestration.models import Action, Job, LedgerEntry, LoopState

    print(f"Cycle benchmark on {profile_name()}")
    rng = random.Random(42)
    now = timezone.now()
    Job.objects.all().delete()
    Action.objects.all().delete()
    have = LedgerEntry.objects.count()
    if have != args.ledger:
        progress(f"writing {args.ledger:,} ledger rows over 30 days (once; reused by later runs)")
        LedgerEntry.objects.all().delete()
        for start in range(0, args.ledger, BATCH):
            LedgerEntry.objects.bulk_create(
                LedgerEntry(
                    event_type=rng.choice(["orchestrator.cycle_idle", "job.failed", "health.check"]),
                    severity="error" if rng.random() < 0.001 else "info",
                    message="bench",
                    created_at=now - timedelta(seconds=rng.uniform(0, 30 * 86400)),
                )
                for _ in range(min(BATCH, args.ledger - start))
            )
            if (start // BATCH) % 40 == 0:
                progress(f"ledger {start + BATCH:,}/{args.ledger:,}")
    LoopState.get()
    statuses = [s for s, weight in STATUS_MIX for _ in range(weight)]
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
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
        for _ in range(args.cycles):
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
                    f"{args.ledger:,}",
                    ",".join(map(str, r["queries"])),
                    r["median_ms"],
                    f"{r['executing_cycle_ms']} ({r['executing_actions']})",
                ]
                for r in rows
            ],
        )
    )
    constant = len({q for r in rows for q in r["queries"]}) == 1
    print(f"\nratio largest/smallest median: {ratio}  (target ≤ 3)")
    print(f"queries constant: {constant}; max {max(q for r in rows for q in r['queries'])} (target ≤ 15)")
    print(f"median at {rows[-1]['jobs']:,} jobs: {rows[-1]['median_ms']} ms (target ≤ 100 ms)")
    save("cycle", {"ledger_rows": args.ledger, "rows": rows, "ratio": ratio, "queries_constant": constant})


if __name__ == "__main__":
    main()
