"""A table of secret shapes against every exit, as a reader and as staff.

Each shape (URL user-info, secret query values, secret-named headers, secret-named body
keys) is put where a client can put it — a job's payload, a worker's HTTP target, a
service's URL — and used: the calls fail against a closed port, so the secrets also
travel through error texts (a requests exception quotes the URL and its query) into
jobs, runs, checks and the ledger. No value of the table may then appear in the API
(lists and details of jobs, workers and their runs, services and their checks, the
ledger), on an admin change page, on a console page, in a notification's error or in a
log record; the masks show where the secrets were, and a read written back keeps them.
"""

from __future__ import annotations

import json
import logging

import pytest
from django import forms
from django.test import Client
from rest_framework.test import APIClient

from health.models import HealthCheck, Service
from health.sweep import check_services
from orchestration.core import alerts, notifications
from orchestration.core.logformat import JsonFormatter, TextFormatter
from orchestration.core.models import Anomaly, Delivery, Job, LedgerEntry
from orchestration.core.models.ledger import record
from orchestration.core.redaction import MASK, redact
from orchestration.fleet.models import Worker, WorkerRun
from tests.security.routes import PUBLIC, all_routes, values_for

pytestmark = pytest.mark.django_db

SECRETS = {
    "URL user-info": "ui-pw-1a2b",
    "query access_token": "qt-3c4d",
    "query api_key": "qk-5e6f",
    "header X-Auth": "ha-7a8b",
    "header X-Api-Token": "ht-9c0d",
    "header Cookie": "hc-1e2f",
    "body password": "bp-3a4b",
    "body nested client_secret": "bs-5c6d",
}
S = SECRETS
# Port 9 (discard) is closed: every call fails at once, quoting its URL in the error.
URL = (
    f"http://hook:{S['URL user-info']}@127.0.0.1:9/hook"
    f"?access_token={S['query access_token']}&api_key={S['query api_key']}&page=2"
)
HEADERS = {
    "X-Auth": S["header X-Auth"],
    "X-Api-Token": S["header X-Api-Token"],
    "Cookie": f"sessionid={S['header Cookie']}",
    "Accept": "application/json",
}
BODY = {"user": "ops", "password": S["body password"], "nested": [{"client_secret": S["body nested client_secret"]}]}
PAGES = [
    r for r in all_routes() if not r.is_api and not r.is_admin and r.name not in PUBLIC and r.name != "console:static"
]


def leaks(text: str) -> list[str]:
    return [shape for shape, value in SECRETS.items() if value in text]


@pytest.fixture
def secret_world(staff_client: APIClient, world, django_capture_on_commit_callbacks, caplog):
    caplog.set_level(logging.DEBUG)
    job = {
        "kind": "http.request",
        "max_attempts": 1,
        "payload": {"url": URL, "method": "POST", "headers": HEADERS, "json": BODY},
    }
    target = {"type": "http", "method": "POST", "url": URL, "headers": HEADERS, "body": BODY}
    worker = {"name": "secret-table", "category": "collection", "interval_seconds": 600, "target": target}
    base_url, path = f"http://hook:{S['URL user-info']}@127.0.0.1:9", f"/health?access_token={S['query access_token']}"
    service = {"name": "secret-svc", "base_url": base_url, "health_path": path, "timeout_seconds": 1}
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.post("/api/v1/jobs/", job, format="json").status_code == 201
        assert staff_client.post("/api/v1/workers/", worker, format="json").status_code == 201
        assert staff_client.post("/api/v1/workers/secret-table/trigger", format="json").status_code == 202
        assert staff_client.post("/api/v1/services/", service, format="json").status_code == 201
    check_services(Service.objects.filter(name="secret-svc"))
    # The secrets were really used: they reached the error texts unmasked, where they are stored.
    job_row = Job.objects.get(kind="http.request")
    assert job_row.status == "failed" and S["query access_token"] in job_row.error and "Traceback" in job_row.error
    run = WorkerRun.objects.get(worker__name="secret-table")
    assert S["query api_key"] in run.error
    return {"job": job_row, "run": run, "worker": Worker.objects.get(name="secret-table")}


def _api_paths(ids) -> list[str]:
    job, worker = ids["job"], ids["worker"]
    entries = list(LedgerEntry.objects.values_list("pk", flat=True))
    return [
        "/api/v1/jobs/",
        f"/api/v1/jobs/{job.pk}/",
        "/api/v1/workers/",
        f"/api/v1/workers/{worker.name}",
        f"/api/v1/workers/{worker.name}/runs/",
        "/api/v1/services/",
        "/api/v1/services/secret-svc/",
        "/api/v1/services/secret-svc/checks/",
        "/api/v1/ledger/?limit=1000",
        *(f"/api/v1/ledger/{pk}/" for pk in entries),
    ]


@pytest.mark.parametrize("who", ["reader", "staff"])
def test_no_secret_shape_in_the_api(secret_world, who, user_client, staff_client):
    client = user_client if who == "reader" else staff_client
    found = {}
    for path in _api_paths(secret_world):
        response = client.get(path)
        assert response.status_code == 200, path
        if bad := leaks(response.content.decode()):
            found[path] = bad
    assert not found, found
    # The masks stand where the secrets were: names visible, values not.
    job = client.get(f"/api/v1/jobs/{secret_world['job'].pk}/").json()
    assert job["payload"]["headers"] == {
        "X-Auth": MASK,
        "X-Api-Token": MASK,
        "Cookie": MASK,
        "Accept": "application/json",
    }
    assert job["payload"]["json"] == {"user": "ops", "password": MASK, "nested": [{"client_secret": MASK}]}
    assert job["payload"]["url"] == f"http://{MASK}@127.0.0.1:9/hook?access_token={MASK}&api_key={MASK}&page=2"
    # Readers get the error's message; the traceback (paths, code) is for staff.
    assert job["error"].startswith("ConnectionError") and MASK in job["error"]
    assert ("Traceback" in job["error"]) is (who == "staff")


@pytest.mark.parametrize("who", ["reader", "staff"])
def test_no_secret_shape_on_a_console_page(secret_world, who, world, viewer_session, staff_session):
    browser = viewer_session if who == "reader" else staff_session
    found = {}
    for route in PAGES:
        values = values_for(route, world)
        if route.name.startswith("console:worker"):
            values["name"] = "secret-table"
        if route.name.startswith("console:service"):
            values["name"] = "secret-svc"
        path = route.path(values)
        for query in ({}, {"live": "1"}):
            response = browser.get(path, query)
            if response.status_code in (403, 405):
                continue
            assert response.status_code == 200, path
            if bad := leaks(response.content.decode()):
                found[f"{path}?{query}"] = bad
    assert not found, found


def test_no_secret_shape_on_an_admin_page(secret_world, django_user_model):
    admin_user = django_user_model.objects.create_superuser("root-table", password="pw-root-123")
    browser = Client()
    browser.force_login(admin_user)
    pages = [
        f"/admin/orchestration/job/{secret_world['job'].pk}/change/",
        f"/admin/orchestration/worker/{secret_world['worker'].pk}/change/",
        f"/admin/orchestration/workerrun/{secret_world['run'].pk}/change/",
        f"/admin/health/service/{Service.objects.get(name='secret-svc').pk}/change/",
        *(f"/admin/health/healthcheck/{pk}/change/" for pk in HealthCheck.objects.values_list("pk", flat=True)),
        *(f"/admin/orchestration/ledgerentry/{pk}/change/" for pk in LedgerEntry.objects.values_list("pk", flat=True)),
        "/admin/orchestration/job/",
        "/admin/orchestration/workerrun/",
        "/admin/orchestration/ledgerentry/",
        "/admin/health/service/",
        "/admin/health/healthcheck/",
    ]
    found = {}
    for path in pages:
        response = browser.get(path)
        assert response.status_code == 200, path
        if bad := leaks(response.content.decode()):
            found[path] = bad
    assert not found, found


def test_no_secret_shape_in_a_log_record(secret_world, caplog):
    logging.getLogger("orchestration.core.jobs").warning("calling %s with %r", URL, HEADERS)
    try:
        raise ConnectionError(f"Max retries exceeded with url: {URL}")
    except ConnectionError:
        logging.getLogger("orchestration.fleet").exception("webhook failed")
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "calling" in logged and not leaks(logged), leaks(logged)
    for formatter in (TextFormatter("%(message)s"), JsonFormatter()):
        formatted = "\n".join(formatter.format(r) for r in caplog.records)
        assert "Max retries" in formatted and not leaks(formatted), leaks(formatted)


def test_an_error_text_brings_no_secret_to_the_ledger_or_a_notification(secret_world, settings):
    entry = record("worker.alert_failed", f"webhook failed: ConnectionError: url: {URL}", data={"headers": HEADERS})
    entry.refresh_from_db()
    assert not leaks(f"{entry.message} {entry.data}")
    settings.FLEET_ALERT_WEBHOOK_URL = URL
    notifications.sync_settings_channels()
    anomaly = Anomaly.objects.create(code="WORKER_CRASH", severity="critical", subject="secret-table", details=BODY)
    assert alerts.NotificationChannels().send(alerts.Alert.of(anomaly))["queued"] >= 1
    notifications.deliver_due()
    delivery = Delivery.objects.select_related("channel").get(channel__name=notifications.SETTINGS_WEBHOOK)
    assert delivery.status == "pending" and delivery.last_error  # port 9 refused it
    shown = f"{delivery.title} {delivery.body} {delivery.last_error} {delivery.attempt_log.get().error}"
    assert not leaks(shown + delivery.channel.masked_url), leaks(shown + delivery.channel.masked_url)


def test_saving_what_was_read_keeps_every_secret(secret_world, staff_client: APIClient):
    worker = staff_client.get("/api/v1/workers/secret-table").json()
    writable = {k: worker[k] for k in ("name", "category", "interval_seconds", "target", "description")}
    assert staff_client.put("/api/v1/workers/secret-table", writable, format="json").status_code == 200
    stored = Worker.objects.get(name="secret-table").target
    assert stored["url"] == URL and stored["headers"] == HEADERS and stored["body"] == BODY
    service = staff_client.get("/api/v1/services/secret-svc/").json()
    assert MASK in service["base_url"] and MASK in service["health_path"]
    body = {k: service[k] for k in ("name", "base_url", "health_path", "timeout_seconds")}
    assert staff_client.put("/api/v1/services/secret-svc/", body, format="json").status_code == 200
    kept = Service.objects.get(name="secret-svc")
    assert S["URL user-info"] in kept.base_url and S["query access_token"] in kept.health_path
    # The mask where nothing is stored is refused, naming the field.
    response = staff_client.put(
        "/api/v1/services/secret-svc/", {**body, "base_url": f"http://{MASK}@other:1"}, format="json"
    )
    assert response.status_code == 400 and "base_url" in response.json()


def test_saving_an_admin_page_back_keeps_every_secret(secret_world, django_user_model):
    """Every admin page of the project shows masks (the page is masked as a whole), so
    every admin form restores them: saving a page unchanged keeps what is stored."""
    from orchestration.loop.models import Rule

    admin_user = django_user_model.objects.create_superuser("root-save", password="pw-root-123")
    browser = Client()
    browser.force_login(admin_user)
    rule = Rule.objects.exclude(builtin=True).first() or Rule.objects.first()
    Rule.objects.filter(pk=rule.pk).update(action_params={"webhook": URL, "api_key": S["query api_key"]})
    service = Service.objects.get(name="secret-svc")
    for url in (f"/admin/health/service/{service.pk}/change/", f"/admin/orchestration/rule/{rule.pk}/change/"):
        page = browser.get(url)
        assert not leaks(page.content.decode()), url
        form = page.context["adminform"].form
        data = {}
        for name, field in form.fields.items():
            value = form[name].value()
            # What the browser sends back is what the page shows: masked.
            if isinstance(field, forms.JSONField):
                data[name] = json.dumps(redact(form.initial.get(name, value)))
            elif value is not None and value is not False and value != []:
                data[name] = redact(value)
        response = browser.post(url, data)
        assert response.status_code == 302, (url, response.context["adminform"].form.errors if response.context else "")
    service.refresh_from_db()
    rule.refresh_from_db()
    assert S["URL user-info"] in service.base_url and S["query access_token"] in service.health_path
    assert rule.action_params == {"webhook": URL, "api_key": S["query api_key"]}
