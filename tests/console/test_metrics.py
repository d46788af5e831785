"""GET /metrics: Prometheus text format, parsed by prometheus_client's own parser."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from orchestration.core.models import Job
from orchestration.loop.models import Action
from tests.console.conftest import add_run, make_service, make_worker

pytestmark = pytest.mark.django_db


def parse(text: str) -> dict[str, list]:
    """family name → samples (name, labels, value)."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families, family: str, sample: str | None = None, **labels) -> float:
    matches = [
        s.value
        for s in families[family]
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (family, labels, families[family])
    return matches[0]


def test_it_needs_credentials(anon_client):
    response = anon_client.get("/metrics")
    assert response.status_code == 401
    assert "credentials" in response.content.decode()


def test_a_bearer_token_is_enough_for_a_scraper(user_client, world):
    response = user_client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text;version=1.0.0,*/*;q=0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    parse(response.content.decode())  # parses


def test_every_capability_is_exported(user_client, world):
    families = parse(user_client.get("/metrics").content.decode())
    from orchestration.loop.models import LoopState

    state = LoopState.get()
    # control loop
    assert value(families, "orchestrator_health_score") == state.last_health_score
    assert value(families, "orchestrator_health_status", status=state.last_cycle["health_status"]) == 1
    assert value(families, "orchestrator_cycles", "orchestrator_cycles_total") == 2
    assert value(families, "orchestrator_cycle_duration_seconds") == pytest.approx(
        state.last_cycle["duration_ms"] / 1000
    )
    assert value(families, "orchestrator_loop_enabled") == (1 if state.enabled else 0)
    assert value(families, "orchestrator_cycles_last_hour") == 2
    assert (
        0
        < value(families, "orchestrator_cycle_duration_avg_seconds")
        <= value(families, "orchestrator_cycle_duration_max_seconds")
    )
    # queue by status and lane
    pending_default = Job.objects.filter(status="pending", lane="default").count()
    assert value(families, "orchestrator_jobs", status="pending", lane="default") == pending_default == 3
    assert value(families, "orchestrator_jobs", status="completed", lane="pipeline") == 3
    # actions by type and outcome
    action = Action.objects.first()
    expected = Action.objects.filter(action_type=action.action_type, status=action.status).count()
    got = value(
        families, "orchestrator_actions", "orchestrator_actions_total", type=action.action_type, outcome=action.status
    )
    assert got == expected
    # services: health, breaker, latency
    assert value(families, "orchestrator_service_up", service="api") == 1
    assert value(families, "orchestrator_service_up", service="db") == 0
    assert value(families, "orchestrator_service_circuit_state", service="db", state="open") == 1
    assert value(families, "orchestrator_service_circuit_state", service="db", state="closed") == 0
    assert value(families, "orchestrator_service_health", service="db", health="circuit_open") == 1
    assert value(families, "orchestrator_service_uptime_ratio", service="api") == pytest.approx(0.75)
    assert value(families, "orchestrator_service_check_latency_avg_seconds", service="api") == pytest.approx(0.12)
    assert value(families, "orchestrator_service_check_latency_max_seconds", service="api") == pytest.approx(0.13)
    assert (
        value(
            families,
            "orchestrator_service_checks",
            "orchestrator_service_checks_total",
            service="api",
            result="failure",
        )
        == 1
    )
    # workers: durations and scores
    assert value(families, "orchestrator_worker_last_score", worker="collector") == 41
    assert value(families, "orchestrator_worker_last_run_duration_seconds", worker="collector") == pytest.approx(1.5)
    assert value(families, "orchestrator_worker_run_duration_avg_seconds", worker="collector") == pytest.approx(1.15)
    assert (
        value(
            families, "orchestrator_worker_runs", "orchestrator_worker_runs_total", worker="collector", status="failed"
        )
        == 1
    )
    # anomalies and gates
    assert value(families, "orchestrator_open_anomalies", severity="high", code="HIGH_FAILURE_RATE") == 1
    assert value(families, "orchestrator_open_anomalies", severity="critical", code="") == 0
    assert value(families, "orchestrator_pipeline_jobs", status="needs_approval") == 1
    assert value(families, "orchestrator_pipeline_gate_waiting", stage="script") == 1
    assert value(families, "orchestrator_pipeline_gate_wait_seconds_max", stage="script") >= 0


def test_routing_is_exported(user_client, db):
    from orchestration.routing.executor import remember

    for ok in (True, True, False):
        remember(task_type="research", service="api", success=ok, execution_ms=200 if ok else None)
    families = parse(user_client.get("/metrics").content.decode())
    sample = "orchestrator_routed_tasks_total"
    assert value(families, "orchestrator_routed_tasks", sample, task_type="research", result="success") == 2
    assert value(families, "orchestrator_routed_tasks", sample, task_type="research", result="failure") == 1
    assert value(families, "orchestrator_routed_task_avg_seconds", task_type="research") == pytest.approx(0.2)
    assert value(families, "orchestrator_suggestions_pending") == 0


def test_the_query_count_does_not_grow_with_the_data(user_client, world):
    def scrape_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert user_client.get("/metrics").status_code == 200
        return len(ctx.captured_queries)

    small = scrape_queries()
    for i in range(30):
        make_service(f"svc-{i}")
        add_run(make_worker(f"worker-{i}"), success=i % 2 == 0, duration_ms=100 + i, score=50 + i)
    Action.objects.bulk_create(
        Action(cycle=99, action_type=f"type_{i % 7}", status="succeeded", created_at=timezone.now()) for i in range(200)
    )
    large = scrape_queries()
    assert large == small, f"{small} queries with little data, {large} with more"
