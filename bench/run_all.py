"""Run the benchmarks, print one table, write bench/results.json.

Each benchmark runs in its own process (its own Django set-up and database), with its
output shown as it goes. The summary table has one row per figure: value, baseline
measured in the same run, ratio, target and pass/fail.

bench/results.json holds one section per profile (``sqlite``, ``postgresql+redis``),
each with the profile (database vendor and version, cache, cpu count), the date, the
summary rows and every benchmark's detailed figures. A run replaces the benchmarks it
ran in its own profile's section and leaves the rest alone.

    python bench/run_all.py                      # everything, embedded profile (SQLite)
    python bench/run_all.py --quick              # smaller sizes, a few minutes
    python bench/run_all.py --only throughput,dispatch_latency
    python bench/run_all.py --skip cycle
    bench/scale_profile.sh [run_all options]     # the same on PostgreSQL + Redis

Exit status: 0 when every benchmark ran and every figure with a target met it, 1 when
a target was missed, 2 when a benchmark failed to run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, ROOT, Row, now_iso, summary_table

# In the order they run: the quick, process-heavy ones first, the data-heavy cycle last.
BENCHMARKS = {
    "throughput": "job throughput: orchestrator vs bare django-q2",
    "dispatch_latency": "enqueue → job started, with qcluster and loop runner",
    "recovery": "1,000 jobs on two nodes, one SIGKILLed",
    "snapshot_load": "/orchestrator/snapshot under 20 clients vs /health",
    "health_sweep": "concurrent health sweep vs sequential",
    "health_scale": "20,000 services of mixed kinds every 20 s, with 10 clients on the pages",
    "routing_failover": "routed tasks with one bad service of three, per strategy",
    "fleet_runs": "worker-run overhead, workers snapshot section",
    "loop_under_load": "loop timeliness with 16 writers POSTing jobs for 60 s",
    "cycle": "control-loop cycle cost against data size",
    "scale_rows": "lists, admin, dashboard, /metrics and the cycle at 10k vs 1M jobs",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--skip", help="comma-separated benchmarks to leave out")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run, not figures to quote")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file (default bench/results.json)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args()
    chosen = list(BENCHMARKS)
    for option, keep in (("only", True), ("skip", False)):
        names = [n.strip() for n in (getattr(args, option) or "").split(",") if n.strip()]
        unknown = sorted(set(names) - set(BENCHMARKS))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        if names:
            chosen = [n for n in chosen if (n in names) == keep]
    if not chosen:
        parser.error("nothing left to run")
    args.chosen = chosen
    return args


def run_one(name: str, quick: bool, report_path: Path) -> tuple[int, float]:
    """Run one benchmark script, streaming its output indented under its name."""
    argv = [sys.executable, "-u", str(ROOT / "bench" / f"{name}.py"), "--report", str(report_path)]
    if quick:
        argv.append("--quick")
    started = time.monotonic()
    with subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(f"    {line}", end="", flush=True)
    return proc.returncode, time.monotonic() - started


def main() -> int:
    args = parse_args()
    print(f"Benchmarks: {', '.join(args.chosen)}{' (quick)' if args.quick else ''}", flush=True)
    reports: dict[str, dict] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as tmp:
        for n, name in enumerate(args.chosen, 1):
            print(f"\n[{n}/{len(args.chosen)}] {name}: {BENCHMARKS[name]}", flush=True)
            report_path = Path(tmp) / f"{name}.json"
            code, seconds = run_one(name, args.quick, report_path)
            if code != 0 or not report_path.exists():
                print(f"[{n}/{len(args.chosen)}] {name} FAILED (exit {code}) after {seconds:.0f} s", flush=True)
                failed.append(name)
                continue
            reports[name] = json.loads(report_path.read_text())
            reports[name]["figures"]["seconds"] = round(seconds, 1)
            print(f"[{n}/{len(args.chosen)}] {name} done in {seconds:.0f} s", flush=True)

    rows = [Row(**row) for name in args.chosen if name in reports for row in reports[name]["rows"]]
    profile = next(iter(reports.values()))["profile"] if reports else {"name": "unknown"}
    print(f"\nResults on {profile['name']} ({profile.get('cpu_count')} CPUs){' — quick mode' if args.quick else ''}\n")
    print(summary_table(rows))
    if failed:
        print(f"\nFailed to run: {', '.join(failed)} (their output is above; process logs in var/bench-logs/)")
    missed = [r for r in rows if r.passed is False]
    if missed:
        print(f"\n{len(missed)} figure(s) missed their target.")
    if reports:
        write_results(args.output, profile, reports, rows, quick=args.quick)
        print(f"\nWritten to {_shown(args.output)} (section {profile['name']!r})")
    return 2 if failed else 1 if missed else 0


def write_results(path: Path, profile: dict, reports: dict[str, dict], rows: list[Row], *, quick: bool) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    section = data.get(profile["name"], {})
    benchmarks = section.get("benchmarks", {})
    for name, report in reports.items():
        benchmarks[name] = {"measured_at": now_iso(), "quick": quick, **report["figures"], "rows": report["rows"]}
    summary = [row for name in BENCHMARKS if name in benchmarks for row in benchmarks[name]["rows"]]
    data[profile["name"]] = {
        "profile": {**profile, "machine": platform.machine(), "cpu_count": os.cpu_count()},
        "date": now_iso(),
        "summary": summary,
        "benchmarks": {name: benchmarks[name] for name in BENCHMARKS if name in benchmarks},
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
