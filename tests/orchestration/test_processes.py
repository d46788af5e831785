"""The process registry: rows, heartbeats, restarts recorded by a supervisor."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from orchestration.core.models import OrchestratorProcess
from orchestration.core.process_registry import Heartbeat, process_started_at
from tests.support.processes import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

T0 = timezone.now() - timedelta(minutes=5)


def test_a_process_registers_once_and_then_only_beats():
    pk = OrchestratorProcess.register("loop", "h1", 100, T0)
    assert OrchestratorProcess.register("loop", "h1", 100, T0) == pk
    row = OrchestratorProcess.objects.get()
    assert (row.role, row.restarts, row.last_exit_code, row.started_at) == ("loop", 0, None, T0)
    assert row.alive
    OrchestratorProcess.objects.filter(pk=pk).update(last_seen=timezone.now() - timedelta(minutes=1))
    assert not OrchestratorProcess.objects.get().alive
    assert OrchestratorProcess.beat(pk) and OrchestratorProcess.objects.get().alive
    OrchestratorProcess.objects.all().delete()
    assert not OrchestratorProcess.beat(pk)  # gone: the heartbeat registers again


@pytest.mark.parametrize("child_first", [True, False])
def test_a_supervisors_restart_record_and_the_childs_registration_meet_in_one_row(child_first):
    OrchestratorProcess.register("cluster", "h1", 100, T0)
    started = timezone.now()
    record = dict(role="cluster", host="h1", pid=200, started_at=started, restarts=3, last_exit_code=-9, replaces=100)
    if child_first:
        OrchestratorProcess.register("cluster", "h1", 200, started + timedelta(milliseconds=10))
        OrchestratorProcess.record_restart(**record)
    else:
        OrchestratorProcess.record_restart(**record)
        OrchestratorProcess.register("cluster", "h1", 200, started + timedelta(milliseconds=10))
    row = OrchestratorProcess.objects.get()  # the dead child's row went with it
    assert (row.pid, row.restarts, row.last_exit_code) == (200, 3, -9)


def test_a_recycled_pid_does_not_inherit_its_predecessors_restarts():
    OrchestratorProcess.record_restart(
        role="web", host="h1", pid=300, started_at=T0, restarts=5, last_exit_code=1, replaces=None
    )
    OrchestratorProcess.register("loop", "h1", 300, T0 + timedelta(hours=1))
    row = OrchestratorProcess.objects.get()
    assert (row.role, row.restarts, row.last_exit_code) == ("loop", 0, None)
    assert row.started_at == T0 + timedelta(hours=1)


def test_counts_by_role_and_pruning_of_long_gone_processes():
    OrchestratorProcess.register("web", "h1", 1, T0)
    OrchestratorProcess.register("web", "h2", 1, T0)
    OrchestratorProcess.record_restart(
        role="loop", host="h1", pid=2, started_at=T0, restarts=2, last_exit_code=1, replaces=None
    )
    OrchestratorProcess.objects.filter(host="h2").update(last_seen=timezone.now() - timedelta(days=2))
    counts = OrchestratorProcess.by_role()
    assert counts["web"] == {"restarts": 0, "alive": 1, "total": 2}
    assert counts["loop"] == {"restarts": 2, "alive": 1, "total": 1}
    assert counts["cluster"] == {"restarts": 0, "alive": 0, "total": 0}
    assert OrchestratorProcess.prune() == 1
    assert OrchestratorProcess.forget("h1", [1, 2]) == 2


def test_the_heartbeat_thread_outlives_a_failed_beat(monkeypatch, caplog):
    heartbeat = Heartbeat("loop", interval=0.05)
    real = OrchestratorProcess.beat
    failures = {"left": 3}

    def flaky(pk):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real(pk)

    monkeypatch.setattr(OrchestratorProcess, "beat", flaky)
    heartbeat.start()
    try:
        wait_for(lambda: not failures["left"] and not heartbeat.failing, timeout=5, message="beats again")
        seen = OrchestratorProcess.objects.get(pid=os.getpid()).last_seen
        time.sleep(0.2)
        assert OrchestratorProcess.objects.get(pid=os.getpid()).last_seen > seen
    finally:
        heartbeat.stop(forget=True)
    assert not OrchestratorProcess.objects.exists()
    assert sum("failed" in r.getMessage() for r in caplog.records) == 1  # logged once, not per beat
    assert heartbeat.started_at == process_started_at(os.getpid())


# --- where people see them ---------------------------------------------------------------
def _two_processes() -> None:
    OrchestratorProcess.register("web", "h1", 10, T0)
    OrchestratorProcess.record_restart(
        role="cluster", host="h1", pid=11, started_at=T0, restarts=2, last_exit_code=-9, replaces=None
    )
    OrchestratorProcess.objects.filter(pid=11).update(last_seen=timezone.now() - timedelta(minutes=10))


def test_the_api_lists_every_process_with_its_liveness_and_restarts(user_client, anon_client):
    _two_processes()
    assert anon_client.get("/api/v1/processes/").status_code == 401
    body = user_client.get("/api/v1/processes/").json()
    rows = {row["role"]: row for row in body["results"]}
    assert set(rows["web"]) == {
        "role", "host", "pid", "started_at", "last_seen", "alive", "restarts", "last_exit_code"
    }  # fmt: skip
    assert (rows["web"]["alive"], rows["web"]["restarts"], rows["web"]["last_exit_code"]) == (True, 0, None)
    assert (rows["cluster"]["alive"], rows["cluster"]["restarts"], rows["cluster"]["last_exit_code"]) == (False, 2, -9)
    assert user_client.post("/api/v1/processes/", {}, format="json").status_code in (403, 405)


def test_metrics_count_restarts_and_live_processes_by_role(user_client):
    _two_processes()
    text = user_client.get("/metrics").content.decode()
    assert 'orchestrator_process_restarts_total{role="cluster"} 2.0' in text
    assert 'orchestrator_process_restarts_total{role="loop"} 0.0' in text
    assert 'orchestrator_processes_alive{role="web"} 1.0' in text
    assert 'orchestrator_processes_alive{role="cluster"} 0.0' in text


def test_the_console_page_lists_them_alive_first(viewer_session):
    _two_processes()
    page = viewer_session.get("/processes/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/processes/"' in html  # in the navigation
    assert html.index('data-process="web-10"') < html.index('data-process="cluster-11"')
    assert "not alive" in html and "-9" in html
    live = viewer_session.get("/processes/?live=1").json()
    assert "cluster-11" in live["panels"]["processes"]
