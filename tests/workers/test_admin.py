"""The fleet in the admin: lists render with last run, score, next run and breaker;
the trigger/enable/disable actions work."""

from __future__ import annotations

import pytest
from django.test import Client

from orchestration.core.models import LedgerEntry
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import execute_run, request_run


@pytest.fixture
def admin_client(db, staff_user):
    staff_user.is_superuser = True
    staff_user.save()
    client = Client()
    client.force_login(staff_user)
    return client


def test_the_fleet_list_shows_last_run_score_next_run_and_breaker(admin_client, make_worker):
    worker = make_worker()
    execute_run(request_run(worker).pk)
    page = admin_client.get("/admin/orchestration/worker/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "collector" in html and "every 5 min" in html and "succeeded" in html and ">100<" in html
    assert "closed" in html
    for path in ("workerrun", "scorereport", "anomaly"):
        assert admin_client.get(f"/admin/orchestration/{path}/").status_code == 200
    assert admin_client.get(f"/admin/orchestration/worker/{worker.pk}/change/").status_code == 200


def test_admin_actions_trigger_enable_and_disable(admin_client, make_worker):
    worker = make_worker()
    url = "/admin/orchestration/worker/"
    admin_client.post(url, {"action": "disable_workers", "_selected_action": [worker.pk]})
    assert Worker.objects.get(pk=worker.pk).enabled is False
    admin_client.post(url, {"action": "trigger_workers", "_selected_action": [worker.pk]})
    assert not WorkerRun.objects.exists()  # disabled: refused
    admin_client.post(url, {"action": "enable_workers", "_selected_action": [worker.pk]})
    admin_client.post(url, {"action": "trigger_workers", "_selected_action": [worker.pk]})
    assert WorkerRun.objects.get().actor == "ops"
    assert LedgerEntry.objects.filter(event_type="worker.disabled", actor="ops").exists()


def test_the_admin_form_refuses_a_dependency_cycle(admin_client, make_worker):
    a = make_worker("a")
    make_worker("b", depends_on=["a"])
    data = {
        "name": "a",
        "description": "",
        "category": "collection",
        "execution_model": "scheduled",
        "interval_seconds": 300,
        "cron": "",
        "timeout_seconds": 30,
        "depends_on": '["b"]',
        "optional_depends_on": "[]",
        "target": '{"type": "python", "path": "tests.workers.targets.ok"}',
        "enabled": "on",
        "priority": "normal",
        "rate_factor": 1.0,
    }
    page = admin_client.post(f"/admin/orchestration/worker/{a.pk}/change/", data)
    assert page.status_code == 200 and "dependency cycle" in page.content.decode()
    assert Worker.objects.get(pk=a.pk).depends_on == []


def test_the_admin_form_refuses_a_cron_that_never_fires(admin_client):
    """30 February is valid cron syntax but never comes: the worker was saved without a
    schedule and the page answered 500."""
    data = {
        "name": "never",
        "description": "",
        "category": "collection",
        "execution_model": "scheduled",
        "interval_seconds": "",
        "cron": "0 0 30 2 *",
        "timeout_seconds": 30,
        "depends_on": "[]",
        "optional_depends_on": "[]",
        "target": '{"type": "python", "path": "orchestration.core.jobs.kinds.mark_schedule", "kwargs": {"name": "n"}}',
        "enabled": "on",
        "priority": "normal",
        "rate_factor": 1.0,
    }
    page = admin_client.post("/admin/orchestration/worker/add/", data)
    assert page.status_code == 200 and "never fires" in page.content.decode()
    assert not Worker.objects.filter(name="never").exists()
