"""The sweep against real local servers: breaker cycle with time travel, counters,
history, dependency-aware alerts, claims."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from health.models import CircuitBreaker, HealthCheck, Service, ServiceAlert
from health.sweep import check_services, claim_due, reconcile_alerts
from orchestration.core import alerts
from orchestration.core.models import Anomaly, LedgerEntry
from tests.health.servers import Behaviour

pytestmark = pytest.mark.django_db


def make(server, name: str, path: str | None = None, **fields) -> Service:
    return Service.objects.create(
        name=name,
        base_url=server.base_url,
        health_path=path or f"/{name}",
        timeout_seconds=fields.pop("timeout", 1.0),
        **fields,
    )


def fresh(name: str) -> Service:
    return Service.objects.select_related("circuit").get(name=name)


def test_a_healthy_check_updates_counters_and_history(server):
    make(server, "api")
    result = check_services()
    assert result.checked == ["api"] and result.failed == []
    svc = fresh("api")
    assert svc.health == "healthy" and svc.total_checks == 1 and svc.successful_checks == 1
    assert svc.last_status_code == 200 and svc.last_response_time_ms > 0 and svc.last_error == ""
    check = HealthCheck.objects.get(service=svc)
    assert check.success and check.health == "healthy" and check.breaker_state == "closed"


def test_failures_of_each_kind_are_recorded_with_their_message(server, refused_url):
    server.delay = 3
    server.behaviour.update({"/e": Behaviour.ERROR, "/s": Behaviour.SLOW, "/i": Behaviour.INVALID})
    make(server, "err", "/e")
    make(server, "slow", "/s", timeout=0.3)
    make(server, "bad", "/i")
    Service.objects.create(name="gone", base_url=refused_url, timeout_seconds=1)
    result = check_services()
    assert sorted(result.failed) == ["bad", "err", "gone", "slow"]
    errors = dict(Service.objects.values_list("name", "last_error"))
    assert errors["err"] == "HTTP 500"
    assert errors["slow"] == "timeout: no response within 0.3s"
    assert errors["gone"] == "connection refused"
    assert errors["bad"].startswith("invalid response")
    assert set(Service.objects.values_list("health", flat=True)) == {"unhealthy"}


def test_the_whole_breaker_cycle_sends_nothing_while_open(server):
    server.behaviour["/api"] = Behaviour.ERROR
    make(server, "api")
    t0 = timezone.now()
    with time_machine.travel(t0, tick=False):
        for _ in range(5):
            check_services()
    svc = fresh("api")
    assert svc.circuit.state == "open" and svc.health == "circuit_open" and server.hits["/api"] == 5

    # While open: sweeps go on, the server hears nothing, the service reads circuit_open.
    for seconds in (1, 30, 59):
        with time_machine.travel(t0 + timedelta(seconds=seconds), tick=False):
            result = check_services()
        assert result.skipped_circuit_open == ["api"]
    assert server.hits["/api"] == 5
    assert fresh("api").total_checks == 5

    # Half-open: exactly one trial; it succeeds, then a second success closes.
    server.behaviour["/api"] = Behaviour.OK
    with time_machine.travel(t0 + timedelta(seconds=61), tick=False):
        check_services()
        assert server.hits["/api"] == 6
        svc = fresh("api")
        assert svc.circuit.state == "half_open" and svc.health == "healthy"
        check_services()
    svc = fresh("api")
    assert svc.circuit.state == "closed" and server.hits["/api"] == 7
    assert svc.total_checks == 7 and svc.successful_checks == 2 and svc.uptime_percentage == 28.57
    assert list(
        LedgerEntry.objects.filter(subject="service:api", event_type__startswith="health.circuit_")
        .order_by("id")
        .values_list("event_type", flat=True)
    ) == ["health.circuit_opened", "health.circuit_half_opened", "health.circuit_closed"]


def test_a_failed_half_open_trial_reopens_for_another_timeout(server):
    server.behaviour["/api"] = Behaviour.ERROR
    make(server, "api", failure_threshold=2, open_timeout_seconds=10)
    t0 = timezone.now()
    with time_machine.travel(t0, tick=False):
        check_services()
        check_services()
    with time_machine.travel(t0 + timedelta(seconds=11), tick=False):
        check_services()  # the trial fails
    assert server.hits["/api"] == 3 and fresh("api").circuit.state == "open"
    with time_machine.travel(t0 + timedelta(seconds=20), tick=False):
        assert check_services().skipped_circuit_open == ["api"]
    assert server.hits["/api"] == 3
    with time_machine.travel(t0 + timedelta(seconds=21.5), tick=False):
        check_services()
    assert server.hits["/api"] == 4


def test_a_flapping_service_never_opens_its_breaker(server):
    server.sequence["/f"] = [Behaviour.ERROR, Behaviour.OK] * 6
    make(server, "flap", "/f")
    for _ in range(12):
        check_services()
    svc = fresh("flap")
    assert svc.circuit.state == "closed" and svc.total_checks == 12 and svc.successful_checks == 6
    assert svc.uptime_percentage == 50.0 and svc.health == "healthy"
    assert not LedgerEntry.objects.filter(event_type="health.circuit_opened").exists()


def test_state_survives_a_fresh_read_of_everything(server):
    server.behaviour["/api"] = Behaviour.ERROR
    make(server, "api", failure_threshold=1)
    check_services()
    # Nothing is held in memory: a new query sees the persisted breaker and counters.
    svc = fresh("api")
    assert svc.circuit.state == "open" and svc.consecutive_failures == 1
    assert check_services().skipped_circuit_open == ["api"]


def test_dependency_aware_alert_names_the_root_cause_once(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    db = make(server, "db")
    api = make(server, "api")
    web = make(server, "web")
    make(server, "solo")
    api.depends_on.add(db)
    web.depends_on.add(api)
    for path in ("/db", "/api", "/web"):
        server.behaviour[path] = Behaviour.ERROR
    check_services()

    alerts = list(ServiceAlert.objects.filter(resolved_at__isnull=True))
    assert len(alerts) == 1 and alerts[0].service.name == "db" and alerts[0].affected == ["api", "web"]
    opened = LedgerEntry.objects.filter(event_type="health.alert_opened")
    assert opened.count() == 1
    assert opened.get().message.startswith("db is down: HTTP 500; 2 dependent(s) failing because of it: api, web")

    # Monitoring of the dependents goes on: they are still checked every sweep.
    check_services()
    assert server.hits["/api"] == 2 and server.hits["/web"] == 2
    assert LedgerEntry.objects.filter(event_type="health.alert_opened").count() == 1

    # The root recovers, the dependents still fail: now each is its own root cause.
    server.behaviour["/db"] = Behaviour.OK
    check_services()
    assert set(ServiceAlert.objects.filter(resolved_at__isnull=True).values_list("service__name", flat=True)) == {"api"}
    resolved = ServiceAlert.objects.get(service__name="db")
    assert resolved.resolution == "recovered"
    assert ServiceAlert.objects.get(service__name="api", resolved_at__isnull=True).affected == ["web"]


def test_a_service_outage_is_one_critical_anomaly_per_root_cause(server, settings):
    """What reaches the alert channels (webhook, e-mail) and the open anomalies: one
    SERVICE_DOWN per root cause, its dependents in the details, resolved on recovery."""
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    db, api = make(server, "db"), make(server, "api")
    api.depends_on.add(db)
    server.behaviour.update({"/db": Behaviour.ERROR, "/api": Behaviour.ERROR})
    check_services()
    check_services()  # a second sweep refreshes, never duplicates
    open_ = Anomaly.objects.filter(resolved_at__isnull=True)
    assert list(open_.values_list("code", "subject", "severity")) == [("SERVICE_DOWN", "service:db", "critical")]
    anomaly = open_.get()
    assert anomaly.details == {"service": "db", "error": "HTTP 500", "affected": ["api"]}
    assert anomaly.alert_state == "pending" and anomaly.alert_due_at <= timezone.now()  # critical: at once
    assert anomaly.worker is None and anomaly.recovery_attempts == 0
    # The fleet's alert delivery sends it like any other anomaly (here: the ledger channel).
    assert alerts.deliver_due() == 1
    anomaly.refresh_from_db()
    assert anomaly.alert_state == "sent" and "ledger" in anomaly.alert_result
    sent = LedgerEntry.objects.get(event_type="worker.alert", subject="service:db")
    assert "SERVICE_DOWN on service:db" in sent.message

    server.behaviour.update({"/db": Behaviour.OK, "/api": Behaviour.OK})
    check_services()
    anomaly.refresh_from_db()
    assert anomaly.resolved_at is not None
    assert not Anomaly.objects.filter(resolved_at__isnull=True).exists()


def test_a_renamed_or_deleted_service_leaves_no_outage_open(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    db = make(server, "db")
    server.behaviour["/db"] = Behaviour.ERROR
    check_services()
    db.name = "primary-db"
    db.save()
    check_services()
    open_ = Anomaly.objects.filter(code="SERVICE_DOWN", resolved_at__isnull=True)
    assert list(open_.values_list("subject", flat=True)) == ["service:primary-db"]
    db.delete()
    assert not open_.exists()
    assert Anomaly.objects.filter(code="SERVICE_DOWN").count() == 2  # both kept, resolved


def test_dependents_breakers_open_quietly_with_the_root_cause(server):
    db = make(server, "db", failure_threshold=1)
    api = make(server, "api", failure_threshold=1)
    api.depends_on.add(db)
    server.behaviour.update({"/db": Behaviour.ERROR, "/api": Behaviour.ERROR})
    check_services()
    db_open = LedgerEntry.objects.get(event_type="health.circuit_opened", subject="service:db")
    api_open = LedgerEntry.objects.get(event_type="health.circuit_opened", subject="service:api")
    assert db_open.severity == "warning"
    assert api_open.severity == "info" and api_open.data["root_cause"] == "db"


def test_an_alert_waits_for_the_configured_failures(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 2
    server.behaviour["/api"] = Behaviour.ERROR
    make(server, "api")
    check_services()
    assert not ServiceAlert.objects.exists()
    check_services()
    assert ServiceAlert.objects.filter(service__name="api", resolved_at__isnull=True).count() == 1
    assert reconcile_alerts() == {"opened": [], "resolved": [], "updated": []}


def test_disabled_services_are_not_checked(server):
    make(server, "off", enabled=False)
    assert check_services().checked == []
    assert server.hits["/off"] == 0


def test_claim_due_hands_each_due_service_out_once_per_interval(server):
    make(server, "a", check_interval_seconds=30)
    make(server, "b", check_interval_seconds=30)
    t0 = timezone.now()
    assert sorted(s.name for s in claim_due(t0)) == ["a", "b"]
    assert claim_due(t0 + timedelta(seconds=29)) == []
    assert sorted(s.name for s in claim_due(t0 + timedelta(seconds=30))) == ["a", "b"]


@pytest.mark.django_db(transaction=True)
def test_two_claimers_racing_never_both_get_a_service(server):
    for i in range(20):
        make(server, f"s{i}")
    barrier = threading.Barrier(4)
    results: list = [None] * 4

    def run(i):
        try:
            barrier.wait()
            results[i] = [s.name for s in claim_due()]
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [n for batch in results for n in batch]
    assert sorted(claimed) == sorted(f"s{i}" for i in range(20))


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_recording_at_once_lose_no_count(server):
    server.behaviour["/api"] = Behaviour.ERROR
    make(server, "api", failure_threshold=100)
    barrier = threading.Barrier(4)

    def run():
        try:
            barrier.wait()
            for _ in range(3):
                check_services()
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    svc = fresh("api")
    assert svc.total_checks == 12 and svc.consecutive_failures == 12
    assert svc.circuit.consecutive_failures == 12
    assert HealthCheck.objects.filter(service=svc).count() == 12


def test_renaming_a_service_renames_its_breaker(server):
    svc = make(server, "old")
    svc.name = "new"
    svc.save()
    assert CircuitBreaker.objects.filter(name="service:new").count() == 1
    assert not CircuitBreaker.objects.filter(name="service:old").exists()


def test_deleting_a_service_drops_its_breaker(server):
    make(server, "x").delete()
    assert not CircuitBreaker.objects.filter(name="service:x").exists()
