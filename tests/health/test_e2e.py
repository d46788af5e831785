"""End to end: the loop runner claims due services, a real qcluster checks them, and the
breaker opened by one process is respected by the next."""

from __future__ import annotations

import pytest

from health.models import HealthCheck, Service
from orchestration.core.models import LedgerEntry
from orchestration.loop.models import LoopState
from tests.health.servers import Behaviour
from tests.support.processes import manage, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_runner_and_cluster_keep_services_checked_and_open_the_breaker(tmp_path, server, broker_only):
    LoopState.get()
    Service.objects.create(name="api", base_url=server.base_url, health_path="/api", check_interval_seconds=1)
    Service.objects.create(
        name="broken",
        base_url=server.base_url,
        health_path="/broken",
        check_interval_seconds=1,
        failure_threshold=3,
        open_timeout_seconds=3600,
    )
    server.behaviour["/broken"] = Behaviour.ERROR
    with running(("cluster", manage("qcluster")), ("loop", manage("run_orchestrator")), log_dir=tmp_path):
        wait_for(
            lambda: (
                Service.objects.get(name="api").total_checks >= 3
                and Service.objects.get(name="broken").health == "circuit_open"
            ),
            timeout=60,
            message="three checks of api and the broken service's circuit open",
        )
        hits_when_open = server.hits["/broken"]
        checks_of_api = Service.objects.get(name="api").total_checks
        wait_for(lambda: Service.objects.get(name="api").total_checks >= checks_of_api + 2, timeout=30)

    # The circuit opened after exactly three requests, and none were sent after.
    assert hits_when_open == 3 and server.hits["/broken"] == 3
    broken = Service.objects.select_related("circuit").get(name="broken")
    assert broken.circuit.state == "open" and broken.total_checks == 3
    assert HealthCheck.objects.filter(service__name="api", success=True).count() == server.hits["/api"]
    assert LedgerEntry.objects.filter(event_type="health.circuit_opened", subject="service:broken").count() == 1
