"""PostgreSQL restarted (``pg_ctl -m fast restart``) under ``manage.py serve`` with 1,000
jobs flowing: none lost, none duplicated (one job per Idempotency-Key, one run per job),
every process alive or restarted by serve, and all done within JOB_LEASE_SECONDS + 15 s
of the database being back."""

from __future__ import annotations

import collections
import threading
import time

import pytest
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token

from orchestration.core.choices import JobStatus
from orchestration.core.models import Job, LedgerEntry
from tests.faults.conftest import Writers, retrying
from tests.support.processes import Proc, free_port, manage, subprocess_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JOBS = 1000
RESTART_AFTER = 300  # accepted jobs before the restart: it lands mid-run
LEASE_SECONDS = 10


def postmaster_started() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_postmaster_start_time()")
        return str(cursor.fetchone()[0])


def test_postgresql_restarted_mid_run_with_1000_jobs_flowing(tmp_path, scale):
    staff = get_user_model().objects.create_user("weather", password="pw-weather-1", is_staff=True)
    token = Token.objects.create(user=staff).key
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = subprocess_env(
        JOB_LEASE_SECONDS=str(LEASE_SECONDS),
        PROCESS_HEARTBEAT_SECONDS="0.5",
        API_WRITE_RATE="1000000/min",
        ORCHESTRATOR_INTERVAL_SECONDS="1",
    )
    serve = Proc("serve", manage("serve", "--port", str(port)), env, tmp_path)
    failed = True
    try:
        wait_for(lambda: _ok(f"{base}/health"), timeout=60, message="serve's web server", alive=(serve,))
        writers = Writers(base, token, name="pgrestart", threads=8)
        posting = threading.Thread(target=writers.post_all, args=(range(JOBS),))
        posting.start()
        wait_for(lambda: len(writers.ids) >= RESTART_AFTER, timeout=120, message="jobs flowing", alive=(serve,))

        before_pid, before_started = scale.postmaster_pid(), postmaster_started()
        restart_began = time.monotonic()
        # Down for 2 s: longer than the loop's 1 s interval, so the loop runner meets it.
        scale.restart_postgresql(down_seconds=2.0)
        back_at = timezone.now()  # the database accepts connections again
        outage = time.monotonic() - restart_began
        connection.close()  # the restart cut this test's connection too
        # The fault happened: another postmaster, started anew.
        assert scale.postmaster_pid() != before_pid
        assert retrying(postmaster_started) != before_started

        posting.join(timeout=180)
        assert not posting.is_alive(), "the writers did not finish"
        ids = set(writers.ids.values())
        assert len(writers.ids) == JOBS and len(ids) == JOBS  # every item accepted, as one job each

        def all_done() -> bool:
            return Job.objects.filter(pk__in=ids, status=JobStatus.COMPLETED).count() == JOBS

        wait_for(lambda: retrying(all_done), timeout=LEASE_SECONDS + 60, interval=0.5, message="all jobs done")
        last_finished = Job.objects.filter(pk__in=ids).order_by("-finished_at").values_list("finished_at", flat=True)[0]
        done_after = (last_finished - back_at).total_seconds()

        # 0 lost, 0 duplicated: one job per item, and each ran exactly once.
        assert Job.objects.filter(payload__name="pgrestart").count() == JOBS
        marks = (settings.RUNS_DIR / "marks" / "pgrestart").read_text().split("\n")
        runs = collections.Counter(int(line.split()[0]) for line in marks if line)
        assert set(runs) == ids
        assert max(runs.values()) == 1, [job for job, n in runs.items() if n > 1][:10]
        assert not Job.objects.filter(pk__in=ids, status=JobStatus.FAILED).exists()
        assert done_after <= LEASE_SECONDS + 15, f"last job done {done_after:.1f} s after the database was back"

        # Every process alive (or restarted by serve): serve never stopped the others.
        assert serve.popen.poll() is None
        assert "stopping the others" not in serve.output()
        staff_api = requests.Session()
        staff_api.headers["Authorization"] = f"Bearer {token}"

        def three_alive() -> bool:
            try:
                rows = staff_api.get(f"{base}/api/v1/processes/", timeout=5).json()["results"]
            except (requests.RequestException, ValueError, KeyError):
                return False
            return {row["role"] for row in rows if row["alive"]} >= {"web", "cluster", "loop"}

        wait_for(three_alive, timeout=30, message="web, cluster and loop alive")
        # The loop runner saw the outage and wrote it down once, with its end.
        kinds = list(
            LedgerEntry.objects.filter(event_type__startswith="orchestrator.database_").values_list(
                "event_type", flat=True
            )
        )
        assert "orchestrator.database_unreachable" in kinds and "orchestrator.database_back" in kinds
        # A request that met the restart was answered 503 with Retry-After (or its
        # connection was cut); never 500, and its retry with the same key made one job.
        answers = collections.Counter(writers.statuses)
        assert set(answers) <= {0, 200, 201, 503}, answers
        print(
            f"\nPostgreSQL restart took {outage:.1f} s; {JOBS} jobs, answers {dict(answers)}, "
            f"{writers.replayed} replayed; last job done {done_after:.1f} s after the database was back"
        )
        failed = False
    finally:
        if failed:
            serve.dump_stacks()
        serve.stop(timeout=30)
        if failed:
            print(f"----- serve log -----\n{serve.output()[-12000:]}")


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
