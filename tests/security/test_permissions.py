"""Signed in is not enough to change anything: every write of the API and of the
console, by a user who is neither staff nor holds the specific permission, answers 403
and changes nothing. Reads stay open to every signed-in user."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.security.routes import PUBLIC, Route, all_routes, values_for
from tests.security.world import state

pytestmark = pytest.mark.django_db

ROUTES = all_routes()
API_WRITES = [(route, method) for route in ROUTES if route.is_api for method in route.writes]
API_READS = [r for r in ROUTES if r.is_api and "GET" in r.methods and r.name not in PUBLIC]
CONSOLE = [r for r in ROUTES if not r.is_api and not r.is_admin and r.name not in PUBLIC]


def test_the_lists_are_not_empty():
    assert len(API_WRITES) > 40 and len(CONSOLE) > 20 and len(API_READS) > 30


@pytest.mark.parametrize(("route", "method"), API_WRITES, ids=[f"{m} {r}" for r, m in API_WRITES])
def test_api_writes_by_a_non_staff_user_are_403(route: Route, method: str, user_client, world):
    path = route.path(values_for(route, world))
    before = state()
    body = {"kind": "noop", "stage": world.pipeline_job.stage, "slug": "x", "name": "x", "type": "render"}
    response = getattr(user_client, method.lower())(path, body, format="json")
    assert response.status_code == 403, f"{method} {path}: {response.status_code}"
    assert response.json()["detail"]
    assert state() == before


@pytest.mark.parametrize("route", CONSOLE, ids=str)
def test_console_actions_by_a_viewer_are_403(route: Route, viewer_session: Client, world):
    """A console URL is either a page (a viewer reads it; a POST to it changes nothing)
    or an action (POST only: a viewer gets 403 and nothing changes)."""
    path = route.path(values_for(route, world))
    before = state()
    form = {"stage": world.pipeline_job.stage, "decision": "approve", "slug": "x", "interval_seconds": "5"}
    page = viewer_session.get(path)
    response = viewer_session.post(path, form)
    if page.status_code == 405:
        assert response.status_code == 403, f"POST {path}: {response.status_code}"
        assert b"permission" in response.content
    else:
        assert page.status_code == 200, f"GET {path}: {page.status_code}"
    assert state() == before


@pytest.mark.parametrize("route", API_READS, ids=str)
def test_reads_are_open_to_any_signed_in_user(route: Route, user_client, world):
    response = user_client.get(route.path(values_for(route, world)))
    assert response.status_code == 200, f"GET {route}: {response.status_code}"


def test_the_specific_permission_opens_only_its_own_write(plain_user, user_client, world):
    """pipeline.approve_gate lets a reviewer approve a gate, and nothing else."""
    from django.contrib.auth.models import Permission

    plain_user.user_permissions.add(Permission.objects.get(codename="approve_gate", content_type__app_label="pipeline"))
    job = world.pipeline_job
    assert user_client.post(f"/api/v1/pipeline/jobs/{job.pk}/cancel", {}, format="json").status_code == 403
    assert user_client.post("/orchestrator/disable", {}, format="json").status_code == 403
    response = user_client.post(f"/api/v1/pipeline/jobs/{job.pk}/approve", {"stage": job.stage}, format="json")
    assert response.status_code == 200 and response.json()["stage"] != job.stage
