"""Guardrails on the loop's own actions, through real cycles and the real database:
risky actions wait for a person, hourly limits, loop protection, and the later check of
whether an action helped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from orchestration.core import alerts
from orchestration.core.choices import ActionStatus, JobStatus
from orchestration.core.models import Anomaly, Delivery, Job, LedgerEntry, NotificationChannel
from orchestration.loop.cycle import run_cycle
from orchestration.loop.models import Action, GuardrailCounter, Rule

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]

ALWAYS = [{"field": "jobs.pending", "op": ">=", "value": 0}]


@pytest.fixture(autouse=True)
def only_our_rules():
    Rule.objects.update(enabled=False)


def emergency_rule(**fields) -> Rule:
    return Rule.objects.create(
        name="emergency",
        conditions=[{"field": "jobs.very_old_pending", "op": ">", "value": 0}],
        action_type="rebalance_queue",
        action_params={"emergency": True},
        priority=10,
        **fields,
    )


def overdue_job() -> Job:
    return Job.objects.create(kind="noop", created_at=timezone.now() - timedelta(hours=3))


def alert_rule(name: str = "alert", conditions=None, **fields) -> Rule:
    return Rule.objects.create(
        name=name, conditions=conditions or ALWAYS, action_type="ledger_alert", loop_limit=0, **fields
    )


# --- risk tiers -----------------------------------------------------------------------------------
def test_the_seeded_emergency_rule_waits_for_approval_and_others_run_on_their_own():
    assert Rule.objects.get(name="critical-health").mode == "approval"
    assert Rule.objects.get(name="recent-failures").mode == "automatic"


def test_it_makes_a_risky_action_wait_for_a_person_without_touching_the_jobs():
    rule = emergency_rule()
    assert rule.mode == "approval"  # nobody chose: the action's risk decides
    NotificationChannel.objects.create(name="ops", url="json://127.0.0.1:9/ops")
    job = overdue_job()
    run_cycle()
    run_cycle()  # asked once: the second cycle does not ask again while it waits
    (pending,) = Action.objects.filter(rule=rule)
    assert pending.status == ActionStatus.AWAITING_APPROVAL
    assert pending.expires_at is not None
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert LedgerEntry.objects.filter(event_type="action.awaiting_approval").count() == 1
    (asked,) = Delivery.objects.filter(event=f"action:{pending.pk}")
    assert asked.title.startswith("Approval needed: rebalance_queue")


def test_an_approved_action_runs_in_the_next_cycle_and_names_who_approved(staff_client: APIClient):
    rule = emergency_rule()
    job = overdue_job()
    run_cycle()
    pending = Action.objects.get(rule=rule)
    answer = staff_client.post(f"/api/v1/actions/{pending.pk}/approve", {"notes": "queue is stuck"}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == "approved"
    assert answer.json()["decided_by"] == "ops"
    assert LedgerEntry.objects.filter(event_type="action.approved", actor="ops").exists()
    again = staff_client.post(f"/api/v1/actions/{pending.pk}/approve", {}, format="json")
    assert again.status_code == 409
    run_cycle()
    pending.refresh_from_db()
    job.refresh_from_db()
    assert pending.status == ActionStatus.SUCCEEDED
    assert pending.executed_at is not None
    assert job.status == JobStatus.FAILED
    executed = LedgerEntry.objects.filter(event_type="orchestrator.action_executed").latest("id")
    assert "approved by ops" in executed.message


def test_a_rejected_action_never_runs_and_a_timeout_expires_the_request(staff_client: APIClient, settings):
    rule = emergency_rule()
    job = overdue_job()
    run_cycle()
    first = Action.objects.get(rule=rule)
    answer = staff_client.post(f"/api/v1/actions/{first.pk}/reject", {"notes": "not now"}, format="json")
    assert answer.status_code == 200 and answer.json()["status"] == "rejected"
    run_cycle()  # asks again (the rejection was for that request), and still fails nothing
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    second = Action.objects.filter(rule=rule, status=ActionStatus.AWAITING_APPROVAL).get()
    Action.objects.filter(pk=second.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    run_cycle()
    second.refresh_from_db()
    assert second.status == ActionStatus.EXPIRED
    late = staff_client.post(f"/api/v1/actions/{second.pk}/approve", {}, format="json")
    assert late.status_code == 409
    assert LedgerEntry.objects.filter(event_type="action.expired").exists()


def test_bad_notes_are_a_400_naming_the_field(staff_client: APIClient):
    emergency_rule()
    overdue_job()
    run_cycle()
    pending = Action.objects.get(rule__name="emergency")
    answer = staff_client.post(f"/api/v1/actions/{pending.pk}/approve", {"notes": "x" * 3000}, format="json")
    assert answer.status_code == 400 and "notes" in answer.json()
    pending.refresh_from_db()
    assert pending.status == ActionStatus.AWAITING_APPROVAL


def test_a_person_may_let_a_risky_rule_run_on_its_own(staff_client: APIClient):
    rule = emergency_rule()
    job = overdue_job()
    answer = staff_client.patch(f"/api/v1/rules/{rule.pk}/", {"mode": "automatic"}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["mode"] == "automatic" and answer.json()["risky"] is True
    changed = LedgerEntry.objects.get(event_type="rule.mode_changed")
    assert changed.actor == "ops" and "risky" in changed.message
    run_cycle()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    bad = staff_client.patch(f"/api/v1/rules/{rule.pk}/", {"mode": "sometimes"}, format="json")
    assert bad.status_code == 400 and "mode" in bad.json()


# --- hourly limit and loop protection --------------------------------------------------------------
def test_the_hourly_limit_holds_back_further_runs_and_says_so_once():
    rule = alert_rule(max_per_hour=2)
    for _ in range(5):
        run_cycle()
    statuses = list(Action.objects.filter(rule=rule).order_by("id").values_list("status", flat=True))
    assert statuses == ["succeeded", "succeeded", "rate_limited"]
    counter = GuardrailCounter.objects.get(automation="rule:alert")
    assert (counter.runs, counter.attempts) == (2, 5)
    assert LedgerEntry.objects.filter(event_type="guardrail.rate_limited").count() == 1


def test_loop_protection_pauses_raises_an_anomaly_alerts_and_a_person_resumes(staff_session: Client):
    rule = alert_rule(max_per_hour=1)
    Rule.objects.filter(pk=rule.pk).update(loop_limit=3)
    for _ in range(5):
        run_cycle()
    counter = GuardrailCounter.objects.get(automation="rule:alert")
    assert counter.paused_at is not None
    assert list(Action.objects.filter(rule=rule).order_by("id").values_list("status", flat=True)) == [
        "succeeded",
        "rate_limited",
        "paused",
    ]
    anomaly = Anomaly.objects.get(code="REMEDIATION_LOOP", resolved_at__isnull=True)
    assert anomaly.severity == "high" and "rule:alert" in anomaly.subject
    # A high anomaly is alerted five minutes on, like every high one.
    assert alerts.deliver_due(timezone.now() + timedelta(minutes=6)) == 1
    assert LedgerEntry.objects.filter(event_type="worker.alert", subject=anomaly.subject).exists()

    answer = staff_session.post(f"/actions/guardrails/{counter.pk}/resume")
    assert answer.status_code == 302
    counter.refresh_from_db()
    anomaly.refresh_from_db()
    assert counter.paused_at is None and counter.attempts == 0
    assert anomaly.resolved_at is not None
    assert LedgerEntry.objects.filter(event_type="guardrail.resumed", actor="ops").exists()
    run_cycle()
    assert Action.objects.filter(rule=rule).latest("id").status == "succeeded"


def test_the_api_lists_paused_automations_and_a_person_resumes_one(staff_client: APIClient, user_client):
    rule = alert_rule(max_per_hour=1)
    Rule.objects.filter(pk=rule.pk).update(loop_limit=2)
    for _ in range(4):
        run_cycle()
    held = GuardrailCounter.objects.create(automation="rule:other", target="queue", attempts=2, runs=1)

    paused = user_client.get("/api/v1/guardrails/?paused=true").json()["results"]
    assert [(row["automation"], row["target"], row["paused"]) for row in paused] == [("rule:alert", "queue", True)]
    assert paused[0]["paused_at"] and "remediation loop" in paused[0]["reason"]
    assert {row["id"] for row in user_client.get("/api/v1/guardrails/").json()["results"]} >= {held.pk}
    pk = paused[0]["id"]
    assert user_client.post(f"/api/v1/guardrails/{pk}/resume").status_code == 403  # readers may not

    answer = staff_client.post(f"/api/v1/guardrails/{pk}/resume")
    assert answer.status_code == 200
    assert (answer.json()["paused"], answer.json()["paused_at"], answer.json()["attempts"]) == (False, None, 0)
    assert LedgerEntry.objects.filter(event_type="guardrail.resumed", actor="ops").count() == 1
    assert Anomaly.objects.get(code="REMEDIATION_LOOP").resolved_at is not None
    again = staff_client.post(f"/api/v1/guardrails/{pk}/resume")
    assert again.status_code == 409 and "not paused" in again.json()["detail"]
    assert staff_client.post(f"/api/v1/guardrails/{held.pk}/resume").status_code == 409
    assert LedgerEntry.objects.filter(event_type="guardrail.resumed").count() == 1
    assert staff_client.get("/api/v1/guardrails/?paused=true").json()["results"] == []


# --- verification ---------------------------------------------------------------------------------
def test_a_later_cycle_records_whether_the_action_helped(settings, staff_client: APIClient):
    settings.ORCHESTRATOR_VERIFY_AFTER_SECONDS = 0
    cleared = alert_rule("cleared", [{"field": "jobs.pending", "op": ">", "value": 0}], cooldown_seconds=3600)
    stuck = alert_rule("stuck", ALWAYS, cooldown_seconds=3600)
    job = Job.objects.create(kind="noop")
    run_cycle()
    Job.objects.filter(pk=job.pk).update(status=JobStatus.COMPLETED, finished_at=timezone.now())
    run_cycle()
    helped = Action.objects.get(rule=cleared)
    did_not = Action.objects.get(rule=stuck)
    assert (helped.effective, did_not.effective) == (True, False)
    assert "jobs.pending=0" in helped.verification
    assert LedgerEntry.objects.filter(event_type="orchestrator.action_verified").count() == 2
    rules = {r["name"]: r for r in staff_client.get("/api/v1/rules/?page_size=100").json()["results"]}
    assert rules["cleared"]["effectiveness"] == {"verified": 1, "effective": 1, "rate": 1.0}
    assert rules["stuck"]["effectiveness"]["rate"] == 0.0
    actions = staff_client.get(f"/api/v1/actions/{helped.pk}/").json()
    assert actions["effective"] is True


def test_the_console_lists_pending_actions_and_decides_them(staff_session: Client):
    rule = emergency_rule()
    overdue_job()
    run_cycle()
    pending = Action.objects.get(rule=rule)
    page = staff_session.get("/actions/")
    assert page.status_code == 200 and f"/actions/{pending.pk}/decide" in page.content.decode()
    answer = staff_session.post(f"/actions/{pending.pk}/decide", {"decision": "reject", "notes": "no"})
    assert answer.status_code == 302
    pending.refresh_from_db()
    assert pending.status == ActionStatus.REJECTED and pending.decided_by == "ops"
