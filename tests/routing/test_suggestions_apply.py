"""Applying and reverting suggestions: only a person, only approved ones, through the
service's own write, with the metrics before and after kept."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from health.models import Service
from orchestration.core.models import LedgerEntry
from orchestration.fleet.models import Worker
from orchestration.fleet.runner import execute_run, request_run
from orchestration.routing import improvement
from orchestration.routing.models import Suggestion

pytestmark = pytest.mark.django_db


# --- pure -------------------------------------------------------------------------------------------
SERVICE = {"weight": 2.0, "capabilities": ["render", "ocr"], "enabled": True}
WORKER = {"cadence": {"interval_seconds": 300, "cron": ""}, "enabled": True}


def test_the_plan_halves_a_slow_services_weight_and_drops_a_failing_capability():
    slow = improvement.planned_change("lower_weight", "billing:render", {"service": "billing"}, SERVICE)
    assert slow.as_dict() == {"target": "service", "name": "billing", "field": "weight", "before": 2.0, "after": 1.0}
    failing = improvement.planned_change(
        "remove_capability", "billing:render", {"service": "billing", "task_type": "render"}, SERVICE
    )
    assert (failing.field, failing.before, failing.after) == ("capabilities", ["render", "ocr"], ["ocr"])
    idle = improvement.planned_change("rebalance", "billing", {"service": "billing"}, {**SERVICE, "weight": 1.0})
    assert idle.after == 1.5


def test_the_plan_changes_a_workers_cadence_and_a_workers_or_services_switch():
    slower = improvement.planned_change("set_cadence", "worker:collector", {"interval_seconds": 900}, WORKER)
    assert slower.as_dict() == {
        "target": "worker",
        "name": "collector",
        "field": "cadence",
        "before": {"interval_seconds": 300, "cron": ""},
        "after": {"interval_seconds": 900, "cron": ""},
    }
    off = improvement.planned_change("disable_worker", "worker:collector", {}, WORKER)
    assert (off.target, off.name, off.field, off.before, off.after) == ("worker", "collector", "enabled", True, False)
    service_off = improvement.planned_change("disable_service", "billing", {"service": "billing"}, SERVICE)
    assert (service_off.target, service_off.after) == ("service", False)


def test_a_suggestion_with_nothing_to_change_is_not_applicable():
    with pytest.raises(improvement.NotApplicable):
        improvement.planned_change("add_capacity", "render", {}, SERVICE)
    with pytest.raises(improvement.NotApplicable, match="no longer lists"):
        improvement.planned_change("remove_capability", "billing:render", {}, {**SERVICE, "capabilities": ["ocr"]})
    with pytest.raises(improvement.NotApplicable, match="no new cadence"):
        improvement.planned_change("set_cadence", "worker:collector", {}, WORKER)
    with pytest.raises(improvement.NotApplicable, match="already enabled"):
        improvement.planned_change("enable_worker", "worker:collector", {}, WORKER)


# --- through the API ---------------------------------------------------------------------------------
@pytest.fixture
def service():
    return Service.objects.create(
        name="billing", base_url="http://127.0.0.1:9", capabilities=["render", "ocr"], weight=2.0
    )


def suggestion(**fields) -> Suggestion:
    defaults = {
        "kind": "slow_service",
        "subject": "billing:render",
        "title": "billing is slow on render",
        "action": "lower_weight",
        "evidence": {"service": "billing", "task_type": "render"},
    }
    return Suggestion.objects.create(**{**defaults, **fields})


def test_only_an_approved_suggestion_is_applied_and_it_changes_the_service(service, staff_client: APIClient):
    pending = suggestion()
    assert staff_client.post(f"/api/v1/suggestions/{pending.pk}/apply").status_code == 409
    service.refresh_from_db()
    assert service.weight == 2.0
    assert staff_client.post(f"/api/v1/suggestions/{pending.pk}/approve", {}, format="json").status_code == 200
    applied = staff_client.post(f"/api/v1/suggestions/{pending.pk}/apply")
    assert applied.status_code == 200, applied.content
    body = applied.json()
    assert body["status"] == "applied" and body["applied_by"] == "ops"
    assert body["change"] == {"target": "service", "name": "billing", "field": "weight", "before": 2.0, "after": 1.0}
    assert "before" in body["impact"]
    service.refresh_from_db()
    assert service.weight == 1.0
    updated = LedgerEntry.objects.get(event_type="service.updated", subject="service:billing")
    assert updated.actor == "ops" and f"suggestion {pending.pk}" in updated.message
    assert staff_client.post(f"/api/v1/suggestions/{pending.pk}/apply").status_code == 409


def test_revert_puts_back_the_value_and_keeps_the_after_metrics(service, staff_client: APIClient):
    s = suggestion(action="remove_capability", kind="failing_service", status="approved")
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/revert").status_code == 409  # not applied yet
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/apply").status_code == 200
    service.refresh_from_db()
    assert service.capabilities == ["ocr"]
    reverted = staff_client.post(f"/api/v1/suggestions/{s.pk}/revert")
    assert reverted.status_code == 200 and reverted.json()["status"] == "reverted"
    assert "after" in reverted.json()["impact"] and reverted.json()["reverted_by"] == "ops"
    service.refresh_from_db()
    assert service.capabilities == ["render", "ocr"]
    assert LedgerEntry.objects.filter(event_type="routing.suggestion_reverted", actor="ops").exists()


def test_revert_does_not_override_a_later_change_by_a_person(service, staff_client: APIClient):
    s = suggestion(status="approved")
    staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    Service.objects.get(name="billing").configure(actor="someone", weight=5.0)
    answer = staff_client.post(f"/api/v1/suggestions/{s.pk}/revert")
    assert answer.status_code == 409 and "changed since" in answer.json()["detail"]
    service.refresh_from_db()
    assert service.weight == 5.0


def test_a_suggestion_that_needs_work_outside_is_a_409_and_changes_nothing(service, staff_client: APIClient):
    s = suggestion(action="add_capacity", kind="slow_task_type", subject="render", evidence={}, status="approved")
    answer = staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert answer.status_code == 409
    s.refresh_from_db()
    assert s.status == "approved" and not s.change


def test_the_analysis_never_applies_anything(service):
    improvement.analyze(24)
    service.refresh_from_db()
    assert service.weight == 2.0 and service.capabilities == ["render", "ocr"]
    assert not Suggestion.objects.filter(status="applied").exists()


def test_a_change_applied_before_workers_could_be_changed_still_reverts(service, staff_client: APIClient):
    s = suggestion(status="applied")
    Suggestion.objects.filter(pk=s.pk).update(
        change={"service": "billing", "field": "weight", "before": 4.0, "after": 2.0}
    )
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/revert").status_code == 200
    service.refresh_from_db()
    assert service.weight == 4.0


# --- workers: cadence and switch; a service's switch -----------------------------------------------------
@pytest.fixture
def worker():
    return Worker.objects.create(
        name="collector",
        category="collection",
        interval_seconds=300,
        timeout_seconds=30,
        target={"type": "python", "path": "tests.workers.targets.ok"},
    )


def worker_suggestion(action: str, **evidence) -> Suggestion:
    return Suggestion.objects.create(
        kind="worker_cadence" if action == "set_cadence" else "worker_switch",
        subject="worker:collector",
        title=f"{action} collector",
        action=action,
        evidence={"worker": "collector", **evidence},
        status="approved",
    )


def test_a_cadence_suggestion_changes_the_workers_schedule_and_reverts_it(worker, staff_client: APIClient):
    for _ in range(3):
        execute_run(request_run(worker).pk)
    s = worker_suggestion("set_cadence", interval_seconds=900)
    applied = staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert applied.status_code == 200, applied.content
    body = applied.json()
    assert body["change"]["before"] == {"interval_seconds": 300, "cron": ""}
    assert body["change"]["after"] == {"interval_seconds": 900, "cron": ""}
    assert body["impact"]["before"]["runs_24h"] == 3 and body["impact"]["before"]["success_rate"] == 1.0
    worker.refresh_from_db()
    assert worker.interval_seconds == 900
    # The schedule follows at once, as it does after the admin's save.
    assert worker.next_due_at is not None and worker.cadence_key.startswith("900|")
    entry = LedgerEntry.objects.get(event_type="worker.updated", subject="worker:collector")
    assert entry.actor == "ops" and f"suggestion {s.pk}" in entry.message

    execute_run(request_run(worker).pk)
    reverted = staff_client.post(f"/api/v1/suggestions/{s.pk}/revert")
    assert reverted.status_code == 200, reverted.content
    assert reverted.json()["impact"]["after"]["runs_24h"] == 4
    worker.refresh_from_db()
    assert (worker.interval_seconds, worker.cron) == (300, "")
    assert worker.cadence_key.startswith("300|")


def test_a_cron_suggestion_replaces_an_interval(worker, staff_client: APIClient):
    s = worker_suggestion("set_cadence", cron="*/30 * * * *")
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/apply").status_code == 200
    worker.refresh_from_db()
    assert (worker.interval_seconds, worker.cron) == (None, "*/30 * * * *")


def test_a_cadence_the_worker_refuses_is_a_409_saying_why_and_changes_nothing(worker, staff_client: APIClient):
    s = worker_suggestion("set_cadence", interval_seconds=90)  # not whole minutes
    answer = staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert answer.status_code == 409 and "whole number of minutes" in answer.json()["detail"]
    s.refresh_from_db()
    worker.refresh_from_db()
    assert s.status == "approved" and not s.change and worker.interval_seconds == 300
    assert not LedgerEntry.objects.filter(event_type="routing.suggestion_applied").exists()


def test_a_cadence_revert_refuses_when_a_person_changed_it_since(worker, staff_client: APIClient):
    s = worker_suggestion("set_cadence", interval_seconds=900)
    staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert (
        staff_client.patch("/api/v1/workers/collector/", {"interval_seconds": 1800}, format="json").status_code == 200
    )
    answer = staff_client.post(f"/api/v1/suggestions/{s.pk}/revert")
    assert answer.status_code == 409 and "changed since" in answer.json()["detail"]
    worker.refresh_from_db()
    s.refresh_from_db()
    assert worker.interval_seconds == 1800 and s.status == "applied"


def test_a_switch_suggestion_disables_a_worker_and_revert_enables_it(worker, staff_client: APIClient):
    s = worker_suggestion("disable_worker")
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/apply").status_code == 200
    worker.refresh_from_db()
    assert worker.enabled is False and worker.next_due_at is None  # no more scheduled runs
    assert LedgerEntry.objects.get(event_type="worker.disabled").actor == "ops"
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/revert").status_code == 200
    worker.refresh_from_db()
    assert worker.enabled is True and worker.next_due_at is not None


def test_a_worker_switch_revert_refuses_when_a_person_switched_it_since(worker, staff_client: APIClient):
    s = worker_suggestion("disable_worker")
    staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert staff_client.post("/api/v1/workers/collector/enable").status_code == 200
    answer = staff_client.post(f"/api/v1/suggestions/{s.pk}/revert")
    assert answer.status_code == 409 and "changed since" in answer.json()["detail"]


def test_a_switch_suggestion_disables_a_service_unless_others_depend_on_it(service, staff_client: APIClient):
    s = suggestion(action="disable_service", kind="failing_service", subject="billing", status="approved")
    dependent = Service.objects.create(name="invoices", base_url="http://127.0.0.1:9")
    dependent.depends_on.add(service)
    refused = staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert refused.status_code == 409 and "invoices" in refused.json()["detail"]
    service.refresh_from_db()
    s.refresh_from_db()
    assert service.enabled is True and s.status == "approved"
    dependent.set_enabled(False, actor="someone")
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/apply").status_code == 200
    service.refresh_from_db()
    assert service.enabled is False
    assert LedgerEntry.objects.filter(event_type="health.service_disabled", actor="ops").exists()
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/revert").status_code == 200
    service.refresh_from_db()
    assert service.enabled is True


def test_a_suggestion_about_a_worker_that_is_gone_is_a_409(worker, staff_client: APIClient):
    s = worker_suggestion("disable_worker")
    worker.delete()
    answer = staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert answer.status_code == 409 and "does not exist" in answer.json()["detail"]


# --- the fleet's own findings -----------------------------------------------------------------------------
def test_the_fleet_suggests_switching_off_a_worker_that_never_succeeds_and_slowing_one_that_overlaps():
    from orchestration.fleet.adjustments import WorkerWindow, worker_findings

    rows = [
        WorkerWindow("broken", True, 300, finished=12, succeeded=0, skipped_lock_held=0),
        WorkerWindow("busy", True, 90 * 60, finished=5, succeeded=5, skipped_lock_held=6),
        WorkerWindow("fine", True, 300, finished=40, succeeded=39, skipped_lock_held=1),
        WorkerWindow("young", True, 300, finished=9, succeeded=0, skipped_lock_held=0),  # too little evidence
        WorkerWindow("off", False, 300, finished=12, succeeded=0, skipped_lock_held=0),  # already off
    ]
    found = worker_findings(rows, 24)
    assert [(f["subject"], f["action"]) for f in found] == [
        ("worker:broken", "disable_worker"),
        ("worker:busy", "set_cadence"),
    ]
    assert found[1]["evidence"]["interval_seconds"] == 3 * 60 * 60


def test_the_analysis_proposes_a_worker_change_that_a_person_applies(worker, staff_client: APIClient):
    from orchestration.fleet.models import WorkerRun

    WorkerRun.objects.bulk_create(
        WorkerRun(worker=worker, status="failed", success=False, completed_at=timezone.now()) for _ in range(10)
    )
    answer = staff_client.post("/api/v1/suggestions/analyze", {"time_window_hours": 24}, format="json")
    assert answer.status_code == 200, answer.content
    s = Suggestion.objects.get(subject="worker:collector")
    assert (s.kind, s.action, s.status, s.priority) == ("failing_worker", "disable_worker", "pending", "high")
    worker.refresh_from_db()
    assert worker.enabled is True  # proposed, never applied by the analysis
    staff_client.post("/api/v1/suggestions/analyze", {"time_window_hours": 24}, format="json")
    assert Suggestion.objects.filter(subject="worker:collector").count() == 1  # not proposed twice
    assert staff_client.post(f"/api/v1/suggestions/{s.pk}/approve", {}, format="json").status_code == 200
    applied = staff_client.post(f"/api/v1/suggestions/{s.pk}/apply")
    assert applied.status_code == 200, applied.content
    assert applied.json()["impact"]["before"]["success_rate"] == 0.0
    worker.refresh_from_db()
    assert worker.enabled is False
