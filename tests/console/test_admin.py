"""Admin polish of the control loop and queue: jobs added through the queue, links
between related objects, ledgered switches."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from orchestration.core.jobs.queue import enqueue
from orchestration.core.models import Campaign, Job, LedgerEntry
from orchestration.core.models.ledger import record
from orchestration.loop.models import Action, Rule

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(db) -> Client:
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@localhost", "pw-root-123"))
    return client


def test_adding_a_job_in_the_admin_queues_it(admin_browser, broker_only):
    response = admin_browser.post(
        "/admin/orchestration/job/add/",
        {
            "kind": "noop",
            "payload": "{}",
            "priority": "high",
            "lane": "default",
            "max_attempts": "3",
            "backoff": "exponential",
            "channel": "",
            "reference": "from-admin",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = Job.objects.get(reference="from-admin")
    assert (job.kind, job.priority, job.status) == ("noop", "high", "pending")
    assert LedgerEntry.objects.filter(event_type="job.created", actor="root", subject=f"job:{job.pk}").exists()


def test_a_bad_job_is_refused_with_the_error_by_the_field(admin_browser):
    response = admin_browser.post(
        "/admin/orchestration/job/add/",
        {"kind": "noop", "payload": "[1, 2]", "priority": "normal", "lane": "default", "max_attempts": "3",
         "backoff": "exponential"},
    )  # fmt: skip
    assert response.status_code == 200
    assert "payload must be a JSON object" in response.content.decode()
    assert not Job.objects.exists()


def test_ledger_subjects_and_action_rules_link_to_their_pages(admin_browser):
    record("health.circuit_opened", "opened", subject="service:api")
    record("worker.run_failed", "failed", subject="worker:collector")
    html = admin_browser.get("/admin/orchestration/ledgerentry/").content.decode()
    assert '<a href="/services/api/">service:api</a>' in html
    assert '<a href="/workers/collector/">worker:collector</a>' in html
    rule = Rule.objects.first()
    Action.objects.create(cycle=1, rule=rule, rule_name=rule.name, action_type=rule.action_type, status="succeeded")
    actions = admin_browser.get("/admin/orchestration/action/").content.decode()
    assert f"/admin/orchestration/rule/{rule.pk}/change/" in actions
    rules = admin_browser.get("/admin/orchestration/rule/").content.decode()
    assert f"/admin/orchestration/action/?rule_name={rule.name}" in rules
    assert admin_browser.get(f"/admin/orchestration/action/?rule_name={rule.name}").status_code == 200


def test_campaigns_and_lanes_link_to_their_jobs(admin_browser, broker_only):
    campaign = Campaign.objects.create(name="spring", budget=10)
    enqueue("noop", {}, campaign=campaign, lane="fast")
    html = admin_browser.get("/admin/orchestration/campaign/").content.decode()
    assert f"/admin/orchestration/job/?campaign={campaign.pk}" in html
    filtered = admin_browser.get(f"/admin/orchestration/job/?campaign={campaign.pk}")
    assert filtered.status_code == 200 and "1 job" in filtered.content.decode()
    from orchestration.core.models import Lane

    Lane.objects.create(name="fast", concurrency_limit=2)
    lanes = admin_browser.get("/admin/orchestration/lane/").content.decode()
    assert "1 pending/processing" in lanes


def test_rule_switches_are_ledgered(admin_browser):
    rule = Rule.objects.filter(enabled=True).first()
    response = admin_browser.post(
        "/admin/orchestration/rule/", {"action": "disable_rules", "_selected_action": [rule.pk]}
    )
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.enabled is False
    assert LedgerEntry.objects.filter(event_type="rule.disabled", subject=f"rule:{rule.name}", actor="root").exists()


def test_routing_stats_link_to_services_and_their_outcome_history(admin_browser):
    from orchestration.routing.executor import remember

    for ok in (True, True, False):
        remember(task_type="research", service="api", success=ok, execution_ms=120)
    html = admin_browser.get("/admin/routing/routestat/").content.decode()
    assert '<a href="/services/api/">api</a>' in html
    assert "66.7%" in html
    history = admin_browser.get("/admin/routing/taskoutcome/?task_type=research&service_name=api")
    assert history.status_code == 200 and "3 task outcomes" in history.content.decode()


def test_suggestion_analysis_runs_from_the_admin(admin_browser):
    page = admin_browser.get("/admin/routing/suggestion/").content.decode()
    assert "Analyse outcomes now" in page
    response = admin_browser.post("/admin/routing/suggestion/analyze/", {"time_window_hours": "12"}, follow=True)
    assert "Analysed 0 outcome(s) over 12 h" in response.content.decode()
    assert LedgerEntry.objects.filter(event_type="routing.analysis", actor="root").exists()
    bad = admin_browser.post("/admin/routing/suggestion/analyze/", {"time_window_hours": "0"}, follow=True)
    assert "Nothing analysed" in bad.content.decode()
    assert admin_browser.get("/admin/routing/suggestion/analyze/").status_code == 405


def test_suggestion_analysis_needs_the_change_permission(client, plain_user):
    from django.contrib.auth.models import Permission

    plain_user.is_staff = True
    plain_user.save()
    plain_user.user_permissions.add(Permission.objects.get(codename="view_suggestion"))
    client.force_login(plain_user)
    assert client.post("/admin/routing/suggestion/analyze/", {"time_window_hours": "1"}).status_code == 403
    assert not LedgerEntry.objects.filter(event_type="routing.analysis").exists()


def test_pending_actions_are_approved_and_rejected_from_the_admin_naming_who(admin_browser):
    waiting = [
        Action.objects.create(
            cycle=1,
            rule_name="emergency",
            action_type="rebalance_queue",
            status="awaiting_approval",
            expires_at=timezone.now() + timedelta(hours=1),
        )
        for _ in range(3)
    ]
    done = Action.objects.create(cycle=1, rule_name="emergency", action_type="rebalance_queue", status="succeeded")
    url = "/admin/orchestration/action/"
    approved = admin_browser.post(
        url, {"action": "approve_actions", "_selected_action": [waiting[0].pk, done.pk]}, follow=True
    )
    assert "1 action(s) approved." in approved.content.decode()
    assert "not awaiting approval" in approved.content.decode()  # the finished one is refused, saying why
    admin_browser.post(url, {"action": "reject_actions", "_selected_action": [waiting[1].pk]})
    statuses = {a.pk: (a.status, a.decided_by) for a in Action.objects.filter(pk__in=[w.pk for w in waiting])}
    assert statuses == {
        waiting[0].pk: ("approved", "root"),
        waiting[1].pk: ("rejected", "root"),
        waiting[2].pk: ("awaiting_approval", ""),
    }
    events = set(LedgerEntry.objects.filter(actor="root").values_list("event_type", flat=True))
    assert {"action.approved", "action.rejected"} <= events


def test_a_paused_automation_is_resumed_from_the_admin(admin_browser):
    from orchestration.loop.models import GuardrailCounter

    paused = GuardrailCounter.objects.create(automation="rule:x", target="queue", attempts=9, paused_at=timezone.now())
    running = GuardrailCounter.objects.create(automation="rule:y", target="queue", attempts=1)
    response = admin_browser.post(
        "/admin/orchestration/guardrailcounter/",
        {"action": "resume", "_selected_action": [paused.pk, running.pk]},
        follow=True,
    )
    assert "1 automation(s) resumed." in response.content.decode()
    paused.refresh_from_db()
    assert paused.paused_at is None
    assert LedgerEntry.objects.get(event_type="guardrail.resumed").actor == "root"
