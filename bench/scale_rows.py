"""Flat at a million rows: the pages of issue 25 at 10k jobs + 50k ledger rows and at
1M jobs + 5M ledger rows, side by side; with them as many health checks as jobs (10k,
then 1M, over 100 services) for the admin's check history (issue 17: under 1 s at 1M
check rows; held here to the lists' 300 ms).

Rows are loaded with one INSERT … SELECT per chunk (a recursive CTE on SQLite,
generate_series on PostgreSQL), history going back at a steady rate (a job every
2.6 s, a ledger entry every 0.52 s: 1M jobs are 30 days), so both sizes share the
same newest rows and the same live queue (50 pending, 10 processing, 5 retry) and
differ only in history. On PostgreSQL the load is followed by what autovacuum would do
(VACUUM ANALYZE); SQLite runs without statistics, as a deployment does.

Each page is timed over HTTP against a real server: gunicorn, 1 worker × 4 threads,
DEBUG off, no cluster, as the issue measured; every page twice to warm up, then 20
sequential requests a page (p50/p95). Admin pages and the dashboard use a signed-in staff session, the API
a Bearer token. The deep page is what replaced ``?offset=900000``: the cursor of the
row at 90 % depth (``?offset=`` deeper than 10,000 now answers 400). The cycle is
``POST /orchestrator/run-once {"dry_run": true}``; its own ``duration_ms`` is the
cycle figure.

Targets: every p50 ratio (large / small) ≤ 2, every admin page and API list
p95 ≤ 300 ms at the large size, the cycle ≤ 50 ms (p95 of its own duration).

    python bench/scale_rows.py [--quick] [--jobs 10000,1000000] [--ledger 50000,5000000] [--requests 20]
    BENCH_DATABASE_URL=postgres://… python bench/scale_rows.py      # the scale profile

``--quick``: 2k + 10k, then 100k + 500k.
"""

from __future__ import annotations

import argparse
import sys
import time
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

JOB_STEP_S = 2.6
LEDGER_STEP_S = 0.52
CHUNK = 250_000
RATIO_TARGET = 2.0
LIST_P95_TARGET_MS = 300
CYCLE_TARGET_MS = 50
LIVE = {"pending": 50, "processing": 10, "retry": 5}

# (label, method, path or a function of the context, kind): kind "list" pages are
# held to the p95 target, "cycle" to the cycle target.
PAGES = [
    ("admin ledger list", "session", "/admin/orchestration/ledgerentry/", "list"),
    ("admin job list", "session", "/admin/orchestration/job/", "list"),
    ("admin check history", "session", "/admin/health/healthcheck/", "list"),
    ("admin check history, failed", "session", "/admin/health/healthcheck/?success__exact=0", "list"),
    ("admin check history of one service", "session", "/admin/health/healthcheck/?q=bench-7", "list"),
    ("GET /api/v1/jobs/?limit=50", "token", "/api/v1/jobs/?limit=50", "list"),
    ("jobs page at 90% depth (cursor)", "token", "deep", "list"),
    ("GET /api/v1/ledger/?event_type=orchestrator.", "token", "/api/v1/ledger/?event_type=orchestrator.", "list"),
    ("GET /api/v1/ledger/?limit=50", "token", "/api/v1/ledger/?limit=50", "list"),
    ("dashboard /", "session", "/", "page"),
    ("/console/summary", "session", "/console/summary", "page"),
    ("/metrics", "token", "/metrics", "page"),
    ("dry-run cycle (POST /orchestrator/run-once)", "token", "cycle", "cycle"),
]


# --- loading ------------------------------------------------------------------------------
def _job_sql(vendor: str) -> str:
    if vendor == "postgresql":
        ts = "%(now)s::timestamptz - (i * interval '2.6 seconds')"
        source, false = "generate_series(%(lo)s, %(hi)s - 1) AS g(i)", "false"
        prefix = ""
    else:
        ts = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %(now)s, printf('-%%.3f seconds', i * 2.6))"
        prefix = "WITH RECURSIVE g(i) AS (SELECT %(lo)s UNION ALL SELECT i + 1 FROM g WHERE i + 1 < %(hi)s) "
        source, false = "g", "0"
    live_end = sum(LIVE.values())
    status = (
        f"CASE WHEN i < {LIVE['pending']} THEN 'pending' "
        f"WHEN i < {LIVE['pending'] + LIVE['processing']} THEN 'processing' "
        f"WHEN i < {live_end} THEN 'retry' "
        "WHEN i %% 50 = 0 THEN 'failed' WHEN i %% 100 = 1 THEN 'canceled' ELSE 'completed' END"
    )
    finished = f"CASE WHEN i >= {live_end} THEN {ts} END"
    return (
        f"{prefix}INSERT INTO orchestration_job (kind, payload, priority, priority_rank, lane, status, attempts, "
        "max_attempts, backoff, lease_token, lease_owner, cancel_requested, created_at, updated_at, finished_at, "
        "error, channel, reference, auto_retries, promoted, downgraded, forced, deferred_by, failed_permanently) "
        f"SELECT CASE WHEN i %% 2 = 0 THEN 'noop' ELSE 'render' END, '{{}}', 'normal', 2, "
        f"CASE WHEN i %% 5 = 0 THEN 'fast' ELSE 'default' END, {status}, 1, 3, 'exponential', '', '', {false}, "
        f"{ts}, {ts}, {finished}, '', '', '', 0, {false}, {false}, {false}, '', {false} FROM {source}"
    )


def _ledger_sql(vendor: str) -> str:
    if vendor == "postgresql":
        ts = "%(now)s::timestamptz - (i * interval '0.52 seconds')"
        source, prefix = "generate_series(%(lo)s, %(hi)s - 1) AS g(i)", ""
    else:
        ts = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %(now)s, printf('-%%.3f seconds', i * 0.52))"
        prefix = "WITH RECURSIVE g(i) AS (SELECT %(lo)s UNION ALL SELECT i + 1 FROM g WHERE i + 1 < %(hi)s) "
        source = "g"
    # Mostly the loop's own events, as a running orchestrator writes them.
    event_type = (
        "CASE WHEN i %% 20 < 12 THEN 'orchestrator.cycle_idle' WHEN i %% 20 = 12 THEN 'orchestrator.cycle_started' "
        "WHEN i %% 20 = 13 THEN 'orchestrator.cycle_completed' WHEN i %% 20 < 17 THEN 'job.completed' "
        "WHEN i %% 20 = 17 THEN 'job.created' WHEN i %% 20 = 18 THEN 'health.check' ELSE 'worker.run_succeeded' END"
    )
    subject = "CASE WHEN i %% 20 BETWEEN 14 AND 17 THEN 'job:' || (i / 5) ELSE '' END"
    return (
        f"{prefix}INSERT INTO orchestration_ledgerentry (event_type, severity, subject, message, data, actor, "
        f"created_at) SELECT {event_type}, CASE WHEN i %% 1000 = 7 THEN 'error' ELSE 'info' END, {subject}, "
        f"'bench', '{{}}', 'system', {ts} FROM {source}"
    )


CHECK_SERVICES = 100


def _check_sql(vendor: str, first_service: int) -> str:
    """A check every 2.6 s, taking the services in turn; one in 25 failed."""
    if vendor == "postgresql":
        ts = "%(now)s::timestamptz - (i * interval '2.6 seconds')"
        source, prefix, true, false = "generate_series(%(lo)s, %(hi)s - 1) AS g(i)", "", "true", "false"
    else:
        ts = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %(now)s, printf('-%%.3f seconds', i * 2.6))"
        prefix = "WITH RECURSIVE g(i) AS (SELECT %(lo)s UNION ALL SELECT i + 1 FROM g WHERE i + 1 < %(hi)s) "
        source, true, false = "g", "1", "0"
    failed = "i %% 25 = 0"
    return (
        f"{prefix}INSERT INTO health_healthcheck (service_id, checked_at, success, health, status_code, "
        "response_time_ms, error_message, breaker_state) "
        f"SELECT {first_service} + (i %% {CHECK_SERVICES}), {ts}, CASE WHEN {failed} THEN {false} ELSE {true} END, "
        f"CASE WHEN {failed} THEN 'unhealthy' ELSE 'healthy' END, CASE WHEN {failed} THEN 503 ELSE 200 END, "
        f"20 + (i %% 80), CASE WHEN {failed} THEN 'HTTP 503' ELSE '' END, 'closed' FROM {source}"
    )


def _check_services() -> int:
    """The services the checks belong to (ids in a row): the first one's id."""
    from health.models import Service

    if not Service.objects.exists():
        for n in range(CHECK_SERVICES):
            Service.objects.create(name=f"bench-{n}", base_url="http://127.0.0.1:9", enabled=False)
    ids = list(Service.objects.order_by("pk").values_list("pk", flat=True))
    if ids != list(range(ids[0], ids[0] + CHECK_SERVICES)):
        raise RuntimeError(f"expected {CHECK_SERVICES} services with ids in a row, found {len(ids)}")
    return ids[0]


def load(table_sql: str, have: int, want: int, now: str, what: str) -> None:
    from django.db import connection, transaction

    for lo in range(have, want, CHUNK):
        hi = min(want, lo + CHUNK)
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(table_sql, {"lo": lo, "hi": hi, "now": now})
        progress(f"{what} {hi:,}/{want:,} ({(hi - lo) / (time.perf_counter() - started):,.0f} rows/s)")


def grow(jobs: int, ledger: int, now: str) -> None:
    from django.db import connection

    from health.models import HealthCheck
    from orchestration.core.models import Job, LedgerEntry

    have_jobs, have_ledger, have_checks = Job.objects.count(), LedgerEntry.objects.count(), HealthCheck.objects.count()
    load(_job_sql(connection.vendor), have_jobs, jobs, now, "jobs")
    load(_ledger_sql(connection.vendor), have_ledger, ledger, now, "ledger rows")
    load(_check_sql(connection.vendor, _check_services()), have_checks, jobs, now, "health checks")
    if connection.vendor == "postgresql":
        # What autovacuum does after a load this size; SQLite's plans need no statistics.
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE orchestration_job")
            cursor.execute("VACUUM ANALYZE orchestration_ledgerentry")
            cursor.execute("VACUUM ANALYZE health_healthcheck")
        progress(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")


# --- timing -------------------------------------------------------------------------------
def credentials() -> tuple[str, str]:
    """A staff user's session cookie (admin, dashboard) and API token."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(
        username="bench", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value, Token.objects.get_or_create(user=user)[0].key


def deep_cursor(jobs: int) -> str:
    from orchestration.core.models import Job
    from orchestrator_site.api.pagination import encode_cursor

    created_at, pk = Job.objects.order_by("-created_at", "-id").values_list("created_at", "id")[int(jobs * 0.9)]
    return encode_cursor([created_at, pk], reverse=False)


def time_pages(base: str, session: str, token: str, cursor: str, requests_n: int) -> dict[str, dict]:
    figures: dict[str, dict] = {}
    with requests.Session() as http:

        def call(label: str, auth: str, path: str) -> tuple[float, requests.Response]:
            headers = {"Authorization": f"Bearer {token}"} if auth == "token" else {}
            cookies = {"sessionid": session} if auth == "session" else {}
            started = time.perf_counter()
            if path == "cycle":
                response = http.post(
                    f"{base}/orchestrator/run-once", json={"dry_run": True}, headers=headers, timeout=120
                )
            else:
                url = f"{base}/api/v1/jobs/?limit=50&cursor={cursor}" if path == "deep" else f"{base}{path}"
                response = http.get(url, headers=headers, cookies=cookies, timeout=120)
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{label}: HTTP {response.status_code} {response.text[:300]}")
            return elapsed, response

        # Warm: every page twice before any is timed (a fresh load leaves caches cold).
        for label, auth, path, _kind in PAGES:
            for _ in range(2):
                call(label, auth, path)
        for label, auth, path, kind in PAGES:
            samples, own = [], []
            for _ in range(requests_n):
                elapsed, response = call(label, auth, path)
                samples.append(elapsed)
                if path == "cycle":
                    own.append(response.json()["result"]["duration_ms"] / 1000)
            figure = {
                "p50_ms": round(percentile(samples, 50) * 1000, 1),
                "p95_ms": round(percentile(samples, 95) * 1000, 1),
                "kind": kind,
            }
            if own:
                figure["cycle_p50_ms"] = round(percentile(own, 50) * 1000, 1)
                figure["cycle_p95_ms"] = round(percentile(own, 95) * 1000, 1)
            figures[label] = figure
            progress(f"{label}: p50 {figure['p50_ms']} ms, p95 {figure['p95_ms']} ms")
    return figures


def measure(jobs: int, requests_n: int) -> dict[str, dict]:
    session, token = credentials()
    cursor = deep_cursor(jobs)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = ["-m", "gunicorn", "orchestrator_site.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4"]
    with running(("web", web), DEBUG="false") as procs:
        wait_for(lambda: _up(f"{base}/health"), timeout=60, what="the web server", procs=procs)
        return time_pages(base, session, token, cursor, requests_n)


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


# --- the run ------------------------------------------------------------------------------
def run(*, quick: bool = False, jobs: str | None = None, ledger: str | None = None, requests_n: int = 20) -> Report:
    job_sizes = [int(x) for x in (jobs or ("2000,100000" if quick else "10000,1000000")).split(",")]
    ledger_sizes = [int(x) for x in (ledger or ("10000,500000" if quick else "50000,5000000")).split(",")]
    setup_django("scale_rows", fresh=True)

    from django.utils import timezone

    from bench.common import profile_name
    from orchestration.loop.models import LoopState

    print(f"Scale benchmark on {profile_name()}: jobs {job_sizes}, ledger {ledger_sizes}, {requests_n} requests a page")
    LoopState.get()
    now = timezone.now()  # aware, UTC
    now_text = now.strftime("%Y-%m-%d %H:%M:%S.%f") if _vendor() == "sqlite" else now.isoformat()
    results: list[dict[str, dict]] = []
    for n_jobs, n_ledger in zip(job_sizes, ledger_sizes, strict=True):
        progress(f"loading to {n_jobs:,} jobs and {n_ledger:,} ledger rows")
        started = time.perf_counter()
        grow(n_jobs, n_ledger, now_text)
        progress(f"loaded in {time.perf_counter() - started:.0f} s; timing the pages")
        results.append(measure(n_jobs, requests_n))

    small, large = results[0], results[-1]
    small_label, large_label = _size(job_sizes[0], ledger_sizes[0]), _size(job_sizes[-1], ledger_sizes[-1])
    lines, rows = [], []
    for label, _auth, _path, kind in PAGES:
        s, b = small[label], large[label]
        ratio = round(b["p50_ms"] / s["p50_ms"], 2) if s["p50_ms"] else None
        lines.append([label, s["p50_ms"], s["p95_ms"], b["p50_ms"], b["p95_ms"], f"{ratio:.2f}×"])
        rows.append(
            Row(
                "scale_rows",
                f"{label} p50, {large_label} vs {small_label}",
                b["p50_ms"],
                "ms",
                baseline=s["p50_ms"],
                ratio=ratio,
                target=f"ratio ≤ {RATIO_TARGET:g}",
                passed=ratio is not None and ratio <= RATIO_TARGET,
            )
        )
        if kind == "list":
            rows.append(
                Row(
                    "scale_rows",
                    f"{label} p95 at {large_label}",
                    b["p95_ms"],
                    "ms",
                    target=f"≤ {LIST_P95_TARGET_MS} ms",
                    passed=check(b["p95_ms"], "≤", LIST_P95_TARGET_MS),
                )
            )
        if kind == "cycle":
            lines.append(
                [
                    "  the cycle's own duration",
                    s["cycle_p50_ms"],
                    s["cycle_p95_ms"],
                    b["cycle_p50_ms"],
                    b["cycle_p95_ms"],
                    "",
                ]
            )
            rows.append(
                Row(
                    "scale_rows",
                    f"dry-run cycle's own duration p95 at {large_label}",
                    b["cycle_p95_ms"],
                    "ms",
                    baseline=s["cycle_p95_ms"],
                    ratio=round(b["cycle_p95_ms"] / s["cycle_p95_ms"], 2) if s["cycle_p95_ms"] else None,
                    target=f"≤ {CYCLE_TARGET_MS} ms",
                    passed=check(b["cycle_p95_ms"], "≤", CYCLE_TARGET_MS),
                )
            )
    print()
    print(
        table(
            ["page", f"{small_label} p50", "p95", f"{large_label} p50", "p95", "ratio (p50)"],
            lines,
            left=1,
        )
    )
    return Report(
        "scale_rows",
        {
            "server": "gunicorn 1 worker × 4 threads, DEBUG off",
            "requests_per_page": requests_n,
            "sizes": [{"jobs": j, "ledger": n} for j, n in zip(job_sizes, ledger_sizes, strict=True)],
            "pages": {label: {"small": small[label], "large": large[label]} for label, *_ in PAGES},
        },
        rows,
    )


def _vendor() -> str:
    from django.db import connection

    return connection.vendor


def _size(jobs: int, ledger: int) -> str:
    def short(n: int) -> str:
        return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"

    return f"{short(jobs)}+{short(ledger)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", help="comma-separated job counts, smallest first")
    parser.add_argument("--ledger", help="comma-separated ledger sizes, one per job count")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--report", help="write the report here (used by run_all.py)")
    args = parser.parse_args()
    report = run(quick=args.quick, jobs=args.jobs, ledger=args.ledger, requests_n=args.requests)
    finish(report, args.report)


if __name__ == "__main__":
    main()
