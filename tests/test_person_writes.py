"""A person's write is one model method with its ledger entry, and the API, the console
and the admin all call it.

Each write below is made once through every surface that offers it, by the same person,
from the same starting state; each must leave the same effect and exactly the same
ledger entry. (The console has no delete: deleting is the API's and the admin's.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from health.models import CircuitBreaker, Service
from orchestration.core.models import LedgerEntry
from orchestration.fleet.models import Worker
from orchestration.loop.models import LoopState, Rule

pytestmark = pytest.mark.django_db

ACTOR = "ops"
LONG_AGO = timezone.now() - timedelta(days=3)
HTTP_TARGET = {"type": "http", "method": "POST", "url": "{base_url}/collect"}


@dataclass
class Person:
    """One superuser, signed in to the API with a token and to the console and admin
    with a session."""

    api: APIClient
    browser: Client


@pytest.fixture
def person(django_user_model) -> Person:
    user = django_user_model.objects.create_superuser(ACTOR, "ops@example.com", "pw-ops-123")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {Token.objects.create(user=user).key}")
    browser = Client()
    browser.force_login(user)
    return Person(api, browser)


def entries_after(last_id: int) -> list[tuple[Any, ...]]:
    return list(
        LedgerEntry.objects.filter(id__gt=last_id)
        .order_by("id")
        .values_list("event_type", "severity", "subject", "message", "data", "actor")
    )


def last_entry_id() -> int:
    return LedgerEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def admin_action(browser: Client, model: str, action: str, *pks: int, **extra: str):
    return browser.post(reverse(f"admin:{model}_changelist"), {"action": action, "_selected_action": pks, **extra})


Surface = Callable[[Person], Any]


def made(response, status: int) -> None:
    assert response.status_code == status, response.content[:500]


# --- the control loop's switch ---------------------------------------------------------------
def _loop(enabled: bool) -> None:
    LoopState.get()
    LoopState.objects.update(
        enabled=enabled,
        interval_seconds=5,
        next_cycle_due_at=timezone.now() + timedelta(hours=1),
        updated_at=LONG_AGO,
    )


def _enable_api(p: Person) -> None:
    response = p.api.post("/orchestrator/enable", {"interval_seconds": 5}, format="json")
    made(response, 200)
    assert response.json() == {
        "status": "ok",
        "orchestrator": {"status": "started", "interval_seconds": 5.0, "enabled": True},
    }


LOOP_ENABLE: dict[str, Surface] = {
    "api": _enable_api,
    "console": lambda p: made(p.browser.post("/console/loop/enable", {"interval_seconds": "5"}), 302),
    "admin action": lambda p: made(admin_action(p.browser, "orchestration_loopstate", "enable_loop", 1), 302),
    "admin form": lambda p: made(
        p.browser.post(
            reverse("admin:orchestration_loopstate_change", args=[1]), {"enabled": "on", "interval_seconds": "5"}
        ),
        302,
    ),
}


@pytest.mark.parametrize("surface", LOOP_ENABLE)
def test_it_enables_the_loop_alike_from_every_surface(person, surface):
    _loop(enabled=False)
    since = last_entry_id()
    LOOP_ENABLE[surface](person)
    state = LoopState.get()
    assert (state.enabled, state.interval_seconds, state.next_cycle_due_at) == (True, 5, None)
    assert state.updated_at > LONG_AGO
    assert entries_after(since) == [
        ("orchestrator.enabled", "info", "", "Control loop enabled, every 5s", {"interval_seconds": 5.0}, ACTOR)
    ]


def _disable_api(p: Person) -> None:
    response = p.api.post("/orchestrator/disable")
    made(response, 200)
    assert response.json() == {"status": "ok", "orchestrator": {"status": "stopped", "enabled": False}}


LOOP_DISABLE: dict[str, Surface] = {
    "api": _disable_api,
    "console": lambda p: made(p.browser.post("/console/loop/disable"), 302),
    "admin action": lambda p: made(admin_action(p.browser, "orchestration_loopstate", "disable_loop", 1), 302),
    "admin form": lambda p: made(
        p.browser.post(reverse("admin:orchestration_loopstate_change", args=[1]), {"interval_seconds": "5"}), 302
    ),
}


@pytest.mark.parametrize("surface", LOOP_DISABLE)
def test_it_disables_the_loop_alike_from_every_surface(person, surface):
    _loop(enabled=True)
    since = last_entry_id()
    LOOP_DISABLE[surface](person)
    state = LoopState.get()
    assert (state.enabled, state.interval_seconds) == (False, 5)
    assert state.updated_at > LONG_AGO
    assert entries_after(since) == [("orchestrator.disabled", "info", "", "Control loop disabled", {}, ACTOR)]


def test_the_admin_form_writes_only_what_changed(person):
    _loop(enabled=True)
    # A cycle finished after the page was loaded: saving the form must not undo it.
    LoopState.objects.update(cycle_count=41, lease_owner="runner-1")
    since = last_entry_id()
    page = reverse("admin:orchestration_loopstate_change", args=[1])
    made(person.browser.post(page, {"enabled": "on", "interval_seconds": "5", "dry_run": "on"}), 302)
    state = LoopState.get()
    assert (state.dry_run, state.enabled, state.cycle_count, state.lease_owner) == (True, True, 41, "runner-1")
    assert state.updated_at > LONG_AGO
    assert entries_after(since) == [
        ("orchestrator.settings_changed", "info", "", "Loop settings changed: dry_run", {"dry_run": True}, ACTOR)
    ]


# --- one cycle now ------------------------------------------------------------------------
RUN_ONCE: dict[str, Surface] = {
    "api": lambda p: made(p.api.post("/orchestrator/run-once", {"dry_run": True}, format="json"), 200),
    "console": lambda p: made(p.browser.post("/console/loop/run-once", {"dry_run": "1"}), 302),
    "admin action": lambda p: made(admin_action(p.browser, "orchestration_loopstate", "dry_run_cycle", 1), 302),
}


@pytest.mark.parametrize("surface", RUN_ONCE)
def test_it_runs_one_dry_cycle_alike_from_every_surface(person, surface):
    _loop(enabled=False)  # a person's run-once ignores the switch
    since = last_entry_id()
    RUN_ONCE[surface](person)
    state = LoopState.get()
    assert state.cycle_count == 1 and state.last_cycle["dry_run"] is True
    entries = entries_after(since)
    assert [(e[0], e[5]) for e in entries] == [("orchestrator.cycle_idle", ACTOR)]
    assert {k: entries[0][4][k] for k in ("cycle", "dry_run", "actions")} == {"cycle": 1, "dry_run": True, "actions": 0}


# --- a worker's switch ----------------------------------------------------------------------
def _worker(enabled: bool) -> Worker:
    worker = Worker.objects.create(
        name="collector", category="collection", interval_seconds=300, target=HTTP_TARGET, enabled=enabled
    )
    Worker.objects.filter(pk=worker.pk).update(updated_at=LONG_AGO)
    return worker


def _worker_switch(enabled: bool) -> dict[str, Surface]:
    verb = "enable" if enabled else "disable"

    def api(p: Person) -> None:
        response = p.api.post(f"/api/v1/workers/collector/{verb}")
        made(response, 200)
        assert response.json()["enabled"] is enabled

    return {
        "api": api,
        "console": lambda p: made(p.browser.post(f"/workers/collector/{verb}"), 302),
        "admin action": lambda p: made(
            admin_action(p.browser, "orchestration_worker", f"{verb}_workers", Worker.objects.get(name="collector").pk),
            302,
        ),
    }


@pytest.mark.parametrize("enabled", [True, False], ids=["enable", "disable"])
@pytest.mark.parametrize("surface", ["api", "console", "admin action"])
def test_it_switches_a_worker_alike_from_every_surface(person, surface, enabled):
    _worker(enabled=not enabled)
    assert (Worker.objects.get(name="collector").next_due_at is not None) is not enabled
    since = last_entry_id()
    press = _worker_switch(enabled)[surface]
    press(person)
    worker = Worker.objects.get(name="collector")
    assert worker.enabled is enabled and worker.updated_at > LONG_AGO
    # The schedule's next due time follows the switch.
    assert (worker.next_due_at is not None) is enabled
    state = "enabled" if enabled else "disabled"
    expected = [(f"worker.{state}", "info", "worker:collector", f"Worker collector {state}", {}, ACTOR)]
    assert entries_after(since) == expected
    # Pressing the switch again changes nothing and writes nothing.
    press(person)
    assert entries_after(since) == expected


# --- a service's switch ------------------------------------------------------------------------
def _service_switch(enabled: bool) -> dict[str, Surface]:
    verb = "enable" if enabled else "disable"

    def api(p: Person) -> None:
        response = p.api.post(f"/api/v1/services/api/{verb}")
        made(response, 200)
        assert response.json()["enabled"] is enabled

    return {
        "api": api,
        "console": lambda p: made(p.browser.post(f"/services/api/{verb}"), 302),
        "admin action": lambda p: made(admin_action(p.browser, "health_service", verb, Service.objects.get().pk), 302),
    }


@pytest.mark.parametrize("enabled", [True, False], ids=["enable", "disable"])
@pytest.mark.parametrize("surface", ["api", "console", "admin action"])
def test_it_switches_a_service_alike_from_every_surface(person, surface, enabled):
    Service.objects.create(name="api", base_url="http://127.0.0.1:9", enabled=not enabled)
    Service.objects.update(updated_at=LONG_AGO, next_check_at=timezone.now() + timedelta(hours=1))
    since = last_entry_id()
    press = _service_switch(enabled)[surface]
    press(person)
    service = Service.objects.get()
    assert service.enabled is enabled and service.updated_at > LONG_AGO and service.next_check_at is None
    state = "enabled" if enabled else "disabled"
    expected = [(f"health.service_{state}", "info", "service:api", f"Service api {state} by ops", {}, ACTOR)]
    assert entries_after(since) == expected
    press(person)
    assert entries_after(since) == expected


# --- a service's circuit --------------------------------------------------------------------
def _tripped_service() -> Service:
    service = Service.objects.create(name="api", base_url="http://127.0.0.1:9")
    CircuitBreaker.objects.filter(pk=service.circuit_id).update(
        state="open", consecutive_failures=5, opened_at=timezone.now()
    )
    Service.objects.filter(pk=service.pk).update(
        health="circuit_open", next_check_at=timezone.now() + timedelta(hours=1), updated_at=LONG_AGO
    )
    return service


def _reset_api(p: Person) -> None:
    response = p.api.post("/api/v1/services/api/reset-circuit")
    made(response, 200)
    assert (response.json()["circuit_breaker_state"], response.json()["health"]) == ("closed", "unknown")


RESET: dict[str, Surface] = {
    "api": _reset_api,
    "console": lambda p: made(p.browser.post("/services/api/reset-circuit"), 302),
    "admin service action": lambda p: made(
        admin_action(p.browser, "health_service", "reset_circuit", Service.objects.get().pk), 302
    ),
    "admin breaker action": lambda p: made(
        admin_action(p.browser, "health_circuitbreaker", "reset", Service.objects.get().circuit_id), 302
    ),
}


@pytest.mark.parametrize("surface", RESET)
def test_it_resets_a_circuit_alike_from_every_surface(person, surface):
    _tripped_service()
    since = last_entry_id()
    RESET[surface](person)
    service = Service.objects.select_related("circuit").get()
    assert (service.circuit.state, service.circuit.consecutive_failures, service.circuit.opened_at) == (
        "closed",
        0,
        None,
    )
    # Not re-checked yet, and due for a check at once.
    assert (service.health, service.next_check_at) == ("unknown", None)
    assert service.updated_at > LONG_AGO
    assert entries_after(since) == [
        (
            "health.circuit_reset",
            "info",
            "service:api",
            "Circuit service:api reset to closed by ops (was open)",
            {"previous_state": "open"},
            ACTOR,
        )
    ]


# --- deleting, with the dependency guard ------------------------------------------------------
def _delete_surfaces(api_path: str, model: str) -> dict[str, Callable[[Person, int, int], None]]:
    """Each surface's delete of the object ``pk``; ``status`` is the API's answer. A
    refused delete in the admin shows its confirmation page again (200), listing why."""

    def api(p: Person, pk: int, status: int) -> None:
        made(p.api.delete(api_path), status)

    def admin_page(p: Person, pk: int, status: int) -> None:
        response = p.browser.post(reverse(f"admin:{model}_delete", args=[pk]), {"post": "yes"})
        made(response, 302 if status == 204 else 200)

    def admin_bulk(p: Person, pk: int, status: int) -> None:
        response = admin_action(p.browser, model, "delete_selected", pk, post="yes")
        made(response, 302 if status == 204 else 200)

    return {"api": api, "admin page": admin_page, "admin bulk action": admin_bulk}


SERVICE_DELETE = _delete_surfaces("/api/v1/services/db/", "health_service")


@pytest.mark.parametrize("surface", SERVICE_DELETE)
def test_it_refuses_to_delete_a_service_others_need_from_every_surface(person, surface):
    db = Service.objects.create(name="db", base_url="http://127.0.0.1:9")
    Service.objects.create(name="api", base_url="http://127.0.0.1:9").depends_on.add(db)
    since = last_entry_id()
    SERVICE_DELETE[surface](person, db.pk, 409)
    assert Service.objects.filter(name="db").exists()
    assert entries_after(since) == []
    if surface == "api":
        assert person.api.delete("/api/v1/services/db/").json() == {"detail": "Required by api"}
    else:
        page = person.browser.get(reverse("admin:health_service_delete", args=[db.pk])).content.decode()
        assert "db: required by api" in page


@pytest.mark.parametrize("surface", SERVICE_DELETE)
def test_it_deletes_a_service_nothing_enabled_needs_alike_from_every_surface(person, surface):
    db = Service.objects.create(name="db", base_url="http://127.0.0.1:9")
    Service.objects.create(name="api", base_url="http://127.0.0.1:9", enabled=False).depends_on.add(db)
    since = last_entry_id()
    SERVICE_DELETE[surface](person, db.pk, 204)
    assert list(Service.objects.values_list("name", flat=True)) == ["api"]
    assert entries_after(since) == [("service.deleted", "info", "service:db", "Service db deleted", {}, ACTOR)]


WORKER_DELETE = _delete_surfaces("/api/v1/workers/upstream/", "orchestration_worker")


def _workers(downstream_depends: bool) -> Worker:
    upstream = Worker.objects.create(name="upstream", category="collection", interval_seconds=300, target=HTTP_TARGET)
    Worker.objects.create(
        name="downstream",
        category="aggregation",
        interval_seconds=300,
        target=HTTP_TARGET,
        optional_depends_on=["upstream"] if downstream_depends else [],
    )
    return upstream


@pytest.mark.parametrize("surface", WORKER_DELETE)
def test_it_refuses_to_delete_a_worker_others_need_from_every_surface(person, surface):
    upstream = _workers(downstream_depends=True)
    since = last_entry_id()
    WORKER_DELETE[surface](person, upstream.pk, 409)
    assert Worker.objects.filter(name="upstream").exists()
    assert Worker.objects.get(name="upstream").next_due_at is not None
    assert entries_after(since) == []
    if surface == "api":
        assert person.api.delete("/api/v1/workers/upstream/").json() == {"detail": "Required by downstream"}
    else:
        page = person.browser.get(reverse("admin:orchestration_worker_delete", args=[upstream.pk])).content.decode()
        assert "upstream: required by downstream" in page


@pytest.mark.parametrize("surface", WORKER_DELETE)
def test_it_deletes_a_worker_nothing_needs_alike_from_every_surface(person, surface):
    upstream = _workers(downstream_depends=False)
    since = last_entry_id()
    WORKER_DELETE[surface](person, upstream.pk, 204)
    assert list(Worker.objects.filter(builtin=False).values_list("name", flat=True)) == ["downstream"]
    assert entries_after(since) == [("worker.deleted", "info", "worker:upstream", "Worker upstream deleted", {}, ACTOR)]


def test_the_admin_deletes_a_whole_chain_selected_together_downstream_first(person):
    _workers(downstream_depends=True)
    since = last_entry_id()
    made(
        admin_action(
            person.browser,
            "orchestration_worker",
            "delete_selected",
            *Worker.objects.filter(builtin=False).values_list("pk", flat=True),
            post="yes",
        ),
        302,
    )
    assert not Worker.objects.filter(builtin=False).exists()
    assert [(e[0], e[2]) for e in entries_after(since)] == [
        ("worker.deleted", "worker:downstream"),
        ("worker.deleted", "worker:upstream"),
    ]


# --- a rule's switch (the admin's; the API edits rules with PATCH) ------------------------------
def test_the_admin_switches_a_rule_with_its_timestamp_and_one_entry(person):
    rule = Rule.objects.create(name="audit", conditions=[], action_type="retry_failed")
    Rule.objects.filter(pk=rule.pk).update(updated_at=LONG_AGO)
    since = last_entry_id()
    for _press in range(2):
        made(admin_action(person.browser, "orchestration_rule", "disable_rules", rule.pk), 302)
    rule.refresh_from_db()
    assert rule.enabled is False and rule.updated_at > LONG_AGO
    assert entries_after(since) == [("rule.disabled", "info", "rule:audit", "Rule audit disabled", {}, ACTOR)]
