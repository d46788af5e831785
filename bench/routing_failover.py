"""Routing failover: routed tasks when one of three capable services is bad.

Three services on 127.0.0.1 can process ``email_campaign``: one answers 500 on
``/process`` (its ``/health`` passes), one answers in 200 ms, one in 5 ms. A real web
server and a real ``qcluster`` run beside this process. For each strategy, starting
from a clean memory (no learned stats, no ejections, an empty retry budget), 10
concurrent clients send 300 tasks with ``POST /api/v1/routing/tasks`` and
``"wait": true``; per item a client sends one request and waits for the task's final
answer, and the cluster POSTs to one service per try, failing over at once.

Printed per strategy: tasks completed, p50/p99 client latency, the share of first tries
sent to the failing service after its ejection (all first tries if a strategy learned
to avoid it before it was ever ejected), the retry load (retries / first tries),
and the share of tries sent to the 200 ms service. The baseline, in the same run, is
``round_robin``: the ratios compare each strategy's p99 and slow-service share with it.

Targets: 300/300 completed, p99 ≤ 1 s, ≤ 2 % of first tries to the failing service
once ejected, retry load ≤ 20 %; ``ewma`` sends less to the 200 ms service than
``round_robin`` does.

    python bench/routing_failover.py [--tasks 300] [--clients 10] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import threading
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

STRATEGIES = ("round_robin", "least_request", "ewma", "best")
TASK_TYPE = "email_campaign"
P99_TARGET_S = 1.0
EJECTED_SHARE_TARGET = 0.02
RETRY_LOAD_TARGET = 0.20


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def prepare() -> tuple[str, list]:
    """Three local services registered for the task type; a staff token."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from health.models import Service
    from tests.support.http_services import FakeService

    servers = [FakeService("failing"), FakeService("fast", delay=0.2), FakeService("fast", delay=0.005)]
    for name, server in zip(("failing", "slow-200ms", "fast-5ms"), servers, strict=True):
        Service.objects.create(name=name, base_url=server.url, capabilities=[TASK_TYPE])
    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    token, _ = Token.objects.get_or_create(user=user)
    return token.key, servers


def forget() -> None:
    """A clean memory for the next strategy: what routing learned, ejected, spent."""
    from orchestration.loop.models import GuardrailCounter
    from orchestration.routing.models import (
        EJECTION,
        OutlierState,
        RetryBudget,
        RotationCursor,
        RouteStat,
        TaskOutcome,
    )

    for model in (OutlierState, RetryBudget, RotationCursor, RouteStat, TaskOutcome):
        model.objects.all().delete()
    # The ejections' hourly counts too: each strategy starts with its guardrails fresh.
    GuardrailCounter.objects.filter(automation=EJECTION).delete()


def send(base: str, token: str, strategy: str, tasks: int, clients: int) -> tuple[list[float], list[dict]]:
    """``clients`` threads sharing ``tasks`` requests; latency per request, answers."""
    latencies: list[float] = []
    answers: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(tasks))
    start = threading.Barrier(clients)

    def client() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            start.wait()
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                body = {"type": TASK_TYPE, "priority": "high", "data": {"n": n}, "strategy": strategy, "wait": True}
                began = time.perf_counter()
                response = session.post(f"{base}/api/v1/routing/tasks", json=body, timeout=120)
                took = time.perf_counter() - began
                with lock:
                    latencies.append(took)
                    answers.append({"code": response.status_code, **(response.json() if response.content else {})})

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, answers


def measure(strategy: str, latencies: list[float], answers: list[dict]) -> dict:
    from orchestration.routing.models import OutlierState, TaskOutcome

    outcomes = TaskOutcome.objects.filter(task_type=TASK_TYPE)
    firsts = outcomes.filter(attempt=1)
    retries = outcomes.filter(attempt__gt=1).count()
    ejection = OutlierState.objects.filter(service_name="failing", ejected_at__isnull=False).first()
    # Never ejected (the strategy learned to avoid it first): every first try counts.
    after = firsts.filter(created_at__gt=ejection.ejected_at) if ejection else firsts
    after_n = after.count()
    tries = outcomes.count()
    return {
        "strategy": strategy,
        "completed": sum(1 for a in answers if a.get("status") == "completed"),
        "tasks": len(answers),
        "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "max_s": round(max(latencies), 3),
        "ejected": ejection is not None,
        "first_tries_after_ejection": after_n,
        "failing_share_after_ejection": round(after.filter(service_name="failing").count() / max(1, after_n), 4),
        "retry_load": round(retries / max(1, firsts.count()), 4),
        "slow_share": round(outcomes.filter(service_name="slow-200ms").count() / max(1, tries), 4),
    }


def run(*, quick: bool = False, tasks: int | None = None, clients: int = 10) -> Report:
    tasks = tasks or (90 if quick else 300)
    setup_django("routing_failover", fresh=True)
    from bench.common import profile_name

    print(f"Routing failover benchmark on {profile_name()}: {tasks} tasks from {clients} clients per strategy")
    token, servers = prepare()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = ["-m", "gunicorn", "orchestrator_site.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "2", "--threads", "10"]
    results: list[dict] = []
    # Enough workers for every client's task at once, and a write rate that is not the subject.
    env = {"DEBUG": "false", "Q_WORKERS": str(clients), "API_WRITE_RATE": "100000/min"}
    try:
        with running(("web", web), ("qcluster", ["qcluster"]), **env) as procs:
            wait_for(lambda: _up(f"{base}/health"), timeout=60, what="the web server", procs=procs)
            send(base, token, "round_robin", clients, clients)  # warm-up: cluster, connections
            for strategy in STRATEGIES:
                forget()
                latencies, answers = send(base, token, strategy, tasks, clients)
                results.append(measure(strategy, latencies, answers))
                r = results[-1]
                progress(f"{strategy}: {r['completed']}/{tasks} completed, p99 {r['p99_s']:.3f} s")
    finally:
        for server in servers:
            server.stop()

    base_row = results[0]
    print()
    print(
        table(
            ["strategy", "completed", "p50 s", "p99 s", "to failing once ejected", "retry load", "to 200 ms service"],
            [
                [
                    r["strategy"],
                    f"{r['completed']}/{r['tasks']}",
                    f"{r['p50_s']:.3f}",
                    f"{r['p99_s']:.3f}",
                    f"{r['failing_share_after_ejection']:.1%}" + ("" if r["ejected"] else " (never ejected)"),
                    f"{r['retry_load']:.1%}",
                    f"{r['slow_share']:.1%}",
                ]
                for r in results
            ],
            left=1,
        )
    )
    rows: list[Row] = []
    for r in results:
        name = r["strategy"]
        ejected_share = r["failing_share_after_ejection"]
        rows += [
            Row(
                "routing_failover",
                f"{name}: completed",
                r["completed"],
                target=f"≥ {r['tasks']}",
                passed=r["completed"] >= r["tasks"],
            ),
            Row(
                "routing_failover",
                f"{name}: p99 client latency",
                r["p99_s"],
                "s",
                baseline=base_row["p99_s"],
                ratio=round(r["p99_s"] / base_row["p99_s"], 2) if base_row["p99_s"] else None,
                target=f"≤ {P99_TARGET_S:g} s",
                passed=check(r["p99_s"], "≤", P99_TARGET_S),
            ),
            Row(
                "routing_failover",
                f"{name}: first tries to the failing service once ejected",
                round(ejected_share * 100, 2),
                "%" if r["ejected"] else "% (never ejected: all first tries)",
                target=f"≤ {EJECTED_SHARE_TARGET:.0%}",
                passed=ejected_share <= EJECTED_SHARE_TARGET,
            ),
            Row(
                "routing_failover",
                f"{name}: retry load (retries / first tries)",
                round(r["retry_load"] * 100, 2),
                "%",
                target=f"≤ {RETRY_LOAD_TARGET:.0%}",
                passed=r["retry_load"] <= RETRY_LOAD_TARGET,
            ),
        ]
    ewma = next(r for r in results if r["strategy"] == "ewma")
    rows.append(
        Row(
            "routing_failover",
            "ewma: share of tries to the 200 ms service",
            round(ewma["slow_share"] * 100, 2),
            "%",
            baseline=round(base_row["slow_share"] * 100, 2),
            ratio=round(ewma["slow_share"] / base_row["slow_share"], 2) if base_row["slow_share"] else None,
            target="< round_robin",
            passed=ewma["slow_share"] < base_row["slow_share"],
        )
    )
    return Report("routing_failover", {"tasks": tasks, "clients": clients, "strategies": results}, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="fewer tasks")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(quick=args.quick, tasks=args.tasks, clients=args.clients)
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


if __name__ == "__main__":
    main()
