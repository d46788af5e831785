"""Admin polish of the control loop and queue: jobs added through the queue, links
between related objects, ledgered switches."""

from __future__ import annotations

import pytest
from django.test import Client

from orchestration.jobs.queue import enqueue
from orchestration.models import Action, Campaign, Job, LedgerEntry, Rule
from orchestration.models.ledger import record

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
    from orchestration.models import Lane

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
