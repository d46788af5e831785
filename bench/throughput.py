"""Job throughput through the orchestrator against bare django-q2, in the same run.

Orchestrator: ``queue.enqueue("noop")`` N times (each call its own transaction, as N
API requests would be), executed by a real ``qcluster`` on the Job-table broker.
Per job it writes: one INSERT of the Job row (plus a NOTIFY on PostgreSQL), its share
of one claim UPDATE per batch (Q_BULK jobs), the start UPDATE … RETURNING, and the
finish UPDATE that stores the result in the row.

Baselines: ``async_task`` of the very same no-op N times, from a process of its own,
executed by a ``qcluster`` on django-q2's own broker (``DJANGO_Q_BASELINE_BROKER``),
with every result saved (``Q_SAVE_LIMIT=0``, so completions can be counted), under
the same cluster settings otherwise (2 workers). Per task django-q2 writes: with its
ORM broker one INSERT into its queue table, a SELECT and a lock UPDATE to take it,
the INSERT of its result row and the DELETE that acknowledges it; with Redis an RPUSH,
a BLPOP and the INSERT of its result row. SQLite is measured against the ORM broker;
PostgreSQL against the Redis broker and against the ORM broker.

Each figure runs from the first enqueue (``Job.created_at``, django-q2's
``Task.started``, stamped in ``async_task``) to the last completion (``Job.finished_at``,
``Task.stopped``); the paths alternate and the median of the rounds is
reported. Rounds are 2,000 jobs long: rounds of 500 lasted under a second and their
figure was mostly start-up and noise.

Targets: ≥ 1.3× the ORM broker on SQLite; on PostgreSQL ≥ 1.0× the Redis broker and
≥ 2× the ORM broker.

    python bench/throughput.py [--jobs 2000] [--repeat 3] [--quick]
    python bench/throughput.py --enqueue-baseline N --group G   (internal: the baseline's enqueuer)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Report, Row, check, finish, progress, running, setup_django, table, wait_for

NOOP = "orchestration.core.jobs.kinds.noop"  # the handler of the "noop" job kind
TARGETS = {("sqlite", "orm"): 1.3, ("postgresql", "redis"): 1.0, ("postgresql", "orm"): 2.0}


def run(*, quick: bool = False, jobs: int | None = None, repeat: int | None = None) -> Report:
    jobs = jobs or (200 if quick else 2000)
    repeat = repeat or (1 if quick else 3)
    setup_django("throughput", fresh=True)

    import os

    from django.db import connection
    from django.db.models import Max, Min
    from django.utils import timezone
    from django_q.models import Task

    from bench.common import profile_name
    from orchestration.core.jobs import queue
    from orchestration.core.models import Job

    vendor = connection.vendor
    baselines = ["orm"] if vendor == "sqlite" else ["redis", "orm"]
    if "redis" in baselines and not os.environ.get("REDIS_URL"):
        baselines.remove("redis")
        print("  (no REDIS_URL: the Redis-broker baseline is left out)")
    print(f"Throughput benchmark on {profile_name()}: {jobs} no-op jobs, {repeat} round(s), baselines {baselines}")
    enqueue_seconds: dict[str, list[float]] = {}

    def baseline_round(broker: str, cluster) -> float:
        group = f"bench-{uuid.uuid4().hex[:12]}"
        env = baseline_env(broker)
        began = timezone.now()
        subprocess.run(
            [sys.executable, __file__, "--enqueue-baseline", str(jobs), "--group", group],
            env={**os.environ, **env},
            check=True,
        )
        enqueue_seconds.setdefault(broker, []).append((timezone.now() - began).total_seconds())
        wait_for(
            lambda: Task.objects.filter(group=group).count() >= jobs,
            timeout=60 + jobs / 5,
            what=f"{jobs} django-q2 tasks",
            procs=cluster,
        )
        failed = Task.objects.filter(group=group, success=False).count()
        assert not failed, f"{failed} baseline tasks failed"
        # From the first task's enqueue (django-q2 stamps "started" in async_task), so
        # the enqueuing process's start-up is not counted against the baseline.
        span = Task.objects.filter(group=group).aggregate(begin=Min("started"), end=Max("stopped"))
        return _rate(jobs, span["begin"], span["end"])

    def orchestrator_round(cluster) -> float:
        began = timezone.now()
        ids = [queue.enqueue("noop").pk for _ in range(jobs)]
        enqueue_seconds.setdefault("orchestrator", []).append((timezone.now() - began).total_seconds())
        # By id range and kind: the built-in workers' scheduled runs are jobs too.
        mine = Job.objects.filter(pk__gte=ids[0], pk__lte=ids[-1], kind="noop")
        wait_for(
            lambda: mine.filter(status="completed").count() >= jobs,
            timeout=60 + jobs / 5,
            what=f"{jobs} jobs completed",
            procs=cluster,
        )
        stats = mine.aggregate(
            begin=Min("created_at"), end=Max("finished_at"), most=Max("attempts"), least=Min("attempts")
        )
        assert stats["most"] == stats["least"] == 1, "a job ran more than once"
        return _rate(jobs, stats["begin"], stats["end"])

    samples: dict[str, list[float]] = {"orchestrator": [], **{b: [] for b in baselines}}
    for n in range(repeat):
        # Alternate the order so drift (caches, the machine's other load) is shared.
        order = ["orchestrator", *baselines] if n % 2 == 0 else [*baselines, "orchestrator"]
        for name in order:
            env = {"Q_SAVE_LIMIT": "0"} if name == "orchestrator" else {"Q_SAVE_LIMIT": "0", **baseline_env(name)}
            with running(("qcluster", ["qcluster"]), **env) as cluster:
                warm_up(name, cluster)
                if name == "orchestrator":
                    samples[name].append(orchestrator_round(cluster))
                else:
                    samples[name].append(baseline_round(name, cluster))
            progress(f"round {n + 1}/{repeat}: {name} {samples[name][-1]:.0f} jobs/s")

    orch_rate = statistics.median(samples["orchestrator"])
    print()
    lines = [["orchestrator enqueue → Job completed", f"{orch_rate:.0f}", _fmt(samples["orchestrator"])]]
    rows = []
    details: dict = {
        "jobs": jobs,
        "rounds": repeat,
        "orchestrator_jobs_per_s": [round(x, 1) for x in samples["orchestrator"]],
    }
    for broker in baselines:
        rate = statistics.median(samples[broker])
        ratio = orch_rate / rate
        target = TARGETS[(vendor, broker)]
        lines.append([f"bare django-q2 async_task, {broker} broker", f"{rate:.0f}", _fmt(samples[broker])])
        details[f"baseline_{broker}_jobs_per_s"] = [round(x, 1) for x in samples[broker]]
        details[f"ratio_vs_{broker}"] = round(ratio, 3)
        rows.append(
            Row(
                "throughput",
                f"{jobs} no-op jobs, enqueue → completed, vs django-q2 {broker} broker",
                round(orch_rate, 1),
                "jobs/s",
                baseline=round(rate, 1),
                ratio=round(ratio, 3),
                target=f"ratio ≥ {target}",
                passed=check(ratio, "≥", target),
            )
        )
    print(table(["path", "jobs/s (median)", "rounds"], lines, left=1))
    for broker in baselines:
        print(
            f"ratio against the {broker} broker {details[f'ratio_vs_{broker}']:.2f} "
            f"(target ≥ {TARGETS[(vendor, broker)]})"
        )
    details["enqueue_seconds"] = {k: [round(x, 2) for x in v] for k, v in enqueue_seconds.items()}
    return Report("throughput", details, rows)


def baseline_env(broker: str) -> dict[str, str]:
    import os

    return {"DJANGO_Q_BASELINE_BROKER": "orm" if broker == "orm" else os.environ["REDIS_URL"]}


def warm_up(name: str, cluster) -> None:
    """One job through the cluster before the clock starts."""
    import os

    from django_q.models import Task

    from orchestration.core.jobs import queue
    from orchestration.core.models import Job

    if name == "orchestrator":
        warm = Job.objects.filter(pk=queue.enqueue("noop").pk)
        wait_for(lambda: warm.filter(status="completed").exists(), timeout=60, what="the cluster", procs=cluster)
        return
    group = f"warm-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [sys.executable, __file__, "--enqueue-baseline", "1", "--group", group],
        env={**os.environ, **baseline_env(name)},
        check=True,
    )
    wait_for(lambda: Task.objects.filter(group=group).exists(), timeout=60, what="the cluster", procs=cluster)


def enqueue_baseline(jobs: int, group: str) -> None:
    """Queue ``jobs`` no-op tasks on django-q2's own broker (this process runs with
    DJANGO_Q_BASELINE_BROKER set, as the baseline cluster does)."""
    setup_django("throughput")
    from django_q.tasks import async_task

    for _ in range(jobs):
        async_task(NOOP, {}, None, group=group)


def _fmt(values: list[float]) -> str:
    return " ".join(f"{x:.0f}" for x in values)


def _rate(jobs: int, began: datetime, ended: datetime | None) -> float:
    assert ended is not None
    return jobs / max((ended - began).total_seconds(), 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--quick", action="store_true", help="fewer jobs, one round")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    parser.add_argument("--enqueue-baseline", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.enqueue_baseline:
        enqueue_baseline(args.enqueue_baseline, args.group)
        return
    started = time.monotonic()
    report = run(quick=args.quick, jobs=args.jobs, repeat=args.repeat)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


if __name__ == "__main__":
    main()
