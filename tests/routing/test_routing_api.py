"""Routing endpoints: contract, auth, bad input."""

from __future__ import annotations

import pytest

from health.models import Service
from orchestration.core.models import Job, LedgerEntry
from orchestration.routing import executor
from orchestration.routing.models import Suggestion, TaskContext
from tests.support.http_services import FakeService

pytestmark = pytest.mark.django_db

WRITES = [
    ("/api/v1/routing/route", {"type": "email_campaign"}),
    ("/api/v1/routing/tasks", {"type": "email_campaign"}),
    ("/api/v1/routing/prioritize", {"tasks": []}),
    ("/api/v1/suggestions/analyze", {}),
    ("/api/v1/routing/contexts/", {"name": "c1"}),
]
READS = [
    "/api/v1/routing/stats",
    "/api/v1/routing/memory",
    "/api/v1/suggestions/",
    "/api/v1/routing/modules",
    "/api/v1/routing/contexts/",
    "/api/v1/routing/multipliers/",
]


@pytest.fixture
def service():
    fake = FakeService("fast")
    Service.objects.create(name="email-ai", base_url=fake.url, capabilities=["email_campaign"])
    yield fake
    fake.stop()


@pytest.mark.parametrize("path,body", WRITES)
def test_writes_need_credentials_and_staff(anon_client, user_client, path, body):
    assert anon_client.post(path, body, format="json").status_code == 401
    assert user_client.post(path, body, format="json").status_code == 403


@pytest.mark.parametrize("path", READS)
def test_reads_need_credentials(anon_client, user_client, path):
    assert anon_client.get(path).status_code == 401
    assert user_client.get(path).status_code == 200


def test_route_returns_a_decision_and_executes_nothing(staff_client, service):
    body = staff_client.post(
        "/api/v1/routing/route", {"type": "email_campaign", "priority": "high"}, format="json"
    ).json()
    assert body["primary_service"] == "email-ai"
    assert body["endpoint"] == f"{service.url}/process"
    assert body["fallback_services"] == []
    assert body["retry_strategy"] == {"max_retries": 3, "backoff": "exponential", "timeout": 30}
    assert body["priority_score"] == 3.0 and body["confidence"] == 0.7 and body["reasoning"]
    assert service.count == 0 and not Job.objects.exists()


@pytest.mark.django_db(transaction=True)  # committed, so the queue runs the job (inline under test)
def test_tasks_execute_through_the_job_queue_and_wait(staff_client, service):
    response = staff_client.post(
        "/api/v1/routing/tasks",
        {"type": "email_campaign", "priority": "normal", "data": {"subject": "hi"}, "wait": True},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "completed" and body["service"] == "email-ai" and body["attempts"] == 1
    assert body["result"]["response"] == {"processed": True, "echo": {"subject": "hi"}}
    assert Job.objects.get(pk=body["job_id"]).kind == "routing.task"
    assert LedgerEntry.objects.filter(event_type="job.created", actor="ops").exists()
    stats = staff_client.get("/api/v1/routing/stats").json()
    assert stats["total_routes"] == 1 and stats["service_distribution"] == {"email-ai": 1}
    assert stats["by_type"]["email_campaign"]["services"]["email-ai"]["success_rate"] == 1.0
    memory = staff_client.get("/api/v1/routing/memory", {"type": "email_campaign"}).json()
    assert len(memory["short_term"]) == 1 and memory["short_term"][0]["success"] is True
    assert memory["success_patterns"][0] == {"task_type": "email_campaign", "service_name": "email-ai", "successes": 1}


def test_prioritize_the_seed_example(staff_client):
    tasks = [
        {"type": "email_campaign", "priority": "normal"},
        {"type": "fraud_detection", "priority": "high"},
        {"type": "video_generation", "priority": "high"},
        {"type": "finance", "priority": "critical"},
    ]
    body = staff_client.post("/api/v1/routing/prioritize", {"tasks": tasks}, format="json").json()
    assert [(t["type"], t["score"]) for t in body["tasks"]] == [
        ("finance", 6.0),
        ("fraud_detection", 4.5),
        ("video_generation", 2.4),
        ("email_campaign", 2.0),
    ]


def test_multipliers_are_editable(staff_client):
    response = staff_client.patch("/api/v1/routing/multipliers/email_campaign/", {"multiplier": 2}, format="json")
    assert response.status_code == 200
    body = staff_client.post(
        "/api/v1/routing/prioritize", {"tasks": [{"type": "email_campaign"}]}, format="json"
    ).json()
    assert body["tasks"][0]["score"] == 4.0


@pytest.mark.parametrize(
    "path,body,field",
    [
        ("/api/v1/routing/route", {}, "type"),
        ("/api/v1/routing/route", {"type": "x", "priority": "urgent"}, "priority"),
        ("/api/v1/routing/route", {"type": "x", "strategy": "psychic"}, "strategy"),
        ("/api/v1/routing/route", {"type": "x", "requirements": {"capabilities": "a"}}, "requirements"),
        ("/api/v1/routing/tasks", {"type": "email_campaign", "data": [1]}, "data"),
        ("/api/v1/routing/prioritize", {"tasks": "all"}, "tasks"),
        ("/api/v1/routing/prioritize", {"tasks": [{"priority": "whenever"}]}, "tasks"),
        ("/api/v1/suggestions/analyze", {"time_window_hours": -1}, "time_window_hours"),
    ],
)
def test_bad_input_is_a_400_and_writes_nothing(staff_client, path, body, field):
    response = staff_client.post(path, body, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not Job.objects.exists() and not Suggestion.objects.exists()


def test_no_capable_service_is_a_409_saying_why(staff_client):
    response = staff_client.post("/api/v1/routing/tasks", {"type": "teleport"}, format="json")
    assert response.status_code == 409 and "teleport" in response.json()["detail"]
    assert not Job.objects.exists()


def test_suggestion_decisions(staff_client):
    suggestion = Suggestion.objects.create(kind="slow_service", subject="a:b", title="a is slow")
    assert (
        staff_client.post(f"/api/v1/suggestions/{suggestion.pk}/approve", {"notes": "ok"}, format="json").json()[
            "status"
        ]
        == "approved"
    )
    second = staff_client.post(f"/api/v1/suggestions/{suggestion.pk}/reject", {}, format="json")
    assert second.status_code == 409
    assert staff_client.post("/api/v1/suggestions/99999/approve").status_code == 404
    tracked = staff_client.post(f"/api/v1/suggestions/{suggestion.pk}/track").json()
    assert tracked["status"] == "applied" and "after" in tracked["impact"]
    assert LedgerEntry.objects.filter(event_type="routing.suggestion_approved", actor="ops").exists()


def test_analyze_endpoint(staff_client, service):
    for _ in range(12):
        executor.remember(task_type="email_campaign", service="email-ai", success=False, execution_ms=50)
    body = staff_client.post("/api/v1/suggestions/analyze", {"time_window_hours": 1}, format="json").json()
    assert body["outcomes"] == 12
    assert [s["kind"] for s in body["suggestions"]] == ["failing_service"]
    assert body["suggestions"][0]["priority"] == "high"


def test_contexts_are_shared_by_name(staff_client):
    assert (
        staff_client.post(
            "/api/v1/routing/contexts/", {"name": "q1-launch", "data": {"audience": "tech"}}, format="json"
        ).status_code
        == 201
    )
    assert staff_client.get("/api/v1/routing/contexts/q1-launch/").json()["data"] == {"audience": "tech"}
    assert staff_client.post("/api/v1/routing/contexts/", {"name": "q1-launch"}, format="json").status_code == 400
    assert TaskContext.objects.count() == 1


def test_modules_health_summary(staff_client, service):
    body = staff_client.get("/api/v1/routing/modules").json()
    assert body["health_summary"] == {"total": 1, "enabled": 1, "healthy": 0}


def test_modules_are_grouped_by_category(staff_client, service):
    created = staff_client.post(
        "/api/v1/services/",
        {"name": "vault", "base_url": "http://127.0.0.1:9", "category": "storage", "capabilities": ["finance"]},
        format="json",
    )
    assert created.status_code == 201 and created.json()["category"] == "storage"
    assert (
        staff_client.post(
            "/api/v1/services/",
            {"name": "bad", "base_url": "http://127.0.0.1:9", "category": "no spaces"},
            format="json",
        ).status_code
        == 400
    )
    groups = staff_client.get("/api/v1/routing/modules").json()["by_category"]
    assert [m["name"] for m in groups["storage"]] == ["vault"]
    assert [m["name"] for m in groups["uncategorised"]] == ["email-ai"]
