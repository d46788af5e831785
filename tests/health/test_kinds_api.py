"""Check kinds and heartbeats through the API, the ping URLs and the sweep."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from django.utils import timezone

from health.models import HealthCheck, Service
from health.sweep import check_services
from tests.health.probe_servers import tcp_listener

pytestmark = pytest.mark.django_db

BASE = "/api/v1/services/"


def test_it_creates_a_tcp_service_without_a_base_url_and_checks_it(staff_client):
    with tcp_listener() as port:
        response = staff_client.post(
            BASE, {"name": "db", "kind": "tcp", "check": {"host": "127.0.0.1", "port": port}}, format="json"
        )
        assert response.status_code == 201, response.json()
        assert response.json()["check"] == {"host": "127.0.0.1", "port": port}
        sweep = check_services()
    assert sweep.checked == ["db"] and not sweep.failed
    assert Service.objects.get(name="db").health == "healthy"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"kind": "tcp", "check": {"host": "127.0.0.1"}}, {"check": {"port": ["is required"]}}),
        ({"kind": "dns", "check": {"name": "x.test", "record_type": "ZZ"}}, {"check": {"record_type": [None]}}),
        ({"kind": "http", "check": {"method": "GET"}}, {"base_url": ["Required for HTTP checks."]}),
        ({"kind": "smoke", "check": {}}, {"kind": [None]}),
        ({"kind": "tcp", "check": ["host"]}, {"check": ["An object of the kind's settings."]}),
    ],
)
def test_bad_check_settings_are_a_400_naming_the_field_and_nothing_is_written(staff_client, body, errors):
    response = staff_client.post(BASE, {"name": "bad", **body}, format="json")
    assert response.status_code == 400
    data = response.json()
    for key, expected in errors.items():
        assert key in data
        if isinstance(expected, dict):
            for sub, messages in expected.items():
                assert sub in data[key]
                if messages[0] is not None:
                    assert data[key][sub] == messages
        elif expected[0] is not None:
            assert data[key] == expected
    assert not Service.objects.filter(name="bad").exists()


def test_changing_the_kind_validates_the_settings_for_the_new_kind(staff_client):
    staff_client.post(BASE, {"name": "web", "base_url": "http://127.0.0.1:9"}, format="json")
    response = staff_client.patch(BASE + "web/", {"kind": "tls"}, format="json")
    assert response.status_code == 400 and "host" in response.json()["check"]
    assert Service.objects.get(name="web").kind == "http"


def heartbeat(staff_client, **check) -> dict:
    response = staff_client.post(
        BASE,
        {"name": "nightly", "kind": "heartbeat", "check": {"period_seconds": 3600, "grace_seconds": 60, **check}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_heartbeat_has_a_secret_ping_url_that_anyone_with_it_can_ping(staff_client, anon_client):
    body = heartbeat(staff_client)
    path = urlsplit(body["ping_url"]).path
    assert path.startswith("/ping/") and len(path) == len("/ping/") + 36
    assert anon_client.get(path).status_code == 200
    assert anon_client.post(path + "/start").status_code == 200
    service = Service.objects.get(name="nightly")
    assert service.last_ping_kind == "success" and service.last_start_at >= service.last_ping_at
    assert anon_client.get("/ping/00000000-0000-4000-8000-000000000000").status_code == 404


def test_pings_drive_the_heartbeat_up_down_and_late(staff_client, anon_client):
    path = urlsplit(heartbeat(staff_client)["ping_url"]).path
    anon_client.get(path)
    assert Service.objects.get(name="nightly").next_check_at is None  # judged on the next tick
    check_services()
    assert Service.objects.get(name="nightly").health == "healthy"

    anon_client.post(path + "/fail")
    check_services()
    service = Service.objects.get(name="nightly")
    assert service.health == "unhealthy" and service.last_error.startswith("the job reported failure at")

    anon_client.get(path)
    check_services()
    assert Service.objects.get(name="nightly").health == "healthy"
    with time_machine.travel(timezone.now() + timedelta(seconds=3600 + 61)):
        check_services()
    service = Service.objects.get(name="nightly")
    assert service.health == "unhealthy" and service.last_error.startswith("late: last ping at")
    assert HealthCheck.objects.filter(service=service).count() == 4


def test_a_disabled_heartbeat_ignores_pings(staff_client, anon_client):
    path = urlsplit(heartbeat(staff_client)["ping_url"]).path
    staff_client.post(BASE + "nightly/disable")
    assert anon_client.get(path).status_code == 404
    assert Service.objects.get(name="nightly").last_ping_at is None


def test_a_cron_heartbeat_is_accepted_with_its_zone(staff_client):
    body = heartbeat(staff_client, period_seconds=None, cron="0 3 * * *", timezone="Europe/Paris")
    assert body["check"] == {"cron": "0 3 * * *", "timezone": "Europe/Paris", "grace_seconds": 60}
