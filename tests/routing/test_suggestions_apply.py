"""Applying and reverting suggestions: only a person, only approved ones, through the
service's own write, with the metrics before and after kept."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from health.models import Service
from orchestration.core.models import LedgerEntry
from orchestration.routing import improvement
from orchestration.routing.models import Suggestion

pytestmark = pytest.mark.django_db


# --- pure -------------------------------------------------------------------------------------------
def test_the_plan_halves_a_slow_services_weight_and_drops_a_failing_capability():
    slow = improvement.planned_change("lower_weight", "billing:render", {"service": "billing"}, 2.0, ["render"])
    assert slow.as_dict() == {"service": "billing", "field": "weight", "before": 2.0, "after": 1.0}
    failing = improvement.planned_change(
        "remove_capability", "billing:render", {"service": "billing", "task_type": "render"}, 1.0, ["render", "ocr"]
    )
    assert (failing.field, failing.before, failing.after) == ("capabilities", ["render", "ocr"], ["ocr"])
    idle = improvement.planned_change("rebalance", "billing", {"service": "billing"}, 1.0, [])
    assert idle.after == 1.5


def test_a_suggestion_with_nothing_to_change_is_not_applicable():
    with pytest.raises(improvement.NotApplicable):
        improvement.planned_change("add_capacity", "render", {}, 1.0, [])
    with pytest.raises(improvement.NotApplicable, match="no longer lists"):
        improvement.planned_change("remove_capability", "billing:render", {}, 1.0, ["ocr"])


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
    assert body["change"] == {"service": "billing", "field": "weight", "before": 2.0, "after": 1.0}
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
