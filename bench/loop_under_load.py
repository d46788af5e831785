"""The loop keeps time under write load: 16 writers POSTing jobs for 60 s.

A live web server (``runserver``, as ``make run`` serves; ``--server gunicorn`` for
the README's deployment), a ``qcluster`` running the jobs and the dedicated loop runner
(``run_orchestrator``, 2 s interval) share one database. 16 clients, each with its own
keep-alive connection and Bearer token, POST ``/api/v1/jobs/`` back to back. Figures:
accepted jobs/s, POST p50/p99, cycles run against cycles due in the window, and how
late each cycle started: the gap to the previous cycle's start beyond the interval
(a missed cycle counts as a whole interval late).

Targets (the "survive what production throws" issue, on SQLite): a cycle starts at
most 1 s late at p99, at least 95 % of the cycles due run, no write answered 5xx, and
every accepted job is in the queue.

    python bench/loop_under_load.py [--writers 16] [--seconds 60] [--server runserver|gunicorn] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (
    Report,
    Row,
    check,
    finish,
    free_port,
    percentile,
    progress,
    running,
    setup_django,
    table,
    wait_for,
)

INTERVAL_SECONDS = 2.0
LATE_TARGET_MS = 1000.0
CYCLES_TARGET = 0.95


def web_args(server: str, port: int) -> list[str]:
    if server == "runserver":
        return ["runserver", f"127.0.0.1:{port}", "--noreload"]
    return ["-m", "gunicorn", "orchestrator_site.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "2", "--threads", "8"]


def lateness(starts: list[datetime], interval: float) -> list[float]:
    """Seconds each cycle started after it was due (its predecessor's start + the
    interval). Pure: a missed cycle shows as a gap of two intervals, one interval late."""
    ordered = sorted(starts)
    return [max(0.0, (b - a).total_seconds() - interval) for a, b in itertools.pairwise(ordered)]


def write(url: str, token: str, stop: threading.Event, latencies: list[float], statuses: list[int]) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    n = 0
    while not stop.is_set():
        n += 1
        began = time.perf_counter()
        try:
            status = session.post(url, json={"kind": "noop", "payload": {"n": n}}, timeout=30).status_code
        except requests.RequestException:
            status = 0
        latencies.append(time.perf_counter() - began)
        statuses.append(status)


def run(*, quick: bool = False, writers: int = 16, seconds: float | None = None, server: str = "runserver") -> Report:
    seconds = seconds or (15.0 if quick else 60.0)
    setup_django("loop_under_load", fresh=True)

    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from bench.common import profile_name
    from orchestration.core.models import Job, LedgerEntry
    from orchestration.loop.models import LoopState

    print(f"Loop under write load on {profile_name()}: {writers} writers for {seconds:g} s, {server}")
    LoopState.get()
    LoopState.objects.update(interval_seconds=INTERVAL_SECONDS, enabled=True)
    user = get_user_model().objects.create_user("bench-writer", is_staff=True)
    token = Token.objects.create(user=user).key
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"API_WRITE_RATE": "1000000/min"}
    with running(
        ("web", web_args(server, port)), ("qcluster", ["qcluster"]), ("loop", ["run_orchestrator"]), **env
    ) as procs:
        progress("waiting for the web server, the cluster and the loop runner")
        wait_for(lambda: _up(f"{base}/health"), timeout=60, what="the web server", procs=procs)
        wait_for(lambda: LoopState.get().cycle_count >= 2, timeout=60, what="loop cycles", procs=procs)
        stop = threading.Event()
        latencies: list[list[float]] = [[] for _ in range(writers)]
        statuses: list[list[int]] = [[] for _ in range(writers)]
        threads = [
            threading.Thread(target=write, args=(f"{base}/api/v1/jobs/", token, stop, latencies[i], statuses[i]))
            for i in range(writers)
        ]
        began_at = timezone.now()
        began = time.monotonic()
        for thread in threads:
            thread.start()
        while time.monotonic() - began < seconds:
            time.sleep(min(10.0, seconds - (time.monotonic() - began)))
            done = sum(len(s) for s in statuses)
            progress(f"{time.monotonic() - began:.0f} s: {done} POSTs, loop at cycle {LoopState.get().cycle_count}")
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        elapsed = time.monotonic() - began
        ended_at = timezone.now()

    all_latencies = [x for xs in latencies for x in xs]
    all_statuses = [x for xs in statuses for x in xs]
    accepted = sum(1 for s in all_statuses if s == 201)
    errors = sum(1 for s in all_statuses if s != 201)
    stored = Job.objects.filter(created_at__gte=began_at, kind="noop").count()
    starts = sorted(
        datetime.fromisoformat(entry["started_at"])
        for entry in LedgerEntry.objects.filter(
            event_type__in=("orchestrator.cycle_idle", "orchestrator.cycle_completed", "orchestrator.cycle_error"),
            created_at__gte=began_at,
            created_at__lte=ended_at,
        ).values_list("data", flat=True)
        if entry.get("started_at")
    )
    starts = [s for s in starts if began_at <= s <= ended_at]
    late = lateness(starts, INTERVAL_SECONDS)
    due = int(elapsed // INTERVAL_SECONDS)
    ran = len(starts)
    late_p99_ms = percentile(late, 99) * 1000 if late else float("inf")
    late_max_ms = max(late) * 1000 if late else float("inf")
    post_p50_ms, post_p99_ms = percentile(all_latencies, 50) * 1000, percentile(all_latencies, 99) * 1000
    per_second = accepted / elapsed

    print()
    print(
        table(
            ["figure", "value"],
            [
                ["accepted jobs/s", f"{per_second:.1f}"],
                ["POST p50 / p99 ms", f"{post_p50_ms:.0f} / {post_p99_ms:.0f}"],
                ["writes not accepted", str(errors)],
                ["accepted / in the queue", f"{accepted} / {stored}"],
                ["cycles run / due", f"{ran} / {due}"],
                ["cycle lateness p50 / p99 / max ms", f"{_p(late, 50)} / {late_p99_ms:.0f} / {late_max_ms:.0f}"],
            ],
            left=1,
        )
    )
    figure = f"{writers} writers × {seconds:g} s, {server}"
    rows = [
        Row("loop_under_load", f"{figure}: accepted jobs/s", round(per_second, 1), "jobs/s"),
        Row("loop_under_load", f"{figure}: POST p50", round(post_p50_ms, 1), "ms"),
        Row("loop_under_load", f"{figure}: POST p99", round(post_p99_ms, 1), "ms"),
        Row(
            "loop_under_load",
            f"{figure}: writes not accepted, or accepted and not queued",
            errors + abs(accepted - stored),
            target="≤ 0",
            passed=errors == 0 and accepted == stored,
        ),
        Row(
            "loop_under_load",
            f"{figure}: cycles run / due",
            ran,
            baseline=due,
            ratio=round(ran / due, 3) if due else None,
            target=f"≥ {CYCLES_TARGET}",
            passed=bool(due) and check(ran / due, "≥", CYCLES_TARGET),
        ),
        Row(
            "loop_under_load",
            f"{figure}: cycle lateness p99",
            round(late_p99_ms, 1),
            "ms",
            target=f"≤ {LATE_TARGET_MS:g} ms",
            passed=check(late_p99_ms, "≤", LATE_TARGET_MS),
        ),
    ]
    return Report(
        "loop_under_load",
        {
            "writers": writers,
            "seconds": round(elapsed, 1),
            "server": server,
            "interval_seconds": INTERVAL_SECONDS,
            "accepted": accepted,
            "accepted_per_second": round(per_second, 1),
            "not_accepted": errors,
            "queued": stored,
            "post_p50_ms": round(post_p50_ms, 1),
            "post_p99_ms": round(post_p99_ms, 1),
            "post_max_ms": round(max(all_latencies) * 1000, 1) if all_latencies else None,
            "cycles_run": ran,
            "cycles_due": due,
            "cycle_late_p50_ms": round(percentile(late, 50) * 1000, 1) if late else None,
            "cycle_late_p99_ms": round(late_p99_ms, 1),
            "cycle_late_max_ms": round(late_max_ms, 1),
            "post_mean_ms": round(statistics.mean(all_latencies) * 1000, 1) if all_latencies else None,
        },
        rows,
    )


def _p(samples: list[float], pct: float) -> str:
    return f"{percentile(samples, pct) * 1000:.0f}" if samples else "—"


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--server", choices=("runserver", "gunicorn"), default="runserver")
    parser.add_argument("--quick", action="store_true", help="15 s instead of 60")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(quick=args.quick, writers=args.writers, seconds=args.seconds, server=args.server)
    report.figures["wall_seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


if __name__ == "__main__":
    main()
