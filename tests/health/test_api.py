"""The HTTP contract of service health: /health/*, /api/v1/services/, alerts."""

from __future__ import annotations

import pytest

from health.models import CircuitBreaker, HealthCheck, Service
from health.sweep import check_services
from orchestration.core.models import LedgerEntry
from tests.health.servers import Behaviour

pytestmark = pytest.mark.django_db

BASE = "/api/v1/services/"


def create(client, name: str, server=None, **fields):
    body = {"name": name, "base_url": server.base_url if server else "http://127.0.0.1:9", **fields}
    if server:
        body.setdefault("health_path", f"/{name}")
    return client.post(BASE, body, format="json")


# --- auth ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/health/status"),
        ("post", "/health/trigger"),
        ("get", BASE),
        ("post", BASE),
        ("get", BASE + "x/"),
        ("post", BASE + "x/enable"),
        ("post", BASE + "x/disable"),
        ("post", BASE + "x/reset-circuit"),
        ("get", BASE + "x/checks/"),
        ("get", "/api/v1/service-alerts/"),
    ],
)
def test_everything_but_liveness_needs_credentials(anon_client, method, path):
    response = getattr(anon_client, method)(path)
    assert response.status_code == 401 and "detail" in response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/health/trigger"),
        ("post", BASE),
        ("patch", BASE + "x/"),
        ("delete", BASE + "x/"),
        ("post", BASE + "x/enable"),
        ("post", BASE + "x/disable"),
        ("post", BASE + "x/reset-circuit"),
        ("post", BASE + "x/check"),
    ],
)
def test_writes_need_staff(user_client, method, path):
    Service.objects.create(name="x", base_url="http://127.0.0.1:9")
    response = getattr(user_client, method)(path, {}, format="json")
    assert response.status_code == 403


def test_liveness_is_public(anon_client):
    assert anon_client.get("/health").json() == {"status": "ok", "service": "orchestrator"}


def test_reads_work_for_any_signed_in_user(user_client):
    Service.objects.create(name="x", base_url="http://127.0.0.1:9")
    assert user_client.get(BASE).json()["count"] == 1
    assert user_client.get("/health/status").status_code == 200


# --- CRUD ---------------------------------------------------------------------------
def test_create_with_defaults_by_name_and_ledger(staff_client):
    response = create(staff_client, "api", capabilities=["research"])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "api" and body["health_path"] == "/health"
    assert (body["timeout_seconds"], body["check_interval_seconds"]) == (5.0, 30)
    assert (body["failure_threshold"], body["success_threshold"], body["open_timeout_seconds"]) == (5, 2, 60.0)
    assert body["capabilities"] == ["research"] and body["depends_on"] == [] and body["enabled"] is True
    assert body["health"] == "unknown" and body["circuit_breaker_state"] == "closed"
    assert body["uptime_percentage"] is None
    assert CircuitBreaker.objects.filter(name="service:api").exists()
    entry = LedgerEntry.objects.get(event_type="service.created")
    assert entry.actor == "ops" and entry.subject == "service:api"


def test_get_update_and_delete_by_name(staff_client):
    create(staff_client, "db")
    create(staff_client, "api.v2")
    assert staff_client.get(BASE + "api.v2/").json()["name"] == "api.v2"
    response = staff_client.patch(BASE + "api.v2/", {"depends_on": ["db"], "failure_threshold": 3}, format="json")
    assert response.status_code == 200 and response.json()["depends_on"] == ["db"]
    assert CircuitBreaker.objects.get(name="service:api.v2").failure_threshold == 3
    assert staff_client.get(BASE + "db/").json()["dependents"] == ["api.v2"]
    assert staff_client.delete(BASE + "api.v2/").status_code == 204
    assert staff_client.get(BASE + "api.v2/").status_code == 404


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"base_url": "not a url"}, "base_url"),
        ({"base_url": "ftp://127.0.0.1/x"}, "base_url"),
        ({"health_path": "health"}, "health_path"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": "soon"}, "timeout_seconds"),
        ({"check_interval_seconds": 0}, "check_interval_seconds"),
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"success_threshold": -1}, "success_threshold"),
        ({"open_timeout_seconds": -5}, "open_timeout_seconds"),
        ({"capabilities": "research"}, "capabilities"),
        ({"capabilities": [""]}, "capabilities"),
        ({"depends_on": ["nope"]}, "depends_on"),
        ({"depends_on": ["bad"]}, "depends_on"),
        ({"enabled": "maybe"}, "enabled"),
        ({"weight": -1}, "weight"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(staff_client, fields, bad_field):
    response = create(staff_client, "bad", **fields)
    assert response.status_code == 400 and bad_field in response.json(), response.json()
    assert not Service.objects.exists()
    assert not CircuitBreaker.objects.exists()


@pytest.mark.parametrize("name", ["", "has space", "-dash-first", "x" * 101])
def test_bad_names_are_refused(staff_client, name):
    response = create(staff_client, name)
    assert response.status_code == 400 and "name" in response.json()


def test_a_duplicate_name_is_a_400(staff_client):
    create(staff_client, "api")
    response = create(staff_client, "api")
    assert response.status_code == 400 and "name" in response.json()


def test_dependency_cycles_are_refused(staff_client):
    create(staff_client, "a")
    create(staff_client, "b", depends_on=["a"])
    response = staff_client.patch(BASE + "a/", {"depends_on": ["b"]}, format="json")
    assert response.status_code == 400 and "a → b → a" in response.json()["depends_on"][0]
    assert Service.objects.get(name="a").depends_on.count() == 0


def test_unknown_names_are_404(staff_client):
    for method, path in [("get", "nope/"), ("post", "nope/enable"), ("get", "nope/checks/")]:
        assert getattr(staff_client, method)(BASE + path).status_code == 404


# --- enable / disable / reset ---------------------------------------------------------
def test_disable_is_refused_while_enabled_services_depend_on_it(staff_client):
    create(staff_client, "db")
    create(staff_client, "api", depends_on=["db"])
    create(staff_client, "web", depends_on=["db"])
    response = staff_client.post(BASE + "db/disable")
    assert response.status_code == 409 and response.json() == {"detail": "Required by api, web"}
    assert Service.objects.get(name="db").enabled is True
    # The same guard holds for PATCH and DELETE.
    assert staff_client.patch(BASE + "db/", {"enabled": False}, format="json").status_code == 409
    assert staff_client.delete(BASE + "db/").status_code == 409

    assert staff_client.post(BASE + "api/disable").status_code == 200
    assert staff_client.post(BASE + "web/disable").status_code == 200
    response = staff_client.post(BASE + "db/disable")
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert LedgerEntry.objects.filter(event_type="health.service_disabled", actor="ops").count() == 3
    response = staff_client.post(BASE + "db/enable")
    assert response.status_code == 200 and response.json()["enabled"] is True


def test_reset_circuit_closes_the_breaker(staff_client, server):
    server.behaviour["/api"] = Behaviour.ERROR
    create(staff_client, "api", server, failure_threshold=1)
    check_services()
    assert staff_client.get(BASE + "api/").json()["circuit_breaker_state"] == "open"
    response = staff_client.post(BASE + "api/reset-circuit")
    assert response.status_code == 200
    assert response.json()["circuit_breaker_state"] == "closed" and response.json()["health"] == "unknown"
    assert LedgerEntry.objects.get(event_type="health.circuit_reset").actor == "ops"


def test_checks_history_newest_first_and_filterable(staff_client, server):
    create(staff_client, "api", server)
    server.sequence["/api"] = [Behaviour.OK, Behaviour.ERROR, Behaviour.OK]
    for _ in range(3):
        check_services()
    body = staff_client.get(BASE + "api/checks/").json()
    assert body["count"] == 3
    assert [c["success"] for c in body["results"]] == [True, False, True]
    first = body["results"][1]
    assert set(first) >= {"checked_at", "success", "health", "status_code", "response_time_ms", "error_message"}
    assert first["error_message"] == "HTTP 500"
    assert staff_client.get(BASE + "api/checks/?success=false").json()["count"] == 1
    assert staff_client.get(BASE + "api/checks/?success=perhaps").status_code == 400
    assert HealthCheck.objects.count() == 3


def test_check_one_service_now(staff_client, server):
    create(staff_client, "api", server)
    body = staff_client.post(BASE + "api/check").json()
    assert body["health"] == "healthy" and body["total_checks"] == 1 and server.hits["/api"] == 1


# --- /health/status and /health/trigger --------------------------------------------------
def test_status_has_the_seed_shape(staff_client, server):
    create(staff_client, "ok", server)
    create(staff_client, "bad", server)
    create(staff_client, "never", server, enabled=False)
    server.behaviour["/bad"] = Behaviour.ERROR
    check_services()
    body = staff_client.get("/health/status").json()
    assert set(body) >= {"timestamp", "services", "overall_health"}
    assert set(body["services"]) == {"ok", "bad"}
    ok = body["services"]["ok"]
    assert set(ok) >= {
        "health",
        "last_check",
        "response_time_ms",
        "error_message",
        "consecutive_failures",
        "total_checks",
        "successful_checks",
        "uptime_percentage",
        "circuit_breaker_state",
    }
    assert ok["health"] == "healthy" and ok["uptime_percentage"] == 100.0 and ok["error_message"] is None
    assert body["services"]["bad"]["health"] == "unhealthy"
    assert body["services"]["bad"]["error_message"] == "HTTP 500"
    assert body["overall_health"] == "degraded"


def test_status_filters_by_shown_health_and_name_and_keeps_the_overall_of_all(staff_client, server):
    for name in ("web-eu", "web-us", "db"):
        create(staff_client, name, server)
    server.behaviour["/web-us"] = Behaviour.ERROR
    check_services()
    CircuitBreaker.objects.filter(name="service:db").update(state="open")
    unhealthy = staff_client.get("/health/status?health=unhealthy").json()
    assert set(unhealthy["services"]) == {"web-us"} and unhealthy["overall_health"] == "degraded"
    tripped = staff_client.get("/health/status?health=circuit_open").json()["services"]
    assert set(tripped) == {"db"} and tripped["db"]["circuit_breaker_state"] == "open"
    healthy = staff_client.get("/health/status?health=healthy").json()["services"]
    assert set(healthy) == {"web-eu"}  # db's stored health is healthy, but its breaker is open
    assert set(staff_client.get("/health/status?name=WEB").json()["services"]) == {"web-eu", "web-us"}
    assert set(staff_client.get("/health/status?name=web&health=healthy").json()["services"]) == {"web-eu"}


@pytest.mark.parametrize(("query", "field"), [("health=sideways", "health"), ("name=" + "x" * 101, "name")])
def test_a_bad_status_filter_is_a_400_naming_it(staff_client, query, field):
    response = staff_client.get(f"/health/status?{query}")
    assert response.status_code == 400 and field in response.json()


def test_an_error_text_in_the_status_is_masked(staff_client, server):
    create(staff_client, "leaky", server)
    Service.objects.filter(name="leaky").update(last_error="GET http://bot:hunter22@10.0.0.1/x?api_key=abc123 failed")
    error = staff_client.get("/health/status").json()["services"]["leaky"]["error_message"]
    assert "hunter22" not in error and "abc123" not in error and "10.0.0.1" in error


def test_trigger_checks_everything_now(staff_client, server):
    create(staff_client, "a", server)
    create(staff_client, "b", server)
    body = staff_client.post("/health/trigger").json()
    assert body["overall_health"] == "healthy"
    assert {n: s["total_checks"] for n, s in body["services"].items()} == {"a": 1, "b": 1}
    assert server.hits["/a"] == 1 and server.hits["/b"] == 1
    assert LedgerEntry.objects.get(event_type="health.sweep_triggered").actor == "ops"


def test_trigger_with_everything_down_is_unhealthy(staff_client, refused_url):
    staff_client.post(BASE, {"name": "gone", "base_url": refused_url}, format="json")
    body = staff_client.post("/health/trigger").json()
    assert body["overall_health"] == "unhealthy"
    assert body["services"]["gone"]["error_message"] == "connection refused"


def test_alerts_endpoint_lists_root_causes(staff_client, server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    create(staff_client, "db", server)
    create(staff_client, "api", server, depends_on=["db"])
    server.behaviour.update({"/db": Behaviour.ERROR, "/api": Behaviour.ERROR})
    staff_client.post("/health/trigger")
    body = staff_client.get("/api/v1/service-alerts/?open=true").json()
    assert body["count"] == 1 and body["results"][0]["service"] == "db" and body["results"][0]["affected"] == ["api"]
    assert staff_client.get("/api/v1/service-alerts/?open=soon").status_code == 400


def test_status_times_and_flags_read_as_the_model_gives_them(staff_client):
    from datetime import UTC, datetime

    create(staff_client, "micro")
    create(staff_client, "whole")
    create(staff_client, "never")
    Service.objects.filter(name="micro").update(last_check_at=datetime(2026, 3, 1, 2, 3, 4, 5006, tzinfo=UTC))
    Service.objects.filter(name="whole").update(last_check_at=datetime(2026, 3, 1, 2, 3, 4, tzinfo=UTC))
    services = staff_client.get("/health/status").json()["services"]
    for name in ("micro", "whole"):
        assert services[name]["last_check"] == Service.objects.get(name=name).last_check_at.isoformat()
    assert services["micro"]["last_check"] == "2026-03-01T02:03:04.005006+00:00"
    assert services["whole"]["last_check"] == "2026-03-01T02:03:04+00:00"
    assert services["never"]["last_check"] is None and services["never"]["enabled"] is True
