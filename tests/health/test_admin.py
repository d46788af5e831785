"""Admin pages render with badges, and the actions do what they say."""

from __future__ import annotations

import pytest
from django.urls import reverse

from health.models import CircuitBreaker, HealthCheck, Service
from health.sweep import check_services
from orchestration.core.models import LedgerEntry
from tests.health.servers import Behaviour

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return client


def act(admin_client, action: str, *names: str):
    ids = list(Service.objects.filter(name__in=names).values_list("pk", flat=True))
    return admin_client.post(
        reverse("admin:health_service_changelist"), {"action": action, "_selected_action": ids}, follow=True
    )


def test_the_service_list_shows_badges_uptime_and_errors(admin_client, server):
    Service.objects.create(name="api", base_url=server.base_url, health_path="/api")
    Service.objects.create(name="bad", base_url=server.base_url, health_path="/bad", failure_threshold=1)
    server.behaviour["/bad"] = Behaviour.ERROR
    check_services()
    page = admin_client.get(reverse("admin:health_service_changelist")).content.decode()
    # healthy and circuit_open/open badges, coloured by static/console/palette.css (no inline style)
    assert 'class="ob-badge b-healthy"' in page and 'class="ob-badge b-circuit_open"' in page
    assert "100.00% of 1" in page and "0.00% of 1" in page and "HTTP 500" in page
    for name in ("healthcheck", "circuitbreaker", "servicealert"):
        assert admin_client.get(reverse(f"admin:health_{name}_changelist")).status_code == 200
    svc = Service.objects.get(name="api")
    assert admin_client.get(reverse("admin:health_service_change", args=[svc.pk])).status_code == 200


def test_check_now_and_reset_circuit_actions(admin_client, server):
    Service.objects.create(name="bad", base_url=server.base_url, health_path="/bad", failure_threshold=1)
    server.behaviour["/bad"] = Behaviour.ERROR
    act(admin_client, "check_now", "bad")
    assert HealthCheck.objects.count() == 1 and CircuitBreaker.objects.get(name="service:bad").state == "open"
    triggered = LedgerEntry.objects.get(event_type="health.sweep_triggered")
    assert triggered.actor == "root" and triggered.data["failed"] == ["bad"]
    act(admin_client, "reset_circuit", "bad")
    assert CircuitBreaker.objects.get(name="service:bad").state == "closed"
    assert LedgerEntry.objects.get(event_type="health.circuit_reset").actor == "root"


def test_disable_respects_dependencies_and_enable_restores(admin_client):
    db = Service.objects.create(name="db", base_url="http://127.0.0.1:9")
    api = Service.objects.create(name="api", base_url="http://127.0.0.1:9")
    api.depends_on.add(db)
    page = act(admin_client, "disable", "db").content.decode()
    assert "Required by api" in page and Service.objects.get(name="db").enabled
    # Selected together, the chain is disabled dependents first.
    act(admin_client, "disable", "db", "api")
    assert not Service.objects.filter(enabled=True).exists()
    act(admin_client, "enable", "db", "api")
    assert Service.objects.filter(enabled=True).count() == 2


def test_the_api_schema_includes_the_health_endpoints(staff_client):
    response = staff_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"] if response["Content-Type"].startswith("application/json") else None
    text = response.content.decode()
    assert "/api/v1/services/{name}/reset-circuit" in text and "/health/trigger" in text
    assert paths is None or "/health/status" in paths


@pytest.mark.parametrize(
    "url",
    [
        "/admin/health/healthcheck/",
        "/admin/health/healthcheck/?success__exact=0&health__exact=unhealthy",
        "/admin/health/healthcheck/?q=api",
        "/admin/health/healthcheck/?q=12",
    ],
)
def test_the_check_history_never_counts_or_scans_the_whole_table(admin_client, url):
    import re

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    api = Service.objects.create(name="api", base_url="http://127.0.0.1:9")
    HealthCheck.objects.bulk_create(
        HealthCheck(
            service=api, success=i % 3 > 0, health="healthy" if i % 3 else "unhealthy", checked_at=timezone.now()
        )
        for i in range(60)
    )
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert "date_hierarchy" not in page and "xfull" not in page
    if "q=api" in url:
        assert page.count('href="/services/api/"') == 50  # a page of api's checks, found by its exact name
    big = [q["sql"] for q in ctx.captured_queries if "health_healthcheck" in q["sql"]]
    assert big
    for sql in big:
        assert "DISTINCT" not in sql.upper(), sql
        if "COUNT(" in sql.upper():
            assert re.search(r"LIMIT 10001\b", sql), f"an unbounded count: {sql}"
