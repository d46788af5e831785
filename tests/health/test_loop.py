"""What the control loop sees and does about service health."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from health.loop import services_section
from health.models import CircuitBreaker, Service, ServiceAlert
from health.sweep import check_services
from orchestration.core.models import LedgerEntry
from orchestration.loop.cycle import run_cycle
from orchestration.loop.health_score import health_score
from orchestration.loop.models import Rule, ScoreDeduction
from orchestration.loop.monitor import build_snapshot, deduction_specs
from tests.health.servers import Behaviour

pytestmark = pytest.mark.django_db


def test_the_section_counts_health_and_breakers(server):
    for name in ("a", "b", "c"):
        Service.objects.create(name=name, base_url=server.base_url, health_path=f"/{name}", failure_threshold=1)
    Service.objects.create(name="off", base_url=server.base_url, enabled=False)
    server.behaviour["/c"] = Behaviour.ERROR
    check_services()
    section = build_snapshot()["services"]
    assert section["total"] == 4 and section["enabled"] == 3
    assert (section["healthy"], section["circuit_open"], section["unknown"]) == (2, 1, 0)
    assert (section["breakers_open"], section["breakers_closed"]) == (1, 2)
    assert section["overall_health"] == "degraded" and section["all_unhealthy"] == 0


def test_the_section_uses_a_constant_number_of_queries():
    services = Service.objects.bulk_create(
        Service(name=f"s{i}", base_url="http://127.0.0.1:9", health="unhealthy" if i % 3 else "healthy")
        for i in range(1500)
    )
    circuits = CircuitBreaker.objects.bulk_create(
        CircuitBreaker(name=f"service:{s.name}", state="open") for s in services[:300]
    )
    for service, circuit in zip(services, circuits, strict=False):
        service.circuit = circuit
    Service.objects.bulk_update(services[:300], ["circuit"])
    # Resolved history must not multiply rows; open alerts are counted once.
    ServiceAlert.objects.bulk_create(
        ServiceAlert(service=s, resolved_at=timezone.now()) for s in services[:50] for _ in range(3)
    )
    ServiceAlert.objects.bulk_create(ServiceAlert(service=s) for s in services[:7])
    with CaptureQueriesContext(connection) as ctx:
        section = services_section(timezone.now())
    assert len(ctx.captured_queries) == 1
    assert section["enabled"] == 1500 and section["healthy"] == 500 and section["breakers_open"] == 300
    assert section["open_alerts"] == 7


def test_service_deductions_are_rows_a_person_switches_on(server):
    for name in ("a", "b", "c", "d"):
        Service.objects.create(name=name, base_url=server.base_url, health_path=f"/{name}", failure_threshold=1)
    server.behaviour["/d"] = Behaviour.ERROR
    check_services()
    # Seeded switched off: the score is the documented formula.
    rows = ScoreDeduction.objects.filter(scope="services")
    assert sorted(rows.values_list("name", flat=True)) == [
        "service-circuits-open",
        "services-down",
        "services-none-healthy",
    ]
    assert not rows.filter(enabled=True).exists()
    system = build_snapshot()["system"]
    # (The alert's ledger errors are a queue deduction, as in the seed's formula.)
    assert [d["name"] for d in system["deductions"]] == ["ledger-errors"]
    assert system["health_score"] == system["queue_health_score"] < 100
    for row in rows:
        row.set_enabled(True, actor="ops")
    system = build_snapshot()["system"]
    by_name = {d["name"]: d for d in system["deductions"]}
    assert by_name["services-down"]["points"] == 10
    assert by_name["services-down"]["values"] == {"services.down": 1, "services.all_unhealthy": 0}
    assert by_name["service-circuits-open"]["points"] == 5
    assert "services-none-healthy" not in by_name
    # An outside outage lowers the score, never the queue's own score.
    assert system["queue_health_score"] - system["health_score"] == 15


def test_when_nothing_is_healthy_the_heavier_deduction_applies_alone():
    ScoreDeduction.objects.filter(scope="services").update(enabled=True)
    snapshot = {"services": {"enabled": 2, "down": 2, "all_unhealthy": 1, "breakers_open": 6}}
    result = health_score(snapshot, deduction_specs())
    assert result["health_score"] == 100 - 30 - 20
    assert health_score({"services": {"enabled": 3, "healthy": 3, "down": 0}}, deduction_specs())["health_score"] == 100


def test_default_rules_are_seeded():
    rules = {r.name: r for r in Rule.objects.filter(name__in=["service-circuit-open", "services-all-unhealthy"])}
    assert rules["service-circuit-open"].builtin and rules["service-circuit-open"].action_type == "service_alert"
    assert rules["services-all-unhealthy"].priority == 10


def test_a_cycle_alerts_when_a_breaker_opens_and_when_nothing_is_healthy(server):
    db = Service.objects.create(name="db", base_url=server.base_url, health_path="/db", failure_threshold=1)
    api = Service.objects.create(name="api", base_url=server.base_url, health_path="/api", failure_threshold=1)
    api.depends_on.add(db)
    server.behaviour.update({"/db": Behaviour.ERROR, "/api": Behaviour.ERROR})
    check_services()
    check_services()  # alert threshold (2 failures) reached while open

    result = run_cycle()
    types = {a["type"]: a for a in result["decision"]["actions"]}
    assert "service_alert" in types
    alerts = LedgerEntry.objects.filter(event_type="health.alert").order_by("id")
    severities = sorted(alerts.values_list("severity", flat=True))
    assert severities == ["critical", "warning"]
    critical = alerts.get(severity="critical")
    assert critical.data["open_circuits"] == ["api", "db"]
    assert critical.data["root_causes"] == [{"service": "db", "affected": ["api"]}]
    assert "root causes: db (also failing because of it: api)" in critical.message
