"""Console writes: gate decisions, loop switches, service and worker buttons — through
the domain functions, CSRF-protected, permission-checked, errors next to the field."""

from __future__ import annotations

import pytest
from django.test import Client

from health.models import CircuitBreaker
from orchestration.core.models import LedgerEntry
from orchestration.fleet.models import WorkerRun
from orchestration.loop.models import LoopState
from pipeline.models import GateDecision

pytestmark = pytest.mark.django_db


def decide(client, job, decision: str, notes: str = "", **extra):
    data = {"decision": decision, "stage": job.stage, "notes": notes, **extra}
    return client.post(f"/pipelines/{job.pk}/decide", data)


def test_approving_a_gate_moves_the_job_on_and_records_who(
    staff_browser, waiting_job, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = decide(staff_browser, waiting_job, "approve", "looks good", next="/")
    assert response.status_code == 302 and response["Location"] == "/"
    waiting_job.refresh_from_db()
    assert (waiting_job.status, waiting_job.stage) == ("needs_approval", "storyboard")
    decision = GateDecision.objects.get(job=waiting_job, stage="script")
    assert (decision.decision, decision.decided_by, decision.notes) == ("approved", "ops", "looks good")
    follow = staff_browser.get("/")
    assert "script approved" in follow.content.decode()


def test_a_person_with_only_the_approve_permission_may_decide(approver_browser, waiting_job):
    response = decide(approver_browser, waiting_job, "reject", "needs a shorter intro")
    assert response.status_code == 302
    waiting_job.refresh_from_db()
    assert waiting_job.status == "paused"
    assert GateDecision.objects.get(job=waiting_job).decided_by == "reviewer"


def test_viewers_may_not_decide(viewer_browser, waiting_job):
    response = decide(viewer_browser, waiting_job, "approve")
    assert response.status_code == 403
    assert "permission to approve or reject pipeline gates" in response.content.decode()
    waiting_job.refresh_from_db()
    assert waiting_job.status == "needs_approval" and not GateDecision.objects.exists()


def test_anonymous_posts_go_to_the_login_page(client, waiting_job):
    response = decide(client, waiting_job, "approve")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    waiting_job.refresh_from_db()
    assert waiting_job.status == "needs_approval"


def test_a_rejection_without_notes_shows_the_error_next_to_the_field(staff_browser, waiting_job):
    response = decide(staff_browser, waiting_job, "reject", "  ")
    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-field-error="notes"' in html and "Say why the stage is rejected" in html
    assert "data-hold" in html  # live refresh leaves the form alone while it shows an error
    waiting_job.refresh_from_db()
    assert waiting_job.status == "needs_approval" and not GateDecision.objects.exists()


def test_the_job_page_shows_its_own_form_errors(staff_browser, waiting_job):
    response = decide(staff_browser, waiting_job, "reject", "", **{"from": "job"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Gate: script" in html and 'data-field-error="notes"' in html


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"decision": "maybe", "stage": "script"}, "Select a valid choice"),
        ({"decision": "approve", "stage": "no-such-stage"}, "Unknown stage"),
        ({"decision": "approve"}, "This field is required"),
    ],
)
def test_bad_input_is_a_400_and_changes_nothing(staff_browser, waiting_job, data, error):
    response = staff_browser.post(f"/pipelines/{waiting_job.pk}/decide", data)
    assert response.status_code == 400
    assert error in response.content.decode()
    waiting_job.refresh_from_db()
    assert waiting_job.status == "needs_approval"


def test_deciding_a_gate_the_job_is_no_longer_at_is_a_409(staff_browser, waiting_job):
    assert decide(staff_browser, waiting_job, "reject", "redo").status_code == 302
    again = staff_browser.post(
        f"/pipelines/{waiting_job.pk}/decide", {"decision": "approve", "stage": "script", "notes": ""}
    )
    assert again.status_code == 409
    assert "was not approved at script" in again.content.decode()
    assert GateDecision.objects.count() == 1


def test_forms_are_csrf_protected(staff_user, waiting_job):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    refused = decide(client, waiting_job, "approve")
    assert refused.status_code == 403
    assert "This form has expired" in refused.content.decode()  # in the site's style
    assert client.post("/console/loop/disable").status_code == 403
    waiting_job.refresh_from_db()
    assert waiting_job.status == "needs_approval"
    page = client.get(f"/pipelines/{waiting_job.pk}/")
    token = page.cookies["csrftoken"].value
    ok = client.post(
        f"/pipelines/{waiting_job.pk}/decide",
        {"decision": "approve", "stage": "script", "csrfmiddlewaretoken": token},
    )
    assert ok.status_code == 302


def test_resume_and_cancel_from_the_job_page(staff_browser, waiting_job, django_capture_on_commit_callbacks):
    decide(staff_browser, waiting_job, "reject", "try again")
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_browser.post(f"/pipelines/{waiting_job.pk}/resume").status_code == 302
    waiting_job.refresh_from_db()
    assert (waiting_job.status, waiting_job.stage) == ("needs_approval", "script")
    assert staff_browser.post(f"/pipelines/{waiting_job.pk}/cancel").status_code == 302
    waiting_job.refresh_from_db()
    assert waiting_job.status == "canceled"
    assert staff_browser.post(f"/pipelines/{waiting_job.pk}/cancel").status_code == 409


# --- loop ----------------------------------------------------------------------------------
def test_staff_switch_the_loop_and_the_ledger_says_who(staff_browser, db):
    assert staff_browser.post("/console/loop/disable").status_code == 302
    assert LoopState.get().enabled is False
    assert staff_browser.post("/console/loop/enable", {"interval_seconds": "5"}).status_code == 302
    state = LoopState.get()
    assert state.enabled is True and state.interval_seconds == 5
    assert LedgerEntry.objects.filter(event_type="orchestrator.disabled", actor="ops").exists()
    assert LedgerEntry.objects.filter(event_type="orchestrator.enabled", actor="ops").exists()


def test_a_bad_interval_is_shown_next_to_the_field(staff_browser, db):
    staff_browser.post("/console/loop/disable")
    response = staff_browser.post("/console/loop/enable", {"interval_seconds": "0"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Ensure this value is greater than or equal to 0.1" in html
    assert 'class="field-error"' in html
    assert LoopState.get().enabled is False


def test_run_once_runs_a_cycle(staff_browser, db):
    before = LoopState.get().cycle_count
    response = staff_browser.post("/console/loop/run-once", follow=True)
    assert response.status_code == 200
    assert LoopState.get().cycle_count == before + 1
    assert f"Cycle {before + 1}" in response.content.decode()
    dry = staff_browser.post("/console/loop/run-once", {"dry_run": "1"}, follow=True)
    assert "(dry run)" in dry.content.decode()


@pytest.mark.parametrize("url", ["/console/loop/disable", "/console/loop/enable", "/console/loop/run-once"])
def test_viewers_may_not_touch_the_loop(viewer_browser, url):
    before = LoopState.get()
    assert viewer_browser.post(url).status_code == 403
    after = LoopState.get()
    assert (after.enabled, after.cycle_count) == (before.enabled, before.cycle_count)


def test_get_on_a_form_url_is_405(staff_browser, db):
    assert staff_browser.get("/console/loop/disable").status_code == 405


# --- services and workers -------------------------------------------------------------------
def test_reset_circuit_from_the_service_page(staff_browser, world):
    response = staff_browser.post("/services/db/reset-circuit", follow=True)
    assert response.status_code == 200
    assert CircuitBreaker.objects.get(name="service:db").state == "closed"
    assert LedgerEntry.objects.filter(event_type="health.circuit_reset", actor="ops").exists()
    assert "Circuit of db reset to closed" in response.content.decode()


def test_viewers_may_not_reset_circuits_or_trigger_workers(viewer_browser, world):
    assert viewer_browser.post("/services/db/reset-circuit").status_code == 403
    assert CircuitBreaker.objects.get(name="service:db").state == "open"
    runs = WorkerRun.objects.count()
    assert viewer_browser.post("/workers/collector/trigger").status_code == 403
    assert WorkerRun.objects.count() == runs


def test_trigger_a_worker_from_its_page(staff_browser, world, broker_only):
    runs = WorkerRun.objects.count()
    response = staff_browser.post("/workers/collector/trigger", follow=True)
    assert response.status_code == 200
    assert WorkerRun.objects.count() == runs + 1
    assert "of collector queued" in response.content.decode()


def test_triggering_a_disabled_worker_says_why(staff_browser, world):
    world["worker"].enabled = False
    world["worker"].save()
    response = staff_browser.post("/workers/collector/trigger", follow=True)
    assert "Not triggered: worker collector is disabled" in response.content.decode()


def test_next_only_redirects_within_the_site(staff_browser, db):
    response = staff_browser.post("/console/loop/disable", {"next": "https://evil.example/"})
    assert response["Location"] == "/"


# --- starting pipeline jobs, switching services and workers ------------------------------------
def test_start_a_pipeline_job_from_the_dashboard(staff_browser, db, django_capture_on_commit_callbacks):
    from pipeline.models import PipelineJob

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_browser.post("/pipelines/start", {"slug": "teaser", "intent": "A teaser", "definition": ""})
    job = PipelineJob.objects.get(slug="teaser")
    assert response.status_code == 302 and response["Location"] == f"/pipelines/{job.pk}/"
    assert job.created_by == "ops" and job.definition.name == "default"
    assert LedgerEntry.objects.filter(event_type="pipeline.start", actor="ops").exists()


def test_a_bad_slug_is_shown_next_to_the_field(staff_browser, db):
    from pipeline.models import PipelineJob

    response = staff_browser.post("/pipelines/start", {"slug": "not a slug!", "definition": "nope"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-field-error="slug"' in html and 'data-field-error="definition"' in html
    assert '<details class="start-box" open' in html
    assert not PipelineJob.objects.exists()


def test_viewers_may_not_start_pipeline_jobs(viewer_browser, db):
    from pipeline.models import PipelineJob

    assert viewer_browser.post("/pipelines/start", {"slug": "x"}).status_code == 403
    assert not PipelineJob.objects.exists()
    assert 'data-action="start-pipeline"' not in viewer_browser.get("/").content.decode()


def test_a_service_others_depend_on_stays_enabled(staff_browser, world):
    from health.models import Service

    response = staff_browser.post("/services/db/disable", follow=True)
    assert "db stays enabled: Required by api" in response.content.decode()
    assert Service.objects.get(name="db").enabled is True
    assert staff_browser.post("/services/api/disable").status_code == 302
    assert Service.objects.get(name="api").enabled is False
    assert staff_browser.post("/services/api/enable").status_code == 302
    assert Service.objects.get(name="api").enabled is True
    assert LedgerEntry.objects.filter(event_type="health.service_disabled", actor="ops").count() == 1


def test_switch_a_worker_and_its_schedule_follows(staff_browser, world):
    from orchestration.fleet.models import Worker

    assert staff_browser.post("/workers/collector/disable").status_code == 302
    assert Worker.objects.get(name="collector").enabled is False
    assert Worker.objects.get(name="collector").next_due_at is None
    again = staff_browser.post("/workers/collector/disable", follow=True)
    assert "was already disabled" in again.content.decode()
    assert staff_browser.post("/workers/collector/enable").status_code == 302
    assert Worker.objects.get(name="collector").next_due_at is not None
    assert LedgerEntry.objects.filter(event_type="worker.disabled", actor="ops").count() == 1


def test_viewers_may_not_switch_services_or_workers(viewer_browser, world):
    from health.models import Service
    from orchestration.fleet.models import Worker

    assert viewer_browser.post("/services/api/disable").status_code == 403
    assert viewer_browser.post("/workers/collector/disable").status_code == 403
    assert Service.objects.get(name="api").enabled and Worker.objects.get(name="collector").enabled
