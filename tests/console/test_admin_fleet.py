"""Admin polish of services, pipelines and the fleet: console links, the schedule
reachable from its worker, ledgered edits, the API's validation on forms."""

from __future__ import annotations

import pytest
from django.test import Client

from health.models import Service
from orchestration.core.models import LedgerEntry
from pipeline.models import PipelineDefinition
from tests.console.conftest import add_checks, add_run, make_service, make_worker

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(db) -> Client:
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@localhost", "pw-root-123"))
    return client


def test_services_link_to_their_console_page_checks_and_breaker(admin_browser):
    service = make_service("api")
    add_checks(service, [100, None])
    html = admin_browser.get("/admin/health/service/").content.decode()
    assert '<a href="/services/api/">console</a>' in html
    assert f"/admin/health/healthcheck/?service__id__exact={service.pk}" in html
    assert f"/admin/health/circuitbreaker/{service.circuit_id}/change/" in html
    checks = admin_browser.get(f"/admin/health/healthcheck/?service__id__exact={service.pk}")
    assert checks.status_code == 200 and "2 health checks" in checks.content.decode()
    breakers = admin_browser.get("/admin/health/circuitbreaker/").content.decode()
    assert '<a href="/services/api/">service api</a>' in breakers
    change = admin_browser.get(f"/admin/health/service/{service.pk}/change/").content.decode()
    assert "/services/api/" in change  # "View on site" opens the console page


def test_service_edits_are_ledgered_and_keep_the_dependency_guard(admin_browser):
    db = make_service("db")
    api = make_service("api")
    api.depends_on.add(db)
    form = {
        "name": "db", "description": "", "base_url": "http://127.0.0.1:9", "health_path": "/health",
        "enabled": "", "timeout_seconds": "5", "check_interval_seconds": "30", "failure_threshold": "5",
        "success_threshold": "2", "open_timeout_seconds": "60", "capabilities": "[]", "weight": "1",
    }  # fmt: skip
    response = admin_browser.post(f"/admin/health/service/{db.pk}/change/", form, follow=True)
    assert response.status_code == 200
    assert "stays enabled: required by api" in response.content.decode()
    assert Service.objects.get(name="db").enabled is True
    assert LedgerEntry.objects.filter(event_type="service.updated", subject="service:db", actor="root").exists()


def test_a_worker_links_to_its_schedule_runs_and_console(admin_browser):
    worker = make_worker("collector")
    add_run(worker, success=True, duration_ms=120, score=95)
    change = admin_browser.get(f"/admin/orchestration/worker/{worker.pk}/change/").content.decode()
    assert '<ul class="next-runs">' in change and f"/admin/orchestration/worker/{worker.pk}/backfill/" in change
    assert "/workers/collector/" in change
    listing = admin_browser.get("/admin/orchestration/worker/").content.decode()
    assert f"/admin/orchestration/workerrun/?worker__id__exact={worker.pk}" in listing
    for url in (
        f"/admin/orchestration/workerrun/?worker__id__exact={worker.pk}",
        f"/admin/orchestration/scorereport/?worker__id__exact={worker.pk}",
        f"/admin/orchestration/anomaly/?worker={worker.pk}",
        f"/admin/orchestration/worker/{worker.pk}/backfill/",
    ):
        assert admin_browser.get(url).status_code == 200, url
    runs = admin_browser.get("/admin/orchestration/workerrun/").content.decode()
    assert '<a href="/workers/collector/">collector</a>' in runs


def test_a_bad_pipeline_definition_is_refused_on_the_form(admin_browser):
    form = {
        "name": "broken", "description": "", "stages": '["a", "a"]', "gates": "{}", "stage_timeouts": "{}",
        "runners": "{}", "lane": "pipeline", "stage_attempts": "3",
    }  # fmt: skip
    response = admin_browser.post("/admin/pipeline/pipelinedefinition/add/", form)
    assert response.status_code == 200
    assert not PipelineDefinition.objects.filter(name="broken").exists()
    good = {
        **form,
        "name": "short",
        "stages": '["draft", "review"]',
        "gates": '{"review": {"required": true}}',
        "stage_timeouts": '{"draft": 10, "review": 5}',
    }
    assert admin_browser.post("/admin/pipeline/pipelinedefinition/add/", good).status_code == 302
    assert PipelineDefinition.objects.get(name="short").stages == ["draft", "review"]
    assert LedgerEntry.objects.filter(event_type="pipeline.definition.created", actor="root").exists()


def test_pipeline_jobs_link_to_the_console(admin_browser, waiting_job):
    html = admin_browser.get(f"/admin/pipeline/pipelinejob/{waiting_job.pk}/change/").content.decode()
    assert f"/pipelines/{waiting_job.pk}/" in html
    listing = admin_browser.get("/admin/pipeline/pipelinejob/").content.decode()
    assert f"/admin/pipeline/pipelinedefinition/{waiting_job.definition_id}/change/" in listing
