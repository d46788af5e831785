"""``/orchestrator/snapshot`` under concurrent load, against a trivial endpoint.

A live web server (gunicorn, as the README deploys the web tier, sized for this
benchmark's 2-core machine at 2 workers × 10 threads where the README's example says
4 × 8; ``--server runserver`` for the single process ``make run`` serves with) on a
database holding 1,000 registered services (mixed health, some breakers open) and some
queue history. 20 clients, each with its own keep-alive connection and Bearer token,
request the snapshot back to back; the baseline is the same load on ``/health`` (no
database, no authentication) on the same server in the same run, so the
ratio isolates what the snapshot itself costs. Latency is per request, p50/p99.

Most answers come from the snapshot cache (a snapshot is built once a second, or per
``SNAPSHOT_CACHE_SECONDS``, and shared): those whose ``taken_at`` is before the request
was sent are counted apart, with the p99 of the fresh ones alone. The build itself, cache
off, is timed by ``bench/health_scale.py`` at 20,000 services.

Target: snapshot p99 ≤ 200 ms.

    python bench/snapshot_load.py [--services 1000] [--clients 20] [--requests 25] [--quick]
                                  [--server gunicorn|runserver]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from datetime import datetime, timedelta
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

P99_TARGET_MS = 200


def populate(services: int) -> str:
    """Register the services, some queue history; return a Bearer token."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from health.models import CircuitBreaker, Service
    from orchestration.core.models import Job

    rng = random.Random(11)
    now = timezone.now()
    with transaction.atomic():
        for i in range(services):
            # Service.save() creates the service's circuit breaker too.
            Service.objects.create(
                name=f"bench-{i:04d}",
                base_url=f"http://127.0.0.1:9/{i}",
                capabilities=["render"] if i % 3 else ["render", "score"],
                next_check_at=now + timedelta(days=1),  # nobody checks them during the run
                health=rng.choice(["healthy"] * 8 + ["unhealthy", "unknown"]),
            )
        CircuitBreaker.objects.filter(name__in=[f"service:bench-{i:04d}" for i in range(0, services, 25)]).update(
            state="open", opened_at=now
        )
        statuses = ["completed"] * 80 + ["failed"] * 5 + ["pending"] * 10 + ["retry"] * 5
        Job.objects.bulk_create(
            Job(
                kind="noop",
                status=rng.choice(statuses),
                created_at=now - timedelta(minutes=rng.uniform(0, 600)),
                score=rng.uniform(0, 100) if rng.random() < 0.5 else None,
            )
            for _ in range(5000)
        )
        user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
        token, _ = Token.objects.get_or_create(user=user)
    return token.key


def load(url: str, clients: int, per_client: int, token: str) -> tuple[list[float], float, list[bool]]:
    """``clients`` threads, each sending ``per_client`` requests back to back. Per answer
    of the snapshot, in the order of the samples: whether it came from the cache."""
    samples: list[float] = []
    cached: list[bool] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        mine, hits = [], []
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            start.wait()
            for _ in range(per_client):
                sent = datetime.now().astimezone()
                t = time.perf_counter()
                try:
                    response = session.get(url, timeout=30)
                    response.raise_for_status()
                    body = response.json()
                except (requests.RequestException, ValueError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                mine.append(time.perf_counter() - t)
                taken = body.get("snapshot", {}).get("taken_at") if isinstance(body, dict) else None
                hits.append(taken is not None and datetime.fromisoformat(taken) < sent)
        with lock:
            samples.extend(mine)
            cached.extend(hits)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients * per_client} requests to {url} failed, e.g. {errors[0]}")
    return samples, wall, cached


def _web(server: str, port: int) -> list[str]:
    if server == "runserver":
        return ["runserver", f"127.0.0.1:{port}", "--noreload"]
    return ["-m", "gunicorn", "orchestrator_site.wsgi", "-b", f"127.0.0.1:{port}", "--workers", "2", "--threads", "10"]


def run(
    *,
    quick: bool = False,
    services: int = 1000,
    clients: int = 20,
    requests_per_client: int | None = None,
    server: str = "gunicorn",
) -> Report:
    per_client = requests_per_client or (8 if quick else 25)
    setup_django("snapshot", fresh=True)

    from bench.common import profile_name

    print(
        f"Snapshot load benchmark on {profile_name()} ({server}): {services} services, {clients} clients × {per_client}"
    )
    progress(f"registering {services} services")
    token = populate(services)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    results: dict[str, tuple[list[float], float, list[bool]]] = {}
    with running(("web", _web(server, port)), DEBUG="false") as procs:
        wait_for(lambda: _up(f"{base}/health"), timeout=60, what="the web server", procs=procs)
        snapshot = requests.get(f"{base}/orchestrator/snapshot", headers={"Authorization": f"Bearer {token}"}).json()
        assert snapshot["snapshot"]["services"]["total"] == services, snapshot["snapshot"]["services"]
        load(f"{base}/health", clients, 2, token)  # warm-up: threads, connections
        load(f"{base}/orchestrator/snapshot", clients, 2, token)
        for name, path in (("health", "/health"), ("snapshot", "/orchestrator/snapshot")):
            results[name] = load(f"{base}{path}", clients, per_client, token)
            samples, wall, _ = results[name]
            progress(f"{path}: {len(samples)} requests in {wall:.2f} s, p50 {statistics.median(samples) * 1000:.0f} ms")

    def figures(name: str) -> dict[str, float]:
        samples, wall, _ = results[name]
        return {
            "requests": len(samples),
            "p50_ms": round(percentile(samples, 50) * 1000, 1),
            "p99_ms": round(percentile(samples, 99) * 1000, 1),
            "max_ms": round(max(samples) * 1000, 1),
            "requests_per_s": round(len(samples) / wall, 1),
        }

    snap, health = figures("snapshot"), figures("health")
    samples, _, cached = results["snapshot"]
    fresh = [elapsed for elapsed, hit in zip(samples, cached, strict=True) if not hit]
    cache = {
        "from_cache": sum(cached),
        "fresh": len(fresh),
        "fresh_p99_ms": round(percentile(fresh, 99) * 1000, 1) if fresh else None,
    }
    print()
    print(
        table(
            ["endpoint", "requests", "p50 ms", "p99 ms", "max ms", "req/s"],
            [
                ["/orchestrator/snapshot", *snap.values()],
                ["/health (baseline)", *health.values()],
            ],
            left=1,
        )
    )
    fresh_p99 = f", their p99 {cache['fresh_p99_ms']} ms" if cache["fresh"] else ""
    hits = f"{cache['from_cache']} of {snap['requests']}"
    print(f"snapshot answers from the cache: {hits} (fresh: {cache['fresh']}{fresh_p99})")
    ratio = snap["p99_ms"] / health["p99_ms"]
    return Report(
        "snapshot_load",
        {
            "server": server,
            "services": services,
            "clients": clients,
            "per_client": per_client,
            "snapshot": snap,
            "snapshot_cache": cache,
            "health": health,
        },
        [
            Row(
                "snapshot_load",
                f"snapshot p50, {clients} clients, {services} services",
                snap["p50_ms"],
                "ms",
                baseline=health["p50_ms"],
                ratio=round(snap["p50_ms"] / health["p50_ms"], 2),
            ),
            Row(
                "snapshot_load",
                f"snapshot p99, {clients} clients, {services} services",
                snap["p99_ms"],
                "ms",
                baseline=health["p99_ms"],
                ratio=round(ratio, 2),
                target=f"≤ {P99_TARGET_MS} ms",
                passed=check(snap["p99_ms"], "≤", P99_TARGET_MS),
            ),
            Row("snapshot_load", "snapshot answers from the cache", cache["from_cache"], f"of {snap['requests']}"),
        ],
    )


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, help="requests per client (default 25, quick 8)")
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--server", choices=("gunicorn", "runserver"), default="gunicorn")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(
        quick=args.quick,
        services=args.services,
        clients=args.clients,
        requests_per_client=args.requests,
        server=args.server,
    )
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


if __name__ == "__main__":
    main()
