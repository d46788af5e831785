"""Health sweep: concurrent versus sequential, in the same run.

200 services on 127.0.0.1, of which 20 hang past their 1 s timeout. The concurrent
sweep is the real ``check_services`` (bounded thread pool, then the database writes);
the sequential baseline is the same sweep with a pool of one. Target: sweep ≤ 1.5 s.

``--quick``: 100 services of which 5 hang, one concurrent sweep.

    python bench/health_sweep.py [--services 200] [--hanging 20] [--timeout 1] [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Report, Row, check, finish, progress, setup_django, table

HANG_SECONDS = 3.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Hundreds of connections arrive at once; the default backlog of 5 would make the
    # kernel drop SYNs and the client retry a second later, timing the server, not us.
    request_queue_size = 1024


def start_server(release: threading.Event) -> _Server:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/hang"):
                release.wait(HANG_SECONDS)
            body = b'{"status": "ok"}'
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def run(
    *,
    quick: bool = False,
    services: int | None = None,
    hanging: int | None = None,
    timeout: float = 1.0,
    repeat: int | None = None,
) -> Report:
    services = services or (100 if quick else 200)
    hanging = hanging if hanging is not None else (5 if quick else 20)
    repeat = repeat or (1 if quick else 3)
    setup_django("health")

    from django.conf import settings

    from bench.common import profile_name
    from health.models import CircuitBreaker, HealthCheck, Service
    from health.sweep import check_services

    print(f"Health sweep benchmark on {profile_name()}: {services} services, {hanging} hanging")
    release = threading.Event()
    server = start_server(release)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    progress(f"test server on {base}; registering services")
    Service.objects.filter(name__startswith="bench-").delete()
    for i in range(services):
        path = f"/hang/{i}" if i < hanging else f"/ok/{i}"
        Service.objects.create(name=f"bench-{i:03d}", base_url=base, health_path=path, timeout_seconds=timeout)
    registered = Service.objects.filter(name__startswith="bench-")

    def reset() -> None:
        # Every run starts from the same state: closed breakers, zero counters.
        CircuitBreaker.objects.filter(name__startswith="service:bench-").update(
            state="closed", consecutive_failures=0, consecutive_successes=0, opened_at=None, trial_started_at=None
        )
        registered.update(total_checks=0, successful_checks=0, consecutive_failures=0, health="unknown")
        HealthCheck.objects.filter(service__name__startswith="bench-").delete()

    def sweep() -> tuple[float, int, int]:
        reset()
        targets = list(registered.select_related("circuit"))
        began = time.perf_counter()
        result = check_services(targets)
        elapsed = time.perf_counter() - began
        return elapsed, len(result.checked), len(result.failed)

    concurrent = []
    for n in range(repeat):
        elapsed, checked, failed = sweep()
        concurrent.append(elapsed)
        progress(f"concurrent sweep {n + 1}/{repeat}: {elapsed:.3f} s ({checked} checked, {failed} failed)")
        assert checked == services and failed == hanging, "unexpected results"

    expected = (services - hanging) * 0.002 + hanging * timeout
    progress(f"sequential sweep (pool of 1), about {expected:.0f} s…")
    pool = settings.HEALTH_MAX_WORKERS
    settings.HEALTH_MAX_WORKERS = 1
    try:
        sequential, checked, failed = sweep()
    finally:
        settings.HEALTH_MAX_WORKERS = pool
    progress(f"sequential sweep: {sequential:.3f} s ({checked} checked, {failed} failed)")

    release.set()
    server.shutdown()
    Service.objects.filter(name__startswith="bench-").delete()

    median = statistics.median(concurrent)
    ratio = sequential / median
    print()
    print(
        table(
            ["sweep", "pool", "wall s", "vs sequential"],
            [
                ["concurrent (median)", pool, f"{median:.3f}", f"{ratio:.1f}× faster"],
                ["concurrent (best)", pool, f"{min(concurrent):.3f}", ""],
                ["sequential", 1, f"{sequential:.3f}", "1.0×"],
            ],
        )
    )
    verdict = "meets" if median <= 1.5 else "MISSES"
    print(f"\nTarget sweep ≤ 1.5 s: {verdict} ({median:.3f} s for {services} services, {timeout:g} s timeout)")
    return Report(
        "health_sweep",
        {
            "services": services,
            "hanging": hanging,
            "timeout_s": timeout,
            "pool": pool,
            "concurrent_s": [round(x, 3) for x in concurrent],
            "concurrent_median_s": round(median, 3),
            "sequential_s": round(sequential, 3),
            "ratio": round(ratio, 1),
        },
        [
            Row(
                "health_sweep",
                f"sweep of {services} services, {hanging} hanging past {timeout:g} s",
                round(median, 3),
                "s",
                baseline=round(sequential, 3),
                ratio=round(median / sequential, 3),
                target="≤ 1.5 s",
                passed=check(median, "≤", 1.5),
            )
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int)
    parser.add_argument("--hanging", type=int)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--quick", action="store_true", help="fewer services, one concurrent sweep")
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(
        quick=args.quick, services=args.services, hanging=args.hanging, timeout=args.timeout, repeat=args.repeat
    )
    report.figures["seconds"] = round(time.monotonic() - started, 1)
    finish(report, args.report)


if __name__ == "__main__":
    main()
