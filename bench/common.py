"""Shared helpers for the benchmarks: a Django set-up on a dedicated database, real
project processes, percentiles, progress lines, summary rows and bench/results.json.

Every benchmark is a script (``python bench/<name>.py``) with a ``run(quick=…)``
function returning a :class:`Report`: its detailed figures plus the summary rows
that ``bench/run_all.py`` puts in one table.

Databases. A benchmark never touches the database of ``make run``: on the embedded
profile each one uses its own SQLite file under ``var/``; on the scale profile
(``BENCH_DATABASE_URL=postgres://…``) each one uses its own PostgreSQL database,
``<name>_<benchmark>``, created on first use. ``DATABASE_URL`` is ignored on purpose,
so an exported production URL cannot be written to by a benchmark. The queue is the
database on both profiles; the scale profile adds Redis as the cache (``CACHE_URL``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
RESULTS = ROOT / "bench" / "results.json"
LOGS = VAR / "bench-logs"


# --- database and Django --------------------------------------------------------------
def database_url(bench: str) -> str:
    """The database this benchmark owns on the current profile."""
    scale = os.environ.get("BENCH_DATABASE_URL", "")
    if not scale:
        return f"sqlite:///{VAR / f'bench-{bench}.sqlite3'}"
    parts = urlsplit(scale)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit(f"BENCH_DATABASE_URL must be a postgres:// URL (got {scale!r})")
    base = parts.path.lstrip("/") or "postgres"
    name = f"{base}_bench_{bench}".replace("-", "_")
    _create_postgres_database(scale, name)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _create_postgres_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def fresh_database(bench: str) -> None:
    """Start this benchmark from an empty database: delete its SQLite file, or drop
    its PostgreSQL database (:func:`database_url` creates it again)."""
    scale = os.environ.get("BENCH_DATABASE_URL", "")
    if not scale:
        db = VAR / f"bench-{bench}.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    name = urlsplit(database_url(bench)).path.lstrip("/")
    with psycopg.connect(scale, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(bench: str, *, fresh: bool = False) -> None:
    """Point Django at this benchmark's database (emptied first if ``fresh``) and
    migrate it.

    Subprocesses started with :func:`process_env` inherit the same database, and a
    django-q2 cluster name of their own, so a Redis queue left over by another
    benchmark is never consumed here.
    """
    sys.path.insert(0, str(ROOT))
    VAR.mkdir(exist_ok=True)
    if fresh:
        fresh_database(bench)
    os.environ["DATABASE_URL"] = database_url(bench)
    os.environ["Q_CLUSTER_NAME"] = f"bench-{bench}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["Q_SYNC"] = "false"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def profile() -> dict[str, Any]:
    """What the figures were measured on."""
    from django.conf import settings
    from django.db import connection

    return {
        "name": profile_name(),
        "database": connection.vendor,
        "database_version": _database_version(),
        "queue": "database (Job table)",
        "cache": "redis" if settings.CACHE_URL else "local memory",
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _database_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("select sqlite_version()")
        else:
            cursor.execute("show server_version")
        return str(cursor.fetchone()[0])


def profile_name() -> str:
    from django.conf import settings
    from django.db import connection

    vendor = "postgresql" if connection.vendor == "postgresql" else connection.vendor
    return f"{vendor}+redis" if settings.CACHE_URL else vendor


# --- real processes -------------------------------------------------------------------
def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", Q_SYNC="false", DJANGO_SETTINGS_MODULE="orchestrator_site.settings")
    env.update(extra)
    return env


class Process:
    """A ``manage.py`` subprocess in its own session, stopped through its main pid.

    SIGTERM to a qcluster's main pid stops it cleanly; sent to its whole process
    group it can hang, so the group is only killed when the main pid did not stop.
    """

    def __init__(self, name: str, args: list[str], **env: str):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        self._log = open(self.log_path, "wb")  # closed in stop()
        # ["-m", module, …] runs a module (e.g. gunicorn) instead of a manage.py command.
        argv = [sys.executable, *args] if args[:1] == ["-m"] else [sys.executable, str(ROOT / "manage.py"), *args]
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=process_env(**env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=10)
        self._log.close()

    def tail(self, chars: int = 3000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]


@contextmanager
def running(*procs: tuple[str, list[str]], **env: str) -> Iterator[list[Process]]:
    """Start processes; stop them on exit, showing their logs if the block failed."""
    started: list[Process] = []
    failed = True
    try:
        for name, args in procs:
            started.append(Process(name, args, **env))
        yield started
        failed = False
    finally:
        for proc in started:
            proc.stop()
        if failed:
            for proc in started:
                print(f"----- {proc.name} log ({proc.log_path}) -----\n{proc.tail()}", file=sys.stderr)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, procs: list[Process] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.tail()}")
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- figures ---------------------------------------------------------------------------
def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def progress(message: str) -> None:
    print(f"  … {message}", flush=True)


@dataclass
class Row:
    """One line of the summary table. ``ratio`` is figure / baseline when both exist.

    ``target`` reads like "≥ 0.67" or "≤ 200 ms" and ``passed`` says whether the
    compared value (``value`` unless the target is on the ratio) meets it; None
    when the figure has no target.
    """

    benchmark: str
    figure: str
    value: float | int | str
    unit: str = ""
    baseline: float | int | str | None = None
    ratio: float | None = None
    target: str = ""
    passed: bool | None = None


@dataclass
class Report:
    benchmark: str
    figures: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"figures": self.figures, "rows": [asdict(r) for r in self.rows]}


def check(value: float, op: str, limit: float) -> bool:
    return value <= limit if op == "≤" else value >= limit


def fmt(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        text = f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def summary_table(rows: list[Row]) -> str:
    verdict = {True: "pass", False: "FAIL", None: "—"}
    return table(
        ["benchmark", "figure", "value", "baseline", "ratio", "target", "result"],
        [
            [
                r.benchmark,
                r.figure,
                fmt(r.value, r.unit),
                fmt(r.baseline, r.unit),
                "" if r.ratio is None else f"{r.ratio:.2f}",
                r.target,
                verdict[r.passed],
            ]
            for r in rows
        ],
        left=2,
    )


def table(headers: list[str], rows: list[list], left: int = 0) -> str:
    """A plain-text table; the first ``left`` columns are left-aligned (labels)."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]

    def line(r: list) -> str:
        cells = [
            str(x).ljust(w) if i < left else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths, strict=False))
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def save(name: str, figures: dict) -> None:
    """Merge one benchmark's figures into bench/results.json under the current profile."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    section = data.setdefault(profile_name(), {})
    section.setdefault("profile", profile())
    # The same shape as bench/run_all.py writes: the figures, then the summary rows.
    entry = {"measured_at": now_iso(), "quick": False, **figures.get("figures", {}), "rows": figures.get("rows", [])}
    section.setdefault("benchmarks", {})[name] = entry
    RESULTS.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def finish(report: Report, report_path: str | None) -> None:
    """End of a benchmark script: print its summary rows, then hand the report to
    run_all (``--report FILE``) or merge it into bench/results.json when run alone."""
    print()
    print(summary_table(report.rows))
    if report_path:
        Path(report_path).write_text(json.dumps({"profile": profile(), **report.to_json()}, ensure_ascii=False))
    else:
        save(report.benchmark, report.to_json())
