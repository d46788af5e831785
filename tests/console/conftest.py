from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from health.models import CircuitBreaker, HealthCheck, Service
from orchestration.core.jobs.queue import enqueue
from orchestration.core.models import Anomaly
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.loop.models import LoopState


@pytest.fixture(autouse=True)
def _fast_pipeline(settings):
    settings.PIPELINE_PLACEHOLDER_SECONDS = 0


@pytest.fixture
def staff_browser(staff_session) -> Client:
    """A session-signed-in staff member (the console uses sessions, not tokens)."""
    return staff_session


@pytest.fixture
def viewer_browser(viewer_session) -> Client:
    return viewer_session


@pytest.fixture
def approver_browser(db) -> Client:
    user = get_user_model().objects.create_user("reviewer", password="pw-reviewer-1")
    user.user_permissions.add(Permission.objects.get(codename="approve_gate", content_type__app_label="pipeline"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def waiting_job(django_capture_on_commit_callbacks):
    """A pipeline job of the default definition, stopped at its first gate (script)."""
    from pipeline import engine

    with django_capture_on_commit_callbacks(execute=True):
        job = engine.create_job("explainer", "Explain the orchestrator", actor="writer")  # nobody approves their own
    job.refresh_from_db()
    assert (job.status, job.stage) == ("needs_approval", "script")
    return job


def make_service(name: str, *, health: str = "healthy", breaker: str = "closed", **fields) -> Service:
    service = Service.objects.create(name=name, base_url="http://127.0.0.1:9", health=health, **fields)
    if breaker != "closed":
        CircuitBreaker.objects.filter(pk=service.circuit_id).update(state=breaker, opened_at=timezone.now())
        service.refresh_from_db()
    return service


def add_checks(service: Service, times_ms: list[float | None]) -> None:
    now = timezone.now()
    rows = [
        HealthCheck(
            service=service,
            checked_at=now - timedelta(seconds=30 * (len(times_ms) - i)),
            success=ms is not None,
            health="healthy" if ms is not None else "unhealthy",
            status_code=200 if ms is not None else 503,
            response_time_ms=ms,
            error_message="" if ms is not None else "HTTP 503",
        )
        for i, ms in enumerate(times_ms)
    ]
    HealthCheck.objects.bulk_create(rows)
    ok = sum(1 for ms in times_ms if ms is not None)
    Service.objects.filter(pk=service.pk).update(
        total_checks=len(times_ms),
        successful_checks=ok,
        last_check_at=now,
        last_response_time_ms=next((ms for ms in reversed(times_ms) if ms is not None), None),
    )


def make_worker(name: str = "collector", **fields) -> Worker:
    defaults = {
        "category": "collection",
        "interval_seconds": 300,
        "timeout_seconds": 30,
        "target": {"type": "python", "path": "orchestration.fleet.demo_targets.collect_trending"},
    }
    return Worker.objects.create(name=name, **{**defaults, **fields})


def add_run(worker: Worker, *, success: bool, duration_ms: float, score: float) -> WorkerRun:
    now = timezone.now()
    run = WorkerRun.objects.create(
        worker=worker,
        status="succeeded" if success else "failed",
        success=success,
        started_at=now - timedelta(milliseconds=duration_ms),
        completed_at=now,
        duration_ms=duration_ms,
        error="" if success else "boom",
    )
    ScoreReport.objects.create(
        worker=worker,
        run=run,
        execution_id=run.execution_id,
        success=success,
        duration_ms=duration_ms,
        reliability_score=score,
        performance_score=score,
        data_quality_score=score,
        resource_score=score,
        overall_score=score,
    )
    Worker.objects.filter(pk=worker.pk).update(
        last_run_at=now, last_status=run.status, last_score=score, **({"last_success_at": now} if success else {})
    )
    return run


@pytest.fixture
def world(db, waiting_job):
    """A small living system: services (one with an open breaker), a worker with runs,
    an anomaly, queued jobs, a waiting gate and two finished cycles."""
    from orchestration.loop.cycle import run_cycle

    api = make_service("api", description="Public API")
    db_service = make_service("db", health="unhealthy", breaker="open", last_error="connection refused")
    api.depends_on.add(db_service)
    add_checks(api, [120, 130, None, 110])
    add_checks(db_service, [None, None])
    worker = make_worker()
    add_run(worker, success=True, duration_ms=800, score=92)
    add_run(worker, success=False, duration_ms=1500, score=41)
    Anomaly.objects.create(code="HIGH_FAILURE_RATE", severity="high", subject="worker:collector", worker=worker)
    for _ in range(3):
        enqueue("noop", {}, not_before=timezone.now() + timedelta(hours=1))
    LoopState.get()
    run_cycle(manual=True, actor="tests")
    run_cycle(manual=True, actor="tests")
    return {"api": api, "db": db_service, "worker": worker, "job": waiting_job}
