"""The health score explained: deductions as rows (API, admin), listed in the snapshot
with the values that made them apply, shown on the dashboard, and an outside outage
that lowers the score without failing queued work."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestration.core.choices import JobStatus
from orchestration.core.models import Job, LedgerEntry
from orchestration.loop.cycle import run_cycle
from orchestration.loop.models import Action, Rule, ScoreDeduction

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]

URL = "/api/v1/score-deductions/"


def test_the_seed_four_are_rows():
    rows = {d.name: d for d in ScoreDeduction.objects.filter(scope="queue")}
    assert {name: (d.points, d.enabled) for name, d in rows.items()} == {
        "queue-saturated": (20, True),
        "job-waiting-long": (15, True),
        "recent-failures": (10, True),
        "ledger-errors": (5, True),
    }
    assert rows["ledger-errors"].per_field == "ledger.errors_last_hour"
    assert all(d.builtin for d in rows.values())


def test_the_snapshot_lists_each_deduction_with_its_values(staff_client):
    Job.objects.bulk_create(Job(kind="noop") for _ in range(52))
    body = staff_client.get("/orchestrator/snapshot").json()
    system = body["snapshot"]["system"]
    assert system["health_score"] == 80 == 100 - sum(d["points"] for d in system["deductions"])
    (saturated,) = system["deductions"]
    assert saturated["reason"] == "Queue saturated: more than 50 jobs pending"
    assert saturated["points"] == 20 and saturated["values"] == {"jobs.pending": 52}


def test_a_person_switches_a_deduction_off_and_the_score_follows(staff_client, staff_user):
    Job.objects.bulk_create(Job(kind="noop") for _ in range(52))
    row = ScoreDeduction.objects.get(name="queue-saturated")
    response = staff_client.patch(f"{URL}{row.pk}/", {"enabled": False}, format="json")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert LedgerEntry.objects.filter(event_type="score_deduction.updated", actor=staff_user.username).exists()
    assert run_cycle(dry_run=True)["snapshot"]["system"]["health_score"] == 100


def test_a_deduction_is_created_with_a_rules_condition_shape(staff_client):
    body = {
        "name": "many-retries",
        "condition": [{"field": "jobs.retry", "op": ">", "value": 10}],
        "points": 7,
        "reason": "Many jobs retrying",
        "scope": "queue",
        "enabled": True,
    }
    response = staff_client.post(URL, body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["condition"] == body["condition"]
    Job.objects.bulk_create(Job(kind="noop", status=JobStatus.RETRY) for _ in range(11))
    system = run_cycle(dry_run=True)["snapshot"]["system"]
    assert {"name": "many-retries", "reason": "Many jobs retrying", "points": 7} | {
        "values": {"jobs.retry": 11},
        "scope": "queue",
    } in system["deductions"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"condition": [{"field": "jobs.pending", "op": "~", "value": 1}]}, "condition"),
        ({"condition": []}, "condition"),
        ({"condition": "jobs.pending > 1"}, "condition"),
        ({"points": 101}, "points"),
        ({"points": -1}, "points"),
        ({"scope": "weather"}, "scope"),
        ({"per_field": "jobs..pending"}, "per_field"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(staff_client, body, field):
    base = {
        "name": "x",
        "condition": [{"field": "jobs.pending", "op": ">", "value": 1}],
        "points": 5,
        "reason": "r",
    }
    response = staff_client.post(URL, {**base, **body}, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not ScoreDeduction.objects.filter(name="x").exists()


def test_readers_see_deductions_but_cannot_change_them(client_for_reader):
    assert client_for_reader.get(URL).status_code == 200
    row = ScoreDeduction.objects.first()
    assert client_for_reader.patch(f"{URL}{row.pk}/", {"enabled": False}, format="json").status_code == 403


@pytest.fixture
def client_for_reader(plain_user):
    from tests.conftest import _client_for

    return _client_for(plain_user)


def test_an_outside_outage_lowers_the_score_but_never_fails_queued_work():
    """The critical-health rule reads the queue's own score: a service deduction that
    takes the whole score to critical leaves old jobs alone."""
    now = timezone.now()
    ScoreDeduction.objects.create(
        name="big-outage",
        conditions=[{"field": "taken_at", "op": "!=", "value": ""}],  # always applies
        points=70,
        reason="An outside service is down",
        scope="services",
    )
    old = Job.objects.create(kind="noop", created_at=now - timedelta(hours=3))
    assert Rule.objects.get(name="critical-health").conditions[0]["field"] == "system.queue_health_score"
    result = run_cycle()
    system = result["snapshot"]["system"]
    assert system["health_score"] < 50 and system["queue_health_score"] >= 50
    old.refresh_from_db()
    assert old.status != JobStatus.FAILED
    assert "rebalance_queue" not in [a["type"] for a in result["decision"]["actions"] if a["params"].get("emergency")]


def test_a_critical_queue_still_triggers_the_emergency_rebalance():
    now = timezone.now()
    ScoreDeduction.objects.create(
        name="queue-trouble",
        conditions=[{"field": "jobs.very_old_pending", "op": ">", "value": 0}],
        points=60,
        reason="Jobs due for hours",
        scope="queue",
    )
    old = Job.objects.create(kind="noop", created_at=now - timedelta(hours=3))
    later = Job.objects.create(kind="noop", created_at=now - timedelta(hours=3), not_before=now + timedelta(hours=1))
    run_cycle()
    # Failing jobs is risky: it waits for a person, then runs in the next cycle.
    old.refresh_from_db()
    assert old.status == JobStatus.PENDING
    Action.objects.get(rule_name="critical-health", status="awaiting_approval").approve(actor="ops")
    run_cycle()
    old.refresh_from_db()
    later.refresh_from_db()
    assert old.status == JobStatus.FAILED and later.status == JobStatus.PENDING


def test_the_dashboard_explains_the_score(staff_session):
    Job.objects.bulk_create(Job(kind="noop") for _ in range(52))
    run_cycle(dry_run=True)
    page = staff_session.get("/").content.decode()
    assert 'data-deduction="queue-saturated"' in page
    assert "Score 80 = 100 − 20" in page and "jobs.pending = 52" in page


def test_the_admin_lists_and_switches_deductions(admin_client):
    response = admin_client.get("/admin/orchestration/scorededuction/")
    assert response.status_code == 200 and "queue-saturated" in response.content.decode()
    row = ScoreDeduction.objects.get(name="ledger-errors")
    response = admin_client.post(
        "/admin/orchestration/scorededuction/",
        {"action": "disable_deductions", "_selected_action": [row.pk]},
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert not row.enabled
    assert LedgerEntry.objects.filter(event_type="score_deduction.disabled", subject="score_deduction:ledger-errors")
