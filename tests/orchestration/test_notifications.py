"""Notification channels through Apprise, against a receiver on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from orchestration.core import alerts, anomalies, notifications
from orchestration.core.models import Delivery, DeliveryAttempt, LedgerEntry, NotificationChannel
from orchestration.core.notifications import backoff_seconds, routes_to
from tests.health.probe_servers import Scripted, http_server

pytestmark = pytest.mark.django_db

BASE = "/api/v1/channels/"


def json_url(base: str, secret: str = "s3cr3t") -> str:
    return base.replace("http://", f"json://bot:{secret}@") + "/hook"


def bodies(script: Scripted) -> list[dict]:
    return [h for _, h in script.seen]


# --- pure -------------------------------------------------------------------------------
def test_routes_match_by_severity_and_tags_and_empty_filters_take_all():
    assert routes_to([], [], "low", [])
    assert routes_to(["critical"], [], "critical", ["db"])
    assert not routes_to(["critical"], [], "high", [])
    assert routes_to([], ["db", "web"], "high", ["db"])
    assert not routes_to([], ["db"], "high", ["cache"])


def test_backoff_doubles_up_to_a_cap():
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff_seconds(20) == 3600


# --- the API ----------------------------------------------------------------------------
def test_a_channel_url_is_answered_masked_and_never_reaches_the_ledger(staff_client):
    url = "json://bot:s3cr3t@127.0.0.1:9/hook"
    response = staff_client.post(BASE, {"name": "ops", "url": url, "severities": ["critical"]}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "s3cr3t" not in json.dumps(body) and body["url"].startswith("json://***@127.0.0.1:9/hook")
    assert NotificationChannel.objects.get(name="ops").url == url
    assert not any("s3cr3t" in json.dumps(e.data) + e.message for e in LedgerEntry.objects.all())
    # Writing back what was read keeps the stored credential.
    again = staff_client.put(BASE + f"{body['id']}/", {**body, "enabled": False}, format="json")
    assert again.status_code == 200 and NotificationChannel.objects.get(name="ops").url == url


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "carrier-pigeon://coop"}, "url"),
        ({"url": "json://127.0.0.1/x", "severities": ["urgent"]}, "severities"),
        ({"url": "json://169.254.169.254/latest"}, "url"),
    ],
)
def test_bad_channels_are_a_400_naming_the_field(staff_client, body, field):
    response = staff_client.post(BASE, {"name": "bad", **body}, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not NotificationChannel.objects.exists()


def test_channels_need_credentials_and_staff(anon_client, user_client):
    assert anon_client.get(BASE).status_code == 401
    assert user_client.post(BASE, {"name": "x", "url": "json://127.0.0.1/x"}, format="json").status_code == 403


def test_send_test_reaches_the_receiver_and_is_recorded(staff_client):
    script = Scripted()
    with http_server(script) as base:
        channel = NotificationChannel.objects.create(name="ops", url=json_url(base))
        response = staff_client.post(BASE + f"{channel.pk}/test")
    assert response.status_code == 200
    assert response.json()["status"] == "sent" and response.json()["attempt_log"][0]["ok"] is True
    method, headers = script.seen[0]
    assert method == "POST" and headers["Authorization"].startswith("Basic ")
    listed = staff_client.get(BASE + f"{channel.pk}/deliveries/").json()
    assert [d["event"] for d in listed["results"]] == ["test"]
    assert LedgerEntry.objects.filter(event_type="notification.test_sent", actor="ops").exists()


def test_a_failing_receiver_is_retried_with_backoff_then_given_up(settings):
    script = Scripted(status=500)
    with http_server(script) as base:
        NotificationChannel.objects.create(name="ops", url=json_url(base))
        (delivery,) = notifications.notify("anomaly:1", "critical", "db down")
        now = timezone.now()
        assert notifications.deliver_due(now) == {"sent": 0, "failed": 1}
        delivery.refresh_from_db()
        assert delivery.status == "pending" and delivery.attempts == 1
        assert delivery.next_attempt_at == now + timedelta(seconds=30)
        assert "s3cr3t" not in delivery.last_error and delivery.last_error
        assert notifications.deliver_due(now + timedelta(seconds=10)) == {"sent": 0, "failed": 0}  # not yet
        later = now
        for _ in range(notifications.MAX_ATTEMPTS - 1):
            later += timedelta(hours=2)
            notifications.deliver_due(later)
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == notifications.MAX_ATTEMPTS
    assert DeliveryAttempt.objects.filter(delivery=delivery, ok=False).count() == notifications.MAX_ATTEMPTS
    assert len(script.seen) == notifications.MAX_ATTEMPTS


def test_two_senders_never_both_claim_a_delivery():
    NotificationChannel.objects.create(name="ops", url="json://127.0.0.1:9/x")
    (delivery,) = notifications.notify("e", "high", "t")
    now = timezone.now()
    first, second = Delivery.objects.get(pk=delivery.pk), Delivery.objects.get(pk=delivery.pk)
    assert notifications.claim(first, now) is True
    assert notifications.claim(second, now) is False


def test_an_anomaly_reaches_the_channels_its_route_takes_and_reminders_repeat_it():
    seen, other = Scripted(), Scripted()
    with http_server(seen) as base, http_server(other) as base2:
        NotificationChannel.objects.create(name="db-team", url=json_url(base), tags=["db"], remind_every_minutes=30)
        NotificationChannel.objects.create(name="web-team", url=json_url(base2), tags=["web"])
        anomalies.open_anomaly("SERVICE_DOWN", "service:pg", {"service": "pg", "error": "refused", "tags": ["db"]})
        now = timezone.now()
        alerts.deliver_due(now + timedelta(minutes=20))
        assert len(seen.seen) == 1 and other.seen == []
        alerts.deliver_due(now + timedelta(minutes=25))
        assert len(seen.seen) == 1  # reminder not due: under 30 min since the notification
        alerts.deliver_due(now + timedelta(minutes=31))
    assert len(seen.seen) == 2
    assert Delivery.objects.filter(channel__name="db-team", reminder=True, status="sent").count() == 1
