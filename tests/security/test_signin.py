"""Sign-in: failed sign-ins are throttled and locked out per username and per address on
the console and admin logins (django-axes), each lockout is in the ledger, and Django's
four password validators are on."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.test import Client

from orchestration.core.models import LedgerEntry

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-and-right-password"


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.AXES_FAILURE_LIMIT = 3


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("boss", "boss@localhost", PASSWORD)


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_after_n_failures_even_the_right_password_is_refused_and_the_ledger_says_so(url, admin_user):
    client = Client(REMOTE_ADDR="192.0.2.10")
    for _ in range(2):
        assert client.post(url, {"username": "boss", "password": "wrong"}).status_code == 200  # the form again
    locked = client.post(url, {"username": "boss", "password": "wrong"})
    assert locked.status_code == 429 and "Sign-in locked" in locked.content.decode()
    right = client.post(url, {"username": "boss", "password": PASSWORD})
    assert right.status_code == 429 and not _signed_in(client)
    # Per username: another address is refused too.
    elsewhere = Client(REMOTE_ADDR="192.0.2.99")
    assert elsewhere.post(url, {"username": "boss", "password": PASSWORD}).status_code == 429
    assert not _signed_in(elsewhere)
    entry = LedgerEntry.objects.filter(event_type="auth.locked_out").order_by("id").first()
    assert entry is not None and entry.severity == "warning"
    assert entry.data["username"] == "boss" and entry.data["ip_address"] == "192.0.2.10"
    assert PASSWORD not in str(list(LedgerEntry.objects.values_list("message", "data")))


def test_an_address_guessing_many_usernames_is_locked_out(admin_user):
    client = Client(REMOTE_ADDR="192.0.2.20")
    for name in ("alice", "bob", "carol"):
        client.post("/login/", {"username": name, "password": "wrong"})
    assert client.post("/login/", {"username": "boss", "password": PASSWORD}).status_code == 429
    assert not _signed_in(client)
    assert LedgerEntry.objects.filter(event_type="auth.locked_out", data__ip_address="192.0.2.20").exists()


def test_a_success_before_the_limit_resets_the_count(admin_user):
    client = Client(REMOTE_ADDR="192.0.2.30")
    for _ in range(2):
        client.post("/login/", {"username": "boss", "password": "wrong"})
    assert client.post("/login/", {"username": "boss", "password": PASSWORD}).status_code == 302
    assert _signed_in(client)
    client.post("/logout/")
    for _ in range(2):
        client.post("/login/", {"username": "boss", "password": "wrong"})
    assert client.post("/login/", {"username": "boss", "password": PASSWORD}).status_code == 302
    assert not LedgerEntry.objects.filter(event_type="auth.locked_out").exists()


def test_tokens_and_sessions_do_not_go_through_the_lockout(admin_user, staff_client, staff_session):
    # A locked-out username says nothing about API tokens and signed-in sessions.
    client = Client(REMOTE_ADDR="192.0.2.40")
    for _ in range(3):
        client.post("/login/", {"username": "ops", "password": "wrong"})
    assert staff_client.get("/api/v1/jobs/").status_code == 200
    assert staff_session.get("/api/v1/jobs/").status_code == 200
    # The test client signs in with force_login(), or login() given a request (axes counts per request).
    assert Client().login(request=HttpRequest(), username="boss", password=PASSWORD) is True
    forced = Client()
    forced.force_login(admin_user)
    assert forced.get("/api/v1/jobs/").status_code == 200


@pytest.mark.parametrize("password", ["short1", "password123", "12345678901", "boss@localhost1"])
def test_weak_passwords_are_refused_by_the_four_validators(admin_user, password):
    with pytest.raises(ValidationError):
        validate_password(password, user=admin_user)


def test_a_strong_password_passes(admin_user):
    validate_password("tidal-ochre-lantern-93", user=admin_user)
