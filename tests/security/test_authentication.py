"""Nobody reads or writes anything without signing in.

Every URL comes from Django's resolver (tests/security/routes.py): API endpoints answer
401 with a Bearer challenge to every method, the console's pages send people to the
sign-in page (their live JSON polls answer 401), the admin sends them to its own, and
the few public URLs are listed with the reason. Path parameters name objects that
exist (the ``world`` fixture), and unknown ids still answer 401, never 404: nobody
learns what exists without credentials.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.security.routes import PUBLIC, Route, all_routes, unnamed_routes, values_for

pytestmark = pytest.mark.django_db

ROUTES = all_routes()
API = [r for r in ROUTES if r.is_api and r.name not in PUBLIC]
CONSOLE = [r for r in ROUTES if not r.is_api and not r.is_admin and r.name not in PUBLIC]
ADMIN = [r for r in ROUTES if r.is_admin and r.name not in PUBLIC]


def send(client, method: str, path: str, **extra):
    return getattr(client, method.lower())(path, **extra)


# --- the inventory ---------------------------------------------------------------------------
def test_the_inventory_finds_every_kind_of_endpoint():
    """If the resolver walk broke, every test below would pass on an empty list."""
    names = {r.name for r in ROUTES}
    assert {"orchestrator:run-once", "health:trigger", "metrics", "console:summary", "schema"} <= names
    assert len(API) > 60 and len(CONSOLE) > 20 and len(ADMIN) > 50
    assert set(PUBLIC) <= names, "a public URL listed here no longer exists"
    # Every API write is reachable through a named route: the lists below cover them all.
    assert sum(len(r.writes) for r in API) > 40


# --- API: 401 before anything else ---------------------------------------------------------------
@pytest.mark.parametrize("with_objects", [True, False], ids=["existing", "unknown"])
@pytest.mark.parametrize("route", API, ids=str)
def test_api_endpoints_answer_401_to_anonymous(route: Route, with_objects: bool, request):
    world = request.getfixturevalue("world") if with_objects else None
    path = route.path(values_for(route, world))
    client = APIClient()
    for method in route.methods:
        response = send(client, method, path, data={}, format="json")
        assert response.status_code == 401, f"{method} {path}: {response.status_code}"
        assert response["WWW-Authenticate"].startswith("Bearer"), f"{method} {path}"
        if response["Content-Type"].startswith("application/json"):  # not the docs page, metrics, schema
            assert "detail" in response.json(), f"{method} {path}"


@pytest.mark.parametrize("route", API, ids=str)
def test_a_wrong_token_is_401_too(route: Route, db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer 0123456789abcdef0123456789abcdef01234567")
    path = route.path(values_for(route, None))
    for method in route.methods:
        assert send(client, method, path, data={}, format="json").status_code == 401, f"{method} {path}"


def test_nothing_is_written_by_anonymous_requests(world):
    from orchestration.core.models import Job, LedgerEntry

    before = (Job.objects.count(), LedgerEntry.objects.count())
    client = APIClient()
    for route in API:
        for method in route.writes:
            send(client, method, route.path(values_for(route, world)), data={"kind": "noop"}, format="json")
    assert (Job.objects.count(), LedgerEntry.objects.count()) == before


# --- console: sign in first ---------------------------------------------------------------------
@pytest.mark.parametrize("route", CONSOLE, ids=str)
def test_console_pages_send_anonymous_people_to_sign_in(route: Route, world):
    """GET and POST each either redirect to the sign-in page (coming back to this page
    afterwards) or are not allowed for that method at all; never a page or an action."""
    path = route.path(values_for(route, world))
    client = Client()
    redirected = 0
    for method in ("GET", "POST"):
        response = send(client, method, path)
        if response.status_code == 405:
            continue
        assert response.status_code == 302, f"{method} {path}: {response.status_code}"
        assert re.match(r"^/login/\?next=", response["Location"]), response["Location"]
        redirected += 1
    assert redirected, f"{path} answers neither GET nor POST"


@pytest.mark.parametrize("route", CONSOLE, ids=str)
def test_console_live_polls_answer_401_json(route: Route, world):
    """The pages' live refresh (?live=1) is JSON: a 401 the script understands, not a
    redirect to an HTML page. POST-only URLs do not answer GET at all."""
    response = Client().get(route.path(values_for(route, world)), {"live": "1"})
    if response.status_code != 405:
        assert response.status_code == 401 and response.json()["detail"], route


# --- admin -------------------------------------------------------------------------------------
ADMIN_VALUES = {"app_label": "orchestration", "object_id": 1, "content_type_id": 1, "id": 1}


@pytest.mark.parametrize("route", ADMIN, ids=str)
def test_admin_pages_send_anonymous_people_to_the_admin_sign_in(route: Route):
    path = route.path(ADMIN_VALUES)
    response = Client().get(path)
    assert response.status_code == 302, f"{path}: {response.status_code}"
    assert response["Location"].startswith("/admin/login/"), response["Location"]


@pytest.mark.parametrize("route", unnamed_routes(), ids=str)
def test_unnamed_admin_urls_send_anonymous_people_to_sign_in(route: str):
    assert route.startswith("admin/"), f"an unnamed URL outside the admin: {route}"
    path = "/" + re.sub(r"<path:\w+>", "1", route).replace("(?P<url>.*)$", "no-such-page/")
    response = Client().get(path)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), path


# --- the public few --------------------------------------------------------------------------------
def test_public_urls_answer_without_credentials():
    client = Client()
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/api/v1/healthz").json()["status"] == "ok"
    assert client.get("/login/").status_code == 200
    assert client.get("/admin/login/").status_code == 200
    # Anonymous (the health checker sends no credentials), but only while the demo is loaded.
    assert client.get("/demo/health/healthy").status_code == 404
    from health.demo import HealthDemo

    HealthDemo().load()
    assert client.get("/demo/health/healthy").status_code == 200
    assert client.get("/static/console/console.css").status_code == 200
    # Public, but not an open door: signing out is POST only.
    assert client.get("/logout/").status_code == 405


def test_public_api_views_disclose_nothing_but_liveness():
    body = Client().get("/api/v1/healthz").json()
    assert set(body) <= {"status", "service", "version"}


def test_the_schema_and_docs_need_credentials():
    for path in ("/api/schema/", "/api/docs/"):
        assert Client().get(path).status_code == 401, path
