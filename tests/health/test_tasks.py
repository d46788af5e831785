"""Cadence, retention, the command, the demo, and state seen by another process."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule

from health.models import HealthCheck, Service, ServiceDay
from health.sweep import check_services
from health.tasks import RETIRED_SCHEDULES, health_tick, prune_checks, retire_schedules
from tests.health.servers import Behaviour
from tests.support.processes import ROOT, subprocess_env

pytestmark = pytest.mark.django_db


def test_no_schedule_of_its_own_checks_services_or_prunes_their_history():
    # The sweep's trigger is the loop runner's tick; retention is a built-in worker's.
    assert not Schedule.objects.filter(func__startswith="health.").exists()


def test_schedules_left_by_an_older_version_are_removed_on_migrate():
    Schedule.objects.create(name="health.sweep", func="health.tasks.sweep_due", schedule_type="I", minutes=1)
    Schedule.objects.create(name="health.check_retention", func="health.tasks.prune_checks", schedule_type="H")
    retire_schedules()  # as every migrate does
    assert not Schedule.objects.filter(name__in=RETIRED_SCHEDULES).exists()


def test_the_tick_hook_checks_due_services_once_per_interval(server):
    Service.objects.create(name="api", base_url=server.base_url, health_path="/api", check_interval_seconds=60)
    assert health_tick() == 1  # runs inline: the test settings make django-q2 synchronous
    assert Service.objects.get(name="api").total_checks == 1 and server.hits["/api"] == 1
    assert health_tick() == 0
    assert server.hits["/api"] == 1


def test_the_tick_hook_skips_services_not_due(server):
    Service.objects.create(name="a", base_url=server.base_url, health_path="/a")
    Service.objects.create(
        name="b", base_url=server.base_url, health_path="/b", next_check_at=timezone.now() + timedelta(hours=1)
    )
    assert health_tick() == 1
    assert server.hits["/a"] == 1 and server.hits["/b"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_loop_runner_tick_runs_the_sweep(server):
    from orchestration.loop.runner import LoopRunner

    Service.objects.create(name="api", base_url=server.base_url, health_path="/api", check_interval_seconds=60)
    LoopRunner().tick()
    service = Service.objects.get(name="api")
    assert service.total_checks == 1 and service.health == "healthy" and server.hits["/api"] == 1


def test_retention_drops_old_checks_and_caps_each_service():
    svc = Service.objects.create(name="api", base_url="http://127.0.0.1:9")
    other = Service.objects.create(name="db", base_url="http://127.0.0.1:9")
    now = timezone.now()
    HealthCheck.objects.bulk_create(
        [
            HealthCheck(service=svc, checked_at=now - timedelta(days=30), success=True, health="healthy")
            for _ in range(5)
        ]
        + [
            HealthCheck(service=svc, checked_at=now - timedelta(seconds=i), success=True, health="healthy")
            for i in range(30)
        ]
        + [
            HealthCheck(service=other, checked_at=now - timedelta(seconds=i), success=False, health="unhealthy")
            for i in range(8)
        ]
    )
    ServiceDay.objects.bulk_create(
        ServiceDay(service=svc, day=(now - timedelta(days=d)).date(), checks=1, successes=1) for d in (0, 99, 101, 300)
    )
    assert prune_checks(days=7, keep=10) == {"by_age": 5, "over_cap": 20, "days": 2}
    assert ServiceDay.objects.count() == 2  # the status pages' 90 days stay
    kept = list(HealthCheck.objects.filter(service=svc).order_by("-checked_at").values_list("checked_at", flat=True))
    assert len(kept) == 10 and kept[0] == now and kept[-1] == now - timedelta(seconds=9)
    assert HealthCheck.objects.filter(service=other).count() == 8


def test_check_health_prints_a_table(server, capsys):
    Service.objects.create(name="api", base_url=server.base_url, health_path="/api")
    Service.objects.create(name="bad", base_url=server.base_url, health_path="/bad")
    server.behaviour["/bad"] = Behaviour.ERROR
    call_command("check_health")
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split()[:3] == ["SERVICE", "HEALTH", "BREAKER"]
    assert lines[1].split()[:4] == ["api", "healthy", "closed", "100.00%"]
    assert lines[2].split()[:4] == ["bad", "unhealthy", "closed", "0.00%"] and "HTTP 500" in lines[2]
    assert lines[-1] == "overall: degraded"
    assert "Checking 2 service(s)" in out.err


def test_check_health_json_and_no_check(server, capsys):
    Service.objects.create(name="api", base_url=server.base_url, health_path="/api")
    call_command("check_health", "--json", "--no-check")
    body = json.loads(capsys.readouterr().out)
    assert body["services"]["api"]["health"] == "unknown" and server.hits["/api"] == 0
    call_command("check_health", "api", "--json")
    assert json.loads(capsys.readouterr().out)["services"]["api"]["total_checks"] == 1
    with pytest.raises(CommandError, match="No enabled service named nope"):
        call_command("check_health", "nope")


def test_the_demo_loads_services_with_dependencies_and_removes_them(settings):
    from health.demo import HealthDemo

    settings.HEALTH_DEMO_BASE_URL = "http://127.0.0.1:8123"
    assert HealthDemo().load().startswith("5 service(s)")
    assert HealthDemo().load() == "already loaded"
    web = Service.objects.get(name="demo-web")
    assert sorted(web.depends_on.values_list("name", flat=True)) == ["demo-api", "demo-search"]
    assert web.health_url == "http://127.0.0.1:8123/demo/health/flaky"
    assert HealthDemo().remove() >= 5 and not Service.objects.filter(name__startswith="demo-").exists()


def test_the_demo_endpoints_answer_only_while_the_demo_is_loaded(client, settings):
    from health.demo import HealthDemo

    for endpoint in ("healthy", "flaky", "slow"):
        assert client.get(f"/demo/health/{endpoint}").status_code == 404
    HealthDemo().load()
    assert client.get("/demo/health/healthy").json() == {"status": "ok"}
    assert client.get("/demo/health/flaky").status_code in (200, 503)
    HealthDemo().remove()
    assert client.get("/demo/health/healthy").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_another_process_sees_the_persisted_breaker_and_counters(server):
    """A restart: a new process reads what this one wrote and keeps skipping the open circuit."""
    server.behaviour["/api"] = Behaviour.ERROR
    Service.objects.create(name="api", base_url=server.base_url, health_path="/api", failure_threshold=2)
    check_services()
    check_services()
    out = subprocess.run(
        [sys.executable, "manage.py", "check_health", "--json"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    api = json.loads(out.stdout)["services"]["api"]
    assert api["circuit_breaker_state"] == "open" and api["health"] == "circuit_open"
    assert api["total_checks"] == 2 and api["consecutive_failures"] == 2
    assert server.hits["/api"] == 2  # the new process sent nothing to the open circuit


def test_a_tick_check_reads_no_service_field_one_by_one(server):
    """The tick's checks load only Service.SWEEP_FIELDS: nothing the sweep reads may be
    left out (it would cost a query per service), whatever the kinds and breakers."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from health.tasks import check_service_ids

    def batch(prefix: str, n: int) -> list[int]:
        ids = []
        for i in range(n):
            path = "/ok" if i % 3 else "/bad"
            ids.append(
                Service.objects.create(
                    name=f"{prefix}{i}", base_url=server.base_url, health_path=path, failure_threshold=1
                ).pk
            )
        ids.append(Service.objects.create(name=f"{prefix}-hb", kind="heartbeat", check_config={}).pk)
        return ids

    server.behaviour["/bad"] = Behaviour.ERROR
    small, large = batch("s", 3), batch("l", 9)
    counts = []
    for ids in (small, large):
        check_service_ids(ids)  # breakers of the failing ones open
        with CaptureQueriesContext(connection) as queries:
            check_service_ids(ids)
        table = connection.ops.quote_name(Service._meta.db_table)
        counts.append(sum(1 for q in queries if q["sql"].startswith("SELECT") and f"FROM {table}" in q["sql"]))
    assert counts[0] == counts[1]  # however many services, the same reads of them
    assert Service.objects.get(name="l0").health == "circuit_open"
