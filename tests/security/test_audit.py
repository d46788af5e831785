"""Every write is in the ledger with the person who made it.

Each API write and each console action is made once, successfully, by the staff user
"ops"; it must leave at least one new ledger entry whose actor is "ops". The tables
below must cover every write route the resolver finds, so a new write cannot be added
without saying how it is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from health.models import Service
from orchestration.core.models import LedgerEntry
from orchestration.fleet.models import Worker
from pipeline import engine
from tests.security.routes import PUBLIC, Route, all_routes, values_for
from tests.security.world import World

pytestmark = pytest.mark.django_db

ROUTES = {r.name: r for r in all_routes()}
ACTOR = "ops"  # the staff_user fixture


@dataclass
class Write:
    body: Callable[[World], dict[str, Any]] = lambda w: {}
    values: Callable[[World], dict[str, Any]] = lambda w: {}
    setup: Callable[[World], None] = lambda w: None
    statuses: set[int] = field(default_factory=lambda: {200, 201, 202, 204})


def _definition(w: World, name: str) -> dict[str, Any]:
    d = w.definition
    return {"name": name, "stages": d.stages, "gates": d.gates, "stage_timeouts": d.stage_timeouts, "lane": d.lane}


def _worker(name: str) -> dict[str, Any]:
    # HTTP: a python target is for holders of run_code, not every staff member (tests/security/test_runnables.py).
    target = {"type": "http", "method": "POST", "url": "{base_url}/collect"}
    return {"name": name, "category": "collection", "interval_seconds": 600, "target": target}


def _rule(name: str) -> dict[str, Any]:
    condition = {"field": "jobs.pending", "op": ">", "value": 500}
    return {"name": name, "conditions": [condition], "action_type": "retry_failed"}


def _deduction(name: str) -> dict[str, Any]:
    condition = [{"field": "jobs.pending", "op": ">", "value": 800}]
    return {"name": name, "condition": condition, "points": 5, "reason": "A backlog"}


def _policy(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "severities": ["high"],
        "tiers": [{"after_minutes": 10, "channels": [], "repeat_minutes": 30}],
    }


def _apply(w: World) -> None:
    w.approved_suggestion.apply(actor="someone-else", metrics={})


def _disable_worker(w: World) -> None:
    Worker.objects.filter(pk=w.worker.pk).update(enabled=False)


def _pause_worker(w: World) -> None:
    Worker.objects.filter(pk=w.worker.pk).update(paused=True, paused_reason="3 consecutive failures")


def _backfill_range(w: World) -> dict[str, Any]:
    end = timezone.now()
    return {"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat()}


def _disable_service(w: World) -> None:
    Service.objects.filter(pk=w.service.pk).update(enabled=False)


def _pause_pipeline(w: World) -> None:
    engine.reject(w.pipeline_job, w.pipeline_job.stage, actor="someone-else")


API_WRITES: dict[tuple[str, str], Write] = {
    ("orchestration-api:job-list", "POST"): Write(lambda w: {"kind": "noop"}),
    ("orchestration-api:job-cancel", "POST"): Write(),
    ("orchestration-api:job-retry", "POST"): Write(values=lambda w: {"pk": w.failed_job.pk}),
    ("orchestration-api:lane-list", "POST"): Write(lambda w: {"name": "audit", "concurrency_limit": 1}),
    ("orchestration-api:lane-detail", "PUT"): Write(lambda w: {"name": w.lane.name, "concurrency_limit": 3}),
    ("orchestration-api:lane-detail", "PATCH"): Write(lambda w: {"concurrency_limit": 4}),
    ("orchestration-api:lane-detail", "DELETE"): Write(),
    ("orchestration-api:rule-list", "POST"): Write(lambda w: _rule("audit")),
    ("orchestration-api:rule-detail", "PUT"): Write(lambda w: _rule(w.rule.name)),
    ("orchestration-api:rule-detail", "PATCH"): Write(lambda w: {"enabled": False}),
    ("orchestration-api:rule-detail", "DELETE"): Write(),
    ("orchestration-api:score-deduction-list", "POST"): Write(lambda w: _deduction("audited")),
    ("orchestration-api:score-deduction-detail", "PUT"): Write(lambda w: _deduction(w.deduction.name)),
    ("orchestration-api:score-deduction-detail", "PATCH"): Write(lambda w: {"points": 7}),
    ("orchestration-api:score-deduction-detail", "DELETE"): Write(),
    ("orchestration-api:worker-list", "POST"): Write(lambda w: _worker("audited")),
    ("orchestration-api:worker-detail", "PUT"): Write(lambda w: _worker(w.worker.name)),
    ("orchestration-api:worker-detail", "PATCH"): Write(lambda w: {"description": "audited"}),
    ("orchestration-api:worker-detail", "DELETE"): Write(),
    ("orchestration-api:worker-enable", "POST"): Write(setup=_disable_worker),
    ("orchestration-api:worker-disable", "POST"): Write(),
    ("orchestration-api:worker-trigger", "POST"): Write(),
    ("orchestration-api:worker-resume", "POST"): Write(setup=_pause_worker),
    ("orchestration-api:worker-backfill", "POST"): Write(_backfill_range),
    ("health-api:service-list", "POST"): Write(lambda w: {"name": "audited", "base_url": "http://127.0.0.1:9"}),
    ("health-api:service-detail", "PUT"): Write(lambda w: {"name": w.service.name, "base_url": "http://127.0.0.1:9"}),
    ("health-api:service-detail", "PATCH"): Write(lambda w: {"timeout_seconds": 2}),
    ("health-api:service-detail", "DELETE"): Write(),
    ("health-api:service-check", "POST"): Write(),
    ("health-api:service-enable", "POST"): Write(setup=_disable_service),
    ("health-api:service-disable", "POST"): Write(),
    ("health-api:service-reset-circuit", "POST"): Write(),
    ("health:trigger", "POST"): Write(),
    ("orchestrator:run-once", "POST"): Write(lambda w: {"dry_run": True}),
    ("orchestrator:enable", "POST"): Write(lambda w: {"interval_seconds": 5}),
    ("orchestrator:disable", "POST"): Write(),
    ("pipeline-api:definition-list", "POST"): Write(lambda w: _definition(w, "audited")),
    ("pipeline-api:definition-detail", "PUT"): Write(lambda w: _definition(w, w.definition.name)),
    ("pipeline-api:definition-detail", "PATCH"): Write(lambda w: {"description": "audited"}),
    ("pipeline-api:job-list", "POST"): Write(lambda w: {"slug": "audited", "intent": "audit"}),
    ("pipeline-api:job-approve", "POST"): Write(lambda w: {"stage": w.pipeline_job.stage}),
    ("pipeline-api:job-reject", "POST"): Write(lambda w: {"stage": w.pipeline_job.stage, "notes": "no"}),
    ("pipeline-api:job-resume", "POST"): Write(setup=_pause_pipeline),
    ("pipeline-api:job-cancel", "POST"): Write(),
    ("routing-api:tasks", "POST"): Write(lambda w: {"type": "render", "data": {"frame": 1}}),
    ("routing-api:suggestion-analyze", "POST"): Write(lambda w: {"time_window_hours": 1}),
    ("routing-api:suggestion-approve", "POST"): Write(),
    ("routing-api:suggestion-reject", "POST"): Write(),
    ("routing-api:suggestion-track", "POST"): Write(values=lambda w: {"pk": w.approved_suggestion.pk}),
    ("routing-api:context-list", "POST"): Write(lambda w: {"name": "audited", "data": {"a": 1}}),
    ("routing-api:context-detail", "PUT"): Write(lambda w: {"name": w.context.name, "data": {"a": 2}}),
    ("routing-api:context-detail", "PATCH"): Write(lambda w: {"data": {"a": 3}}),
    ("routing-api:context-detail", "DELETE"): Write(),
    ("routing-api:multiplier-list", "POST"): Write(lambda w: {"task_type": "audited", "multiplier": 1.5}),
    ("routing-api:multiplier-detail", "PUT"): Write(lambda w: {"task_type": w.multiplier.task_type, "multiplier": 3}),
    ("routing-api:multiplier-detail", "PATCH"): Write(lambda w: {"multiplier": 4}),
    ("routing-api:multiplier-detail", "DELETE"): Write(),
    ("orchestration-api:channel-list", "POST"): Write(lambda w: {"name": "audited", "url": "json://127.0.0.1:9/a"}),
    ("orchestration-api:channel-detail", "PUT"): Write(lambda w: {"name": w.channel.name, "url": "ntfy://audited"}),
    ("orchestration-api:channel-detail", "PATCH"): Write(lambda w: {"enabled": False}),
    ("orchestration-api:channel-detail", "DELETE"): Write(),
    ("orchestration-api:channel-test", "POST"): Write(),
    ("orchestration-api:action-approve", "POST"): Write(lambda w: {"notes": "go"}),
    ("orchestration-api:action-reject", "POST"): Write(lambda w: {"notes": "not now"}),
    ("orchestration-api:guardrail-resume", "POST"): Write(),
    ("orchestration-api:automation-policy-detail", "PUT"): Write(lambda w: {"mode": "automatic", "max_per_hour": 2}),
    ("orchestration-api:automation-policy-detail", "PATCH"): Write(lambda w: {"loop_limit": 3}),
    ("orchestration-api:escalation-policy-list", "POST"): Write(lambda w: _policy("audited")),
    ("orchestration-api:escalation-policy-detail", "PUT"): Write(lambda w: _policy(w.policy.name)),
    ("orchestration-api:escalation-policy-detail", "PATCH"): Write(lambda w: {"enabled": False}),
    ("orchestration-api:escalation-policy-detail", "DELETE"): Write(),
    ("orchestration-api:anomaly-acknowledge", "POST"): Write(lambda w: {"notes": "on it"}),
    ("orchestration-api:anomaly-resolve", "POST"): Write(lambda w: {"notes": "fixed"}),
    ("routing-api:suggestion-apply", "POST"): Write(values=lambda w: {"pk": w.approved_suggestion.pk}),
    ("routing-api:suggestion-revert", "POST"): Write(values=lambda w: {"pk": w.approved_suggestion.pk}, setup=_apply),
    ("health-api:maintenance-list", "POST"): Write(
        lambda w: {
            "name": "audited",
            "starts_at": "2026-01-01T00:00:00Z",
            "ends_at": "2026-01-02T00:00:00Z",
            "tags": ["a"],
        }
    ),
    ("health-api:maintenance-detail", "PUT"): Write(
        lambda w: {
            "name": w.maintenance.name,
            "starts_at": "2026-01-01T00:00:00Z",
            "ends_at": "2026-01-03T00:00:00Z",
            "all_services": True,
        }
    ),
    ("health-api:maintenance-detail", "PATCH"): Write(lambda w: {"all_services": False, "tags": ["b"]}),
    ("health-api:maintenance-detail", "DELETE"): Write(),
}

# POSTs that compute an answer and change nothing: no ledger entry to expect.
READ_ONLY_POSTS = {
    ("routing-api:route", "POST"): "a routing decision, nothing executed (API.md)",
    ("routing-api:prioritize", "POST"): "sorts the tasks it is given, stores nothing",
}

CONSOLE_WRITES: dict[str, Write] = {
    "console:loop-enable": Write(lambda w: {"interval_seconds": "5"}),
    "console:loop-disable": Write(),
    "console:loop-run-once": Write(lambda w: {"dry_run": "1"}),
    "console:service-check": Write(),
    "console:service-reset": Write(),
    "console:service-enable": Write(setup=_disable_service),
    "console:service-disable": Write(),
    "console:worker-trigger": Write(),
    "console:worker-enable": Write(setup=_disable_worker),
    "console:worker-disable": Write(),
    "console:worker-resume": Write(setup=_pause_worker),
    "console:pipeline-start": Write(lambda w: {"slug": "from-console", "intent": "x", "definition": w.definition.name}),
    "console:pipeline-decide": Write(lambda w: {"stage": w.pipeline_job.stage, "decision": "approve", "notes": ""}),
    "console:pipeline-resume": Write(setup=_pause_pipeline),
    "console:pipeline-cancel": Write(),
    "console:action-decide": Write(lambda w: {"decision": "approve", "notes": ""}),
    "console:guardrail-resume": Write(),
    "console:anomaly-acknowledge": Write(),
    "console:anomaly-resolve": Write(),
}


def test_every_api_write_is_in_the_table():
    found = {(r.name, m) for r in ROUTES.values() if r.is_api for m in r.writes}
    assert found == set(API_WRITES) | set(READ_ONLY_POSTS)


def test_every_console_action_is_in_the_table(staff_session: Client, world):
    actions = set()
    for route in ROUTES.values():
        if route.is_api or route.is_admin or route.name in PUBLIC:
            continue
        if staff_session.get(route.path(values_for(route, world))).status_code == 405:
            actions.add(route.name)
    assert actions == set(CONSOLE_WRITES)


def _new_entries(before: int) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(pk__gt=before).order_by("id"))


def _last_id() -> int:
    return LedgerEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


@pytest.mark.parametrize(("name", "method"), list(API_WRITES), ids=[f"{m} {n}" for n, m in API_WRITES])
def test_api_writes_record_their_actor(name: str, method: str, staff_client: APIClient, world):
    write = API_WRITES[(name, method)]
    route: Route = ROUTES[name]
    write.setup(world)
    path = route.path({**values_for(route, world), **write.values(world)})
    before = _last_id()
    response = getattr(staff_client, method.lower())(path, write.body(world), format="json")
    assert response.status_code in write.statuses, f"{method} {path}: {response.status_code} {response.content[:300]}"
    entries = _new_entries(before)
    assert entries, f"{method} {path} wrote no ledger entry"
    assert ACTOR in {e.actor for e in entries}, [(e.event_type, e.actor) for e in entries]


@pytest.mark.parametrize("name", list(CONSOLE_WRITES), ids=str)
def test_console_actions_record_who_clicked(name: str, staff_session: Client, world):
    write = CONSOLE_WRITES[name]
    route: Route = ROUTES[name]
    write.setup(world)
    path = route.path({**values_for(route, world), **write.values(world)})
    before = _last_id()
    response = staff_session.post(path, write.body(world))
    assert response.status_code == 302, f"POST {path}: {response.status_code}"
    entries = _new_entries(before)
    assert ACTOR in {e.actor for e in entries}, [(e.event_type, e.actor) for e in entries]


def test_the_approver_of_a_gate_is_the_signed_in_user(staff_client: APIClient, world):
    job = world.pipeline_job
    stage = job.stage
    staff_client.post(f"/api/v1/pipeline/jobs/{job.pk}/approve", {"stage": stage, "notes": "ok"}, format="json")
    entry = LedgerEntry.objects.filter(event_type__contains="approve").latest("id")
    assert entry.actor == ACTOR
    decision = job.decisions.latest("id")
    assert (decision.stage, decision.decision, decision.decided_by) == (stage, "approved", ACTOR)
