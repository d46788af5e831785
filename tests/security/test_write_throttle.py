"""The write throttle (API_WRITE_RATE, per user): past the rate a write answers 429 with
Retry-After and writes nothing; reads and other users are not held up."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from orchestration.core.models import Job
from orchestrator_site.api.throttles import WriteRateThrottle

pytestmark = pytest.mark.django_db

RATE = 3


class Clock:
    """The throttle's clock, moved by the test instead of by waiting a minute."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(write_rate, monkeypatch) -> Clock:
    """Three writes a minute per user, on a clock the test moves. The throttle keeps
    its counts in the cache, which every test starts empty (tests/conftest.py)."""
    write_rate(f"{RATE}/min")
    clock = Clock()
    monkeypatch.setattr(WriteRateThrottle, "timer", clock)
    return clock


def _write(client: APIClient, n: int):
    return client.post("/api/v1/jobs/", {"kind": "noop", "payload": {"n": n}}, format="json")


def test_the_default_rate_is_600_writes_a_minute_per_user():
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["writes"] == "600/min"
    assert WriteRateThrottle().get_rate() == "600/min"  # what the throttle applies


def test_past_the_rate_a_write_is_refused_with_429_and_retry_after(clock, staff_client):
    statuses = [_write(staff_client, n).status_code for n in range(RATE)]
    assert statuses == [201] * RATE
    clock.now += 10
    refused = _write(staff_client, RATE)
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert "throttled" in refused.json()["detail"].lower()
    # The first write leaves the window 60 s after it was counted, 50 s from now.
    assert int(refused["Retry-After"]) == 50
    assert Job.objects.count() == RATE  # the refused write wrote nothing
    # Reads are not throttled.
    assert staff_client.get("/api/v1/jobs/").status_code == 200


def test_the_rate_is_per_user(clock, staff_client):
    for n in range(RATE):
        assert _write(staff_client, n).status_code == 201
    assert _write(staff_client, RATE).status_code == 429
    other = APIClient()
    other_user = get_user_model().objects.create_user("ops2", password="pw-ops2-123", is_staff=True)
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=other_user).key}")
    assert _write(other, 0).status_code == 201


def test_once_the_window_has_passed_writes_are_accepted_again(clock, staff_client):
    for n in range(RATE):
        assert _write(staff_client, n).status_code == 201
    assert _write(staff_client, RATE).status_code == 429
    clock.now += 61
    assert _write(staff_client, RATE + 1).status_code == 201
    assert Job.objects.count() == RATE + 1
