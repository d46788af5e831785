"""Redis (the cache) stopped under ``manage.py serve`` with jobs flowing: no request
answers 5xx, nothing is lost or written twice, each process logs the outage once (not
once a request), and Redis is used again once it is back."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from orchestration.core.choices import JobStatus
from orchestration.core.models import Job
from tests.faults.conftest import Writers
from tests.support.processes import Proc, free_port, manage, subprocess_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Down as long as an operator saw it down; the cache's retry interval (5 s) passes
# several times meanwhile.
DOWN_SECONDS = 30
PACE = 0.05  # each writer's pause between requests: jobs flow before, during and after


def test_redis_stopped_with_jobs_flowing(tmp_path, scale):
    staff = get_user_model().objects.create_user("cacheless", password="pw-cacheless-1", is_staff=True)
    token = Token.objects.create(user=staff).key
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = subprocess_env(PROCESS_HEARTBEAT_SECONDS="0.5", API_WRITE_RATE="1000000/min")
    assert env["CACHE_URL"].startswith("redis://")
    serve = Proc("serve", manage("serve", "--port", str(port)), env, tmp_path)
    failed = True
    try:
        wait_for(lambda: _ok(f"{base}/health"), timeout=60, message="serve's web server", alive=(serve,))
        writers = Writers(base, token, name="cachestop", threads=4)
        stop = threading.Event()
        counter = iter(range(1_000_000))

        def write() -> None:
            while not stop.is_set():
                writers.post(next(counter), retry_for=0)  # one try: any non-2xx fails the test
                time.sleep(PACE)

        threads = [threading.Thread(target=write) for _ in range(writers.threads)]
        for thread in threads:
            thread.start()
        # The cache is in use: the write throttle keeps its counts in Redis.
        wait_for(lambda: scale.redis_cli("--scan", "--pattern", "*throttle*").stdout.strip(), timeout=20)
        time.sleep(2)
        before = len(writers.ids)
        scale.stop_redis()  # the fault: Redis is gone (proven down by stop_redis)
        stopped_at = time.monotonic()
        reads = requests.Session()
        reads.headers["Authorization"] = f"Bearer {token}"
        read_statuses = []
        while time.monotonic() - stopped_at < DOWN_SECONDS:
            for path in ("/orchestrator/snapshot", "/api/v1/jobs/?status=pending", "/metrics", "/api/v1/processes/"):
                read_statuses.append(reads.get(base + path, timeout=10).status_code)
            time.sleep(0.5)
        during = len(writers.ids) - before
        scale.start_redis()
        started_at = time.monotonic()
        # Back in use within the cache's retry interval: throttle counts land in Redis again.
        wait_for(
            lambda: scale.redis_cli("--scan", "--pattern", "*throttle*").stdout.strip(),
            timeout=15,
            message="the cache used again",
        )
        back_in = time.monotonic() - started_at
        time.sleep(1)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

        assert set(read_statuses) == {200}, read_statuses
        assert set(writers.statuses) == {201}, sorted(set(writers.statuses))  # every write answered at once
        assert during >= 20, f"only {during} jobs accepted while Redis was down"
        ids = set(writers.ids.values())
        assert len(ids) == len(writers.ids) == Job.objects.filter(payload__name="cachestop").count()
        wait_for(
            lambda: Job.objects.filter(pk__in=ids, status=JobStatus.COMPLETED).count() == len(ids),
            timeout=60,
            message="every job done",
        )
        assert serve.popen.poll() is None and "stopping the others" not in serve.output()
        log = serve.output()
        went = log.count("cache (Redis) unreachable")
        # Once per process that used the cache meanwhile (web, loop, the cluster's
        # processes), not once per request: hundreds were served meanwhile.
        assert 1 <= went <= 10, went
        assert log.count("cache (Redis) reachable again") >= 1
        print(
            f"\nRedis down {DOWN_SECONDS} s: {len(ids)} jobs ({during} while down), {len(read_statuses)} reads, "
            f"all answered 2xx; outage logged {went} time(s); cache used again {back_in:.1f} s after its start"
        )
        failed = False
    finally:
        if not scale.redis_up():
            scale.start_redis()
        serve.stop(timeout=30)
        if failed:
            print(f"----- serve log -----\n{serve.output()[-12000:]}")


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
