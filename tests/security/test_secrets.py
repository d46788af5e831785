"""No secret leaves through the API, the console or the logs.

A run that really uses secrets — an API token, user passwords, a worker whose HTTP
target sends ``Authorization`` and ``X-Api-Key`` headers, an ``http.request`` job with
an ``Authorization`` header, both executed against a local HTTP server — is followed by
a walk of every read endpoint (list and detail) and every console page; none of the
secrets (nor SECRET_KEY, nor password hashes) may appear in any answer or in any log
record of the whole run.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from orchestration.core.models import Job, LedgerEntry
from orchestration.fleet.models import Worker
from tests.security.routes import PUBLIC, all_routes, values_for

pytestmark = pytest.mark.django_db

WORKER_TOKEN = "worker-secret-7f3a9c"
WORKER_API_KEY = "apikey-5d1c88e2"
JOB_TOKEN = "job-secret-9b2e41"
MASK = "***"

ROUTES = all_routes()
READS = [r for r in ROUTES if r.is_api and "GET" in r.methods and r.name not in PUBLIC]
PAGES = [r for r in ROUTES if not r.is_api and not r.is_admin and r.name not in PUBLIC and r.name != "console:static"]


@pytest.fixture
def secret_run(staff_client: APIClient, staff_token: str, world, httpserver, django_capture_on_commit_callbacks):
    """Creates and runs what carries secrets, through the API; returns the secrets."""
    httpserver.expect_request("/collect").respond_with_json({"metrics": {"rows": 3}})
    httpserver.expect_request("/ping").respond_with_json({"ok": True})
    target = {
        "type": "http",
        "method": "POST",
        "url": httpserver.url_for("/collect"),
        "headers": {"Authorization": f"Bearer {WORKER_TOKEN}", "X-Api-Key": WORKER_API_KEY, "Accept": "text/json"},
    }
    worker = {"name": "secret-holder", "category": "collection", "interval_seconds": 600, "target": target}
    job = {
        "kind": "http.request",
        "payload": {"url": httpserver.url_for("/ping"), "headers": {"Authorization": f"Basic {JOB_TOKEN}"}},
    }
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.post("/api/v1/workers/", worker, format="json").status_code == 201
        assert staff_client.post("/api/v1/workers/secret-holder/trigger", format="json").status_code == 202
        assert staff_client.post("/api/v1/jobs/", job, format="json").status_code == 201
    # The secrets were really used: the HTTP server received them.
    seen = [dict(request.headers) for request, _response in httpserver.log]
    assert any(h.get("Authorization") == f"Bearer {WORKER_TOKEN}" for h in seen), seen
    assert any(h.get("Authorization") == f"Basic {JOB_TOKEN}" for h in seen), seen
    assert Job.objects.get(kind="http.request").status == "completed"
    users = get_user_model().objects.order_by("pk")
    return {
        "api token": staff_token,
        "SECRET_KEY": settings.SECRET_KEY,
        "staff password": "pw-ops-123",
        "viewer password": "pw-viewer-123",
        **{f"password hash of {u.username}": u.password for u in users},
        **{f"hash part of {u.username}": u.password.rsplit("$", 1)[-1] for u in users},
        "worker Authorization": WORKER_TOKEN,
        "worker X-Api-Key": WORKER_API_KEY,
        "job Authorization": JOB_TOKEN,
    }


def leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def test_no_secret_in_any_answer_or_log(secret_run, staff_client: APIClient, staff_session: Client, world, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = secret_run
    worker = Worker.objects.get(name="secret-holder")
    found: dict[str, list[str]] = {}
    for route in READS:
        values = values_for(route, world)
        if "name" in route.params and route.name.startswith("orchestration-api:worker"):
            values["name"] = worker.name
        path = route.path(values)
        for query in ({}, {"limit": 1000}) if not route.params else ({},):
            response = staff_client.get(path, query)
            assert response.status_code == 200, path
            body = response.content.decode()
            if bad := leaks(body, secrets):
                found[path] = bad
    for route in PAGES:
        values = values_for(route, world)
        if route.name.startswith("console:worker"):
            values["name"] = worker.name
        path = route.path(values)
        for query in ({}, {"live": "1"}):
            response = staff_session.get(path, query)
            if response.status_code == 405:
                continue
            assert response.status_code == 200, path
            if bad := leaks(response.content.decode(), secrets):
                found[f"{path}?{query}"] = bad
    assert not found, found
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {getattr(r, 'data', '')}" for r in caplog.records)
    assert caplog.records and not leaks(logged, secrets), leaks(logged, secrets)


def test_secret_headers_are_masked_not_dropped(secret_run, staff_client: APIClient):
    """The reader still sees which headers are sent, only not their values."""
    target = staff_client.get("/api/v1/workers/secret-holder").json()["target"]
    assert target["headers"] == {"Authorization": MASK, "X-Api-Key": MASK, "Accept": "text/json"}
    payload = staff_client.get("/api/v1/jobs/", {"kind": "http.request"}).json()["results"][0]["payload"]
    assert payload["headers"] == {"Authorization": MASK}
    created = LedgerEntry.objects.get(event_type="worker.created")
    assert created.data["target"]["headers"]["Authorization"] == MASK


def test_saving_what_was_read_keeps_the_stored_secret(secret_run, staff_client: APIClient, httpserver):
    """A client that GETs a worker and PUTs it back (masks included) must not replace
    the real header values with the mask."""
    current = staff_client.get("/api/v1/workers/secret-holder").json()
    writable = {k: current[k] for k in ("name", "category", "interval_seconds", "target", "description")}
    writable["description"] = "edited"
    assert staff_client.put("/api/v1/workers/secret-holder", writable, format="json").status_code == 200
    stored = Worker.objects.get(name="secret-holder").target["headers"]
    assert stored == {"Authorization": f"Bearer {WORKER_TOKEN}", "X-Api-Key": WORKER_API_KEY, "Accept": "text/json"}
    # A new value replaces it; a header left out is removed.
    writable["target"] = {**writable["target"], "headers": {"Authorization": "Bearer rotated"}}
    assert staff_client.put("/api/v1/workers/secret-holder", writable, format="json").status_code == 200
    assert Worker.objects.get(name="secret-holder").target["headers"] == {"Authorization": "Bearer rotated"}


def test_the_mask_is_not_accepted_as_a_new_secret(staff_client: APIClient, world):
    target = {"type": "http", "url": "http://127.0.0.1:9/x", "headers": {"Authorization": MASK}}
    body = {"name": "masked", "category": "collection", "interval_seconds": 600, "target": target}
    response = staff_client.post("/api/v1/workers/", body, format="json")
    assert response.status_code == 400 and "target" in response.json()


def test_ledger_data_never_stores_a_secret_header(staff_client: APIClient, world):
    payload = {"url": "http://127.0.0.1:9/", "headers": {"Authorization": "Bearer in-ledger-0c1d"}}
    assert staff_client.post("/api/v1/jobs/", {"kind": "http.request", "payload": payload}, format="json").status_code
    assert "in-ledger-0c1d" not in json.dumps(list(LedgerEntry.objects.values_list("data", flat=True)))


def test_admin_change_pages_mask_secret_headers_and_saving_keeps_them(secret_run, django_user_model):
    """A worker's target and a job's payload on their admin pages: the header names show,
    their secret values do not; saving the page unchanged keeps the stored secrets."""
    admin_user = django_user_model.objects.create_superuser("root-secrets", password="pw-root-123")
    browser = Client()
    browser.force_login(admin_user)
    worker, job = Worker.objects.get(name="secret-holder"), Job.objects.get(kind="http.request")
    for url in (f"/admin/orchestration/worker/{worker.pk}/change/", f"/admin/orchestration/job/{job.pk}/change/"):
        page = browser.get(url).content.decode()
        assert "Authorization" in page and MASK in page, url
        assert not leaks(page, secret_run), (url, leaks(page, secret_run))
    # Save the worker's form back as the page shows it (masked), changing only its description.
    form = browser.get(f"/admin/orchestration/worker/{worker.pk}/change/").context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    data.update(description="edited in admin", target=json.dumps(form.initial["target"]))
    data = {k: v for k, v in data.items() if v is not None and v is not False}
    response = browser.post(f"/admin/orchestration/worker/{worker.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    worker.refresh_from_db()
    assert worker.description == "edited in admin"
    assert worker.target["headers"] == {
        "Authorization": f"Bearer {WORKER_TOKEN}",
        "X-Api-Key": WORKER_API_KEY,
        "Accept": "text/json",
    }
    # The mask for a header that has no stored value is refused, next to the field.
    target = {**form.initial["target"], "headers": {"X-New-Token": MASK}}
    response = browser.post(f"/admin/orchestration/worker/{worker.pk}/change/", {**data, "target": json.dumps(target)})
    assert response.status_code == 200
    assert "X-New-Token" in str(response.context["adminform"].form.errors["target"])
    worker.refresh_from_db()
    assert worker.target["headers"]["Authorization"] == f"Bearer {WORKER_TOKEN}"
