"""The outbound guard: no call to link-local (cloud metadata) addresses, nor outside the
allowed networks; refused when written (400 naming the field) and when run (a permanent
failure: DNS may answer differently by then, a redirect may point there)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from django.test import Client

from health.checker import Probe, probe
from health.models import Service
from orchestration.core import notifications, outbound
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.fleet import fleet_file
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.routing.executor import _post

METADATA = "http://169.254.169.254/latest/meta-data/"
ROOT = Path(__file__).resolve().parents[2]


def nets(*items: str):
    return [ipaddress.ip_network(i) for i in items]


# --- pure ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("169.254.169.254", True),
        ("fe80::1", True),
        ("fe80::1%eth0", True),
        ("::ffff:169.254.169.254", True),
        ("127.0.0.1", False),
        ("203.0.113.7", False),
    ],
)
def test_default_blocked_networks(address, refused):
    problem = outbound.address_problem(address, nets(*outbound.DEFAULT_BLOCKED), [])
    assert (problem is not None) is refused


def test_allowed_networks_narrow_everything_else():
    allowed = nets("127.0.0.0/8", "::1/128")
    assert outbound.address_problem("127.0.0.1", [], allowed) is None
    assert outbound.address_problem("::1", [], allowed) is None
    assert "OUTBOUND_ALLOWED_NETWORKS" in outbound.address_problem("10.0.0.1", [], allowed)
    # Blocked wins over allowed.
    assert "blocked" in outbound.address_problem("169.254.1.1", nets("169.254.0.0/16"), nets("0.0.0.0/0"))


def test_a_bad_network_is_named():
    with pytest.raises(ValueError, match="'nope'"):
        outbound.parse_networks(("10.0.0.0/8", "nope"))


def test_the_suite_only_reaches_loopback(settings):
    assert settings.OUTBOUND_ALLOWED_NETWORKS == ["127.0.0.0/8", "::1/128"]
    assert outbound.url_problem("http://203.0.113.7/") is not None
    assert outbound.url_problem("http://127.0.0.1:9/") is None


def test_names_are_checked_after_resolution(settings):
    settings.OUTBOUND_BLOCKED_NETWORKS = ["127.0.0.0/8"]
    assert "localhost resolves to 127.0.0.1" in outbound.url_problem("http://localhost:9/")


def test_every_outbound_call_goes_through_the_guard():
    """No module calls requests (or urllib) directly: they would bypass the guard."""
    direct = re.compile(r"requests\.(get|post|put|patch|delete|head|request|Session)\(|urlopen\(")
    found = [
        str(path.relative_to(ROOT))
        for app in ("orchestration", "health", "pipeline", "orchestrator_site")
        for path in (ROOT / app).rglob("*.py")
        if path.name != "outbound.py" and direct.search(path.read_text())
    ]
    assert not found, found


# --- refused when written -------------------------------------------------------------------
@pytest.fixture
def default_networks(settings):
    """The production defaults: link-local blocked, everything else allowed."""
    settings.OUTBOUND_BLOCKED_NETWORKS = list(outbound.DEFAULT_BLOCKED)
    settings.OUTBOUND_ALLOWED_NETWORKS = []


def test_api_refuses_link_local_targets_naming_the_field(default_networks, staff_client, world):
    service = {"name": "meta", "base_url": "http://169.254.169.254"}
    response = staff_client.post("/api/v1/services/", service, format="json")
    assert response.status_code == 400 and "base_url" in response.json(), response.json()
    target = {"type": "http", "url": METADATA}
    worker = {"name": "meta", "category": "collection", "interval_seconds": 600, "target": target}
    response = staff_client.post("/api/v1/workers/", worker, format="json")
    assert response.status_code == 400 and "169.254.169.254" in str(response.json()["target"])
    job = {"kind": "http.request", "payload": {"url": "http://[fe80::1]/"}}
    response = staff_client.post("/api/v1/jobs/", job, format="json")
    assert response.status_code == 400 and "url" in response.json()["payload"], response.json()
    assert not Service.objects.filter(name="meta").exists() and not Worker.objects.filter(name="meta").exists()


def test_admin_and_fleet_file_refuse_link_local_targets(default_networks, django_user_model):
    admin_user = django_user_model.objects.create_superuser("root-out", password="pw-root-123")
    browser = Client()
    browser.force_login(admin_user)
    form = {"name": "meta", "base_url": "http://169.254.169.254", "health_path": "/health", "timeout_seconds": 5,
            "check_interval_seconds": 30, "failure_threshold": 5, "success_threshold": 2, "open_timeout_seconds": 60,
            "weight": 1, "capabilities": "[]", "category": "", "enabled": "on"}  # fmt: skip
    response = browser.post("/admin/health/service/add/", form)
    assert response.status_code == 200 and "base_url" in response.context["adminform"].form.errors
    yaml = (
        "workers:\n  - name: meta\n    category: collection\n    interval_seconds: 60\n"
        f"    target: {{type: http, url: '{METADATA}'}}\n"
    )
    with pytest.raises(fleet_file.FleetFileError, match=re.escape("169.254.169.254")):
        fleet_file.parse(yaml)


# --- refused when run -----------------------------------------------------------------------
def test_a_job_to_a_refused_address_fails_for_good(default_networks, db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = queue.enqueue("http.request", {"url": METADATA}, max_attempts=5)
    job.refresh_from_db()
    assert job.status == "failed" and job.attempts == 1 and "refused" in job.error


def test_dns_that_changed_since_is_caught_when_connecting(
    settings, httpserver, staff_client, world, django_capture_on_commit_callbacks
):
    """Allowed when written; by the time it runs the address is refused: nothing is sent."""
    httpserver.expect_request("/collect").respond_with_json({"ok": True})
    target = {"type": "http", "method": "POST", "url": httpserver.url_for("/collect")}
    worker = {"name": "moved", "category": "collection", "interval_seconds": 600, "target": target}
    assert staff_client.post("/api/v1/workers/", worker, format="json").status_code == 201
    settings.OUTBOUND_BLOCKED_NETWORKS = ["127.0.0.0/8"]
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.post("/api/v1/workers/moved/trigger", format="json").status_code == 202
    run = WorkerRun.objects.get(worker__name="moved")
    assert run.status == "failed" and "refused" in run.error
    assert not httpserver.log


def test_a_redirect_to_a_refused_address_is_not_followed(settings, httpserver, db, django_capture_on_commit_callbacks):
    settings.OUTBOUND_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    httpserver.expect_request("/hop").respond_with_data("", status=302, headers={"Location": METADATA})
    with django_capture_on_commit_callbacks(execute=True):
        job = queue.enqueue("http.request", {"url": httpserver.url_for("/hop")}, max_attempts=3)
    job.refresh_from_db()
    assert job.status == "failed" and job.attempts == 1 and "169.254.169.254" in job.error


def test_health_checks_routing_and_webhooks_are_guarded(default_networks, settings, db):
    result = probe(Probe(key=1, url=METADATA, timeout=1))
    assert not result.success and "refused" in result.error_message
    service = Service(name="meta", base_url="http://169.254.169.254")
    tried = _post(service, {}, 1)
    assert not tried.ok and tried.status_code is None and "refused" in tried.error
    # The webhook of the settings is a channel now, refused like any other outbound call.
    settings.FLEET_ALERT_WEBHOOK_URL = METADATA
    notifications.sync_settings_channels()
    (delivery,) = notifications.notify("anomaly:1", "critical", "m")
    notifications.deliver_due()
    delivery.refresh_from_db()
    assert delivery.status == "pending" and "refused" in delivery.last_error


def test_fetched_bodies_are_shown_to_staff_only(
    httpserver, staff_client, user_client, world, django_capture_on_commit_callbacks
):
    httpserver.expect_request("/inside").respond_with_json({"internal": "figures"})
    with django_capture_on_commit_callbacks(execute=True):
        created = staff_client.post(
            "/api/v1/jobs/", {"kind": "http.request", "payload": {"url": httpserver.url_for("/inside")}}, format="json"
        )
    job = Job.objects.get(pk=created.json()["id"])
    assert job.status == "completed"
    assert staff_client.get(f"/api/v1/jobs/{job.pk}/").json()["result"]["body"] == {"internal": "figures"}
    shown = user_client.get(f"/api/v1/jobs/{job.pk}/").json()["result"]
    assert shown["status_code"] == 200 and "figures" not in str(shown)
