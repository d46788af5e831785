"""Escalation policies: tiers decided as plain data, then through the real database,
notification channels and the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from rest_framework.test import APIClient

from orchestration.core import escalation
from orchestration.core import escalation_rules as rules
from orchestration.core.anomalies import open_anomaly
from orchestration.core.models import Anomaly, Delivery, EscalationPolicy, LedgerEntry, NotificationChannel

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TIERS = [
    {"after_minutes": 30, "channels": ["managers"], "repeat_minutes": None},
    {"after_minutes": 5, "channels": ["oncall"], "repeat_minutes": 10},
]


# --- pure -----------------------------------------------------------------------------------------
def step_at(minutes: float, *, tier: int = 0, last: float | None = None, acknowledged: bool = False):
    tiers = rules.validate_tiers(TIERS)
    return rules.next_step(
        tiers,
        detected_at=T0,
        current_tier=tier,
        last_sent_at=None if last is None else T0 + timedelta(minutes=last),
        acknowledged=acknowledged,
        now=T0 + timedelta(minutes=minutes),
    )


def test_it_sorts_tiers_and_sends_the_first_after_its_minutes():
    assert step_at(4) is None
    assert step_at(5) == rules.Step(1, False, ["oncall"])


def test_it_repeats_a_tier_until_the_next_one_is_due():
    assert step_at(14, tier=1, last=5) is None
    assert step_at(15, tier=1, last=5) == rules.Step(1, True, ["oncall"])
    assert step_at(31, tier=1, last=25) == rules.Step(2, False, ["managers"])
    assert step_at(200, tier=2, last=31) is None  # the last tier asks for no reminders


def test_an_acknowledged_anomaly_escalates_no_further():
    assert step_at(60, tier=1, last=5, acknowledged=True) is None


@pytest.mark.parametrize(
    ("tiers", "problem"),
    [
        ([], "non-empty"),
        ([{"after_minutes": -1, "channels": []}], "after_minutes"),
        ([{"after_minutes": 5, "channels": "ops"}], "channels"),
        ([{"after_minutes": 5, "channels": [], "repeat_minutes": 0}], "repeat_minutes"),
        ([{"after_minutes": 5, "channels": [], "colour": "red"}], "unknown keys"),
        ([{"after_minutes": 5, "channels": []}, {"after_minutes": 5, "channels": []}], "same after_minutes"),
    ],
)
def test_bad_tiers_are_refused_saying_why(tiers, problem):
    with pytest.raises(rules.TierError, match=problem):
        rules.validate_tiers(tiers)


# --- through the database ---------------------------------------------------------------------------
@pytest.fixture
def policy(db):
    EscalationPolicy.objects.all().delete()
    NotificationChannel.objects.create(name="oncall", url="json://127.0.0.1:9/oncall")
    NotificationChannel.objects.create(name="managers", url="json://127.0.0.1:9/managers")
    return EscalationPolicy.objects.create(name="ops", severities=["critical", "high"], tiers=TIERS)


def test_the_seeded_policy_escalates_critical_and_high(db):
    seeded = EscalationPolicy.objects.get(name="critical-and-high")
    assert seeded.severities == ["critical", "high"] and seeded.tiers[0]["after_minutes"] == 10


def test_a_critical_anomaly_without_a_recovery_strategy_escalates_by_tiers(policy):
    anomaly, _ = open_anomaly("DATA_CORRUPTION", "worker:collector", {"corrupt_items": 3})
    start = anomaly.detected_at
    assert escalation.escalate_due(start + timedelta(minutes=4)) == []
    assert escalation.escalate_due(start + timedelta(minutes=5)) == [anomaly.pk]
    assert escalation.escalate_due(start + timedelta(minutes=6)) == []  # sent once
    anomaly.refresh_from_db()
    assert anomaly.escalation_tier == 1
    (sent,) = Delivery.objects.filter(event=f"anomaly:{anomaly.pk}:tier1")
    assert sent.channel.name == "oncall" and not sent.reminder
    escalation.escalate_due(start + timedelta(minutes=15))
    assert Delivery.objects.filter(event=f"anomaly:{anomaly.pk}:tier1", reminder=True).count() == 1
    escalation.escalate_due(start + timedelta(minutes=31))
    assert Delivery.objects.get(event=f"anomaly:{anomaly.pk}:tier2").channel.name == "managers"
    assert LedgerEntry.objects.filter(event_type="anomaly.escalated", subject="worker:collector").count() == 2


def test_a_medium_anomaly_is_not_covered(policy):
    anomaly, _ = open_anomaly("PARTIAL_SUCCESS", "worker:collector", {})
    assert escalation.escalate_due(anomaly.detected_at + timedelta(hours=2)) == []


def test_acknowledging_stops_escalation_and_names_who(policy, staff_client: APIClient):
    anomaly, _ = open_anomaly("RESOURCE_EXHAUSTION", "fleet", {"memory_percent": 95})
    answer = staff_client.post(f"/api/v1/anomalies/{anomaly.pk}/acknowledge", {"notes": "on it"}, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["acknowledged_by"] == "ops" and body["acknowledged_at"] and body["escalation_tier"] == 0
    assert escalation.escalate_due(anomaly.detected_at + timedelta(hours=1)) == []
    again = staff_client.post(f"/api/v1/anomalies/{anomaly.pk}/acknowledge", {}, format="json")
    assert again.status_code == 409
    resolved = staff_client.post(f"/api/v1/anomalies/{anomaly.pk}/resolve", {"notes": "freed memory"}, format="json")
    assert resolved.status_code == 200 and resolved.json()["resolved_by"] == "ops"
    assert staff_client.post(f"/api/v1/anomalies/{anomaly.pk}/resolve", {}, format="json").status_code == 409
    events = set(LedgerEntry.objects.filter(actor="ops").values_list("event_type", flat=True))
    assert {"anomaly.acknowledged", "anomaly.resolved"} <= events


def test_the_policies_api_refuses_bad_tiers_naming_the_field(policy, staff_client: APIClient):
    bad = staff_client.post(
        "/api/v1/escalation-policies/",
        {"name": "x", "severities": ["critical"], "tiers": [{"after_minutes": -5, "channels": []}]},
        format="json",
    )
    assert bad.status_code == 400 and "tiers" in bad.json()
    worse = staff_client.post(
        "/api/v1/escalation-policies/", {"name": "y", "severities": ["urgent"], "tiers": TIERS}, format="json"
    )
    assert worse.status_code == 400 and "severities" in worse.json()
    assert not EscalationPolicy.objects.filter(name__in=["x", "y"]).exists()
    good = staff_client.post(
        "/api/v1/escalation-policies/", {"name": "pages", "severities": ["high"], "tiers": TIERS}, format="json"
    )
    assert good.status_code == 201, good.content
    assert [t["after_minutes"] for t in good.json()["tiers"]] == [5, 30]


def test_the_console_acknowledges_and_resolves(policy, staff_session: Client):
    anomaly, _ = open_anomaly("SERVICE_DOWN", "service:billing", {})
    page = staff_session.get("/actions/")
    assert f"/anomalies/{anomaly.pk}/acknowledge" in page.content.decode()
    assert staff_session.post(f"/anomalies/{anomaly.pk}/acknowledge", {"notes": "looking"}).status_code == 302
    assert staff_session.post(f"/anomalies/{anomaly.pk}/resolve").status_code == 302
    anomaly.refresh_from_db()
    assert anomaly.acknowledged_by == "ops" and anomaly.resolved_by == "ops"
    assert Anomaly.objects.filter(pk=anomaly.pk, resolved_at__isnull=False).exists()


def test_the_first_escalation_marks_the_anomaly_escalated_and_later_tiers_keep_that_time(policy):
    anomaly, _ = open_anomaly("DATA_CORRUPTION", "worker:collector", {})
    start = anomaly.detected_at
    escalation.escalate_due(start + timedelta(minutes=5))
    anomaly.refresh_from_db()
    assert anomaly.escalated_at == start + timedelta(minutes=5)
    escalation.escalate_due(start + timedelta(minutes=31))
    anomaly.refresh_from_db()
    assert (anomaly.escalation_tier, anomaly.escalated_at) == (2, start + timedelta(minutes=5))


def test_an_anomaly_a_recovery_did_not_clear_escalates_whatever_its_severity(db):
    """The fleet's old escalation is a policy now: of every severity, after a recovery."""
    unrecovered = EscalationPolicy.objects.get(name="unrecovered")
    assert (unrecovered.severities, unrecovered.after_recovery) == ([], True)
    assert unrecovered.tiers == [{"after_minutes": 10, "channels": [], "repeat_minutes": None}]
    tried, _ = open_anomaly("PARTIAL_SUCCESS", "worker:collector", {})
    untried, _ = open_anomaly("CACHE_MISS", "worker:collector", {})
    Anomaly.objects.filter(pk=tried.pk).update(recovery_attempts=1, last_recovery_at=tried.detected_at)
    start = tried.detected_at
    assert escalation.escalate_due(start + timedelta(minutes=9)) == []
    assert escalation.escalate_due(start + timedelta(minutes=10)) == [tried.pk]
    assert escalation.escalate_due(start + timedelta(minutes=60)) == []  # once; the untried one never
    tried.refresh_from_db()
    untried.refresh_from_db()
    assert tried.escalated_at is not None and untried.escalated_at is None
    entry = LedgerEntry.objects.get(event_type="anomaly.escalated")
    assert entry.data["policy"] == "unrecovered" and entry.data["anomaly_id"] == tried.pk
    assert LedgerEntry.objects.filter(event_type="worker.alert", message__startswith="ESCALATED").count() == 1


def test_the_policies_api_shows_and_sets_after_recovery(policy, staff_client: APIClient):
    made = staff_client.post(
        "/api/v1/escalation-policies/",
        {"name": "after-fix", "severities": ["medium"], "after_recovery": True, "tiers": TIERS},
        format="json",
    )
    assert made.status_code == 201, made.content
    assert EscalationPolicy.objects.get(name="after-fix").after_recovery is True
    bad = staff_client.patch(f"/api/v1/escalation-policies/{made.json()['id']}/", {"after_recovery": "maybe"})
    assert bad.status_code == 400 and "after_recovery" in bad.json()
