"""CSRF: a browser session cannot be used to write from another site.

Writes signed in by session (the console's forms, or the API called from a page) need
Django's CSRF token; without it they answer 403 and change nothing, with it they go
through. A Bearer token is not sent by browsers on their own, so token-authenticated
writes need no CSRF token.
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.security.routes import PUBLIC, Route, all_routes, values_for
from tests.security.world import state

pytestmark = pytest.mark.django_db

ROUTES = all_routes()
API_WRITES = [(route, method) for route in ROUTES if route.is_api for method in route.writes]
IDS = [f"{m} {r}" for r, m in API_WRITES]
CONSOLE = [r for r in ROUTES if not r.is_api and not r.is_admin and r.name not in PUBLIC]


@pytest.fixture
def csrf_session(staff_user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    return client


def csrf_token(client: Client) -> str:
    """The token a page hands the browser: the dashboard's forms carry it."""
    response = client.get("/")
    assert response.status_code == 200
    return response.cookies["csrftoken"].value


def body_for(route: Route, world) -> dict:
    return {"stage": world.pipeline_job.stage, "notes": "", "kind": "noop"} if route.name.endswith("approve") else {}


@pytest.mark.parametrize(("route", "method"), API_WRITES, ids=IDS)
def test_session_writes_without_a_token_are_refused(route: Route, method: str, csrf_session: Client, world):
    path = route.path(values_for(route, world))
    before = state()
    response = getattr(csrf_session, method.lower())(path, {}, content_type="application/json")
    assert response.status_code == 403, f"{method} {path}: {response.status_code}"
    assert "CSRF" in response.json()["detail"]
    assert state() == before


@pytest.mark.parametrize(("route", "method"), API_WRITES, ids=IDS)
def test_session_writes_with_the_token_go_through(route: Route, method: str, csrf_session: Client, world):
    """Past the CSRF check: the answer is the view's own (done, invalid input, conflict)."""
    token = csrf_token(csrf_session)
    path = route.path(values_for(route, world))
    response = getattr(csrf_session, method.lower())(
        path, body_for(route, world), content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code in {200, 201, 202, 204, 400, 409}, f"{method} {path}: {response.status_code}"


@pytest.mark.parametrize(("route", "method"), API_WRITES, ids=IDS)
def test_token_writes_need_no_csrf_token(route: Route, method: str, staff_token: str, world):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    path = route.path(values_for(route, world))
    response = getattr(client, method.lower())(path, body_for(route, world), format="json")
    assert response.status_code in {200, 201, 202, 204, 400, 409}, f"{method} {path}: {response.status_code}"


def test_a_token_write_without_csrf_really_writes(staff_token: str, world):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    response = client.post("/api/v1/lanes/", {"name": "csrf-free", "concurrency_limit": 1}, format="json")
    assert response.status_code == 201
    assert client.get("/api/v1/lanes/csrf-free").json()["concurrency_limit"] == 1


def test_a_session_write_with_the_token_really_writes(csrf_session: Client, world):
    token = csrf_token(csrf_session)
    response = csrf_session.post(
        "/api/v1/lanes/", {"name": "from-a-page", "concurrency_limit": 3}, "application/json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 201
    assert csrf_session.get("/api/v1/lanes/from-a-page").json()["concurrency_limit"] == 3


def test_a_token_from_another_session_is_refused(csrf_session: Client, plain_user, world):
    other = Client(enforce_csrf_checks=True)
    other.force_login(plain_user)
    foreign = csrf_token(other)
    response = csrf_session.post("/orchestrator/disable", {}, "application/json", HTTP_X_CSRFTOKEN=foreign)
    assert response.status_code == 403


@pytest.mark.parametrize("route", CONSOLE, ids=str)
def test_console_forms_need_the_token(route: Route, csrf_session: Client, world):
    """Every console action refuses a form without the token (403, nothing changed) and
    accepts the same form with it. Pages (GET) are not forms and are skipped."""
    path = route.path(values_for(route, world))
    if csrf_session.get(path).status_code != 405:
        return
    form = {"stage": world.pipeline_job.stage, "decision": "approve", "slug": "csrf-job", "interval_seconds": "5"}
    before = state()
    refused = csrf_session.post(path, form)
    assert refused.status_code == 403, f"POST {path}: {refused.status_code}"
    assert b"CSRF" in refused.content or b"csrf" in refused.content
    assert state() == before
    accepted = csrf_session.post(path, {**form, "csrfmiddlewaretoken": csrf_token(csrf_session)})
    assert accepted.status_code in {200, 302, 400, 409}, f"POST {path}: {accepted.status_code}"
