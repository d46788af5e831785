"""The pipeline HTTP API: contract shapes, permissions, bad input, conflicts."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from orchestration.core.models import LedgerEntry
from pipeline import transitions as t
from pipeline.models import GateDecision, PipelineDefinition, PipelineEvent, PipelineJob
from tests.conftest import _client_for

pytestmark = pytest.mark.django_db
BASE = "/api/v1/pipeline"


@pytest.fixture
def approver_client(db):
    user = get_user_model().objects.create_user("reviewer", password="pw-reviewer-1")
    user.user_permissions.add(Permission.objects.get(codename="approve_gate", content_type__app_label="pipeline"))
    return _client_for(user)


@pytest.fixture
def starter_client(db):
    """Another staff member starts the jobs: nobody may approve a job they started."""
    return _client_for(get_user_model().objects.create_user("starter", password="pw-starter-1", is_staff=True))


@pytest.fixture
def waiting_job(starter_client, django_capture_on_commit_callbacks) -> dict:
    with django_capture_on_commit_callbacks(execute=True):
        response = starter_client.post(f"{BASE}/jobs/", {"slug": "explainer", "intent": "Explain it"}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_it_creates_a_job_with_the_default_definition_and_runs_to_the_first_gate(staff_client, waiting_job):
    assert {"id", "status", "stage"} <= set(waiting_job)
    assert waiting_job["definition"] == "default"
    body = staff_client.get(f"{BASE}/jobs/{waiting_job['id']}/").json()
    assert {"id", "slug", "intent", "status", "stage", "gates", "created_at", "updated_at"} <= set(body)
    assert (body["status"], body["stage"]) == ("needs_approval", "script")
    assert [(g["stage"], g["state"]) for g in body["gates"]] == [
        ("script", "waiting"), ("storyboard", "pending"), ("assets", "pending"), ("audio", "pending"),
    ]  # fmt: skip
    assert LedgerEntry.objects.filter(event_type="pipeline.start", actor="starter").exists()


def test_approve_reject_resume_cancel_through_the_api(staff_client, waiting_job, django_capture_on_commit_callbacks):
    url = f"{BASE}/jobs/{waiting_job['id']}"
    with django_capture_on_commit_callbacks(execute=True):
        rejected = staff_client.post(f"{url}/reject", {"stage": "script", "notes": "too long"}, format="json")
    assert rejected.status_code == 200 and rejected.json()["status"] == "paused"
    with django_capture_on_commit_callbacks(execute=True):
        resumed = staff_client.post(f"{url}/resume")
    assert resumed.status_code == 200
    assert staff_client.get(f"{url}/").json()["status"] == "needs_approval"
    with django_capture_on_commit_callbacks(execute=True):
        approved = staff_client.post(f"{url}/approve", {"stage": "script", "notes": "good"}, format="json")
    assert approved.status_code == 200
    body = staff_client.get(f"{url}/").json()
    assert (body["status"], body["stage"]) == ("needs_approval", "storyboard")
    assert body["updated_at"] > body["created_at"]
    assert body["gates"][0]["state"] == "approved"
    assert body["gates"][0]["decided_by"] == "ops" and body["gates"][0]["notes"] == "good"
    canceled = staff_client.post(f"{url}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert staff_client.post(f"{url}/cancel").status_code == 409

    events = staff_client.get(f"{url}/events/")
    assert events.status_code == 200
    listed = events.json()
    assert {"type", "stage", "data", "created_at"} <= set(listed[0])
    kinds = [e["type"] for e in listed]
    assert kinds[0] == "job_started" and kinds[-1] == "job_canceled"
    assert {"gate_rejected", "job_resumed", "gate_approved", "gate_pause"} <= set(kinds)
    assert [e["id"] for e in listed] == sorted(e["id"] for e in listed)  # oldest first

    artifacts = staff_client.get(f"{url}/artifacts/").json()
    assert [a["path"] for a in artifacts] == ["outline.txt", "research.json", "script.txt", "storyboard.json"]
    assert {"stage", "path", "kind", "metadata", "created_at"} <= set(artifacts[0])


def test_list_filters_by_status_and_active(staff_client, waiting_job):
    other = PipelineJob.objects.create(
        slug="old", definition=PipelineDefinition.default(), config={}, stage="outline", status=t.COMPLETED
    )
    ids = lambda q: [j["id"] for j in staff_client.get(f"{BASE}/jobs/{q}").json()["results"]]  # noqa: E731
    assert ids("?status=needs_approval") == [waiting_job["id"]]
    assert ids("?active=true") == [waiting_job["id"]]
    assert ids("?active=false") == [other.pk]
    assert sorted(ids("")) == sorted([waiting_job["id"], other.pk])
    bad = staff_client.get(f"{BASE}/jobs/?status=sleeping")
    assert bad.status_code == 400 and "unknown status sleeping" in bad.json()["status"]
    assert staff_client.get(f"{BASE}/jobs/?active=maybe").status_code == 400


def test_conflicts_and_bad_input_are_4xx_and_change_nothing(staff_client, waiting_job):
    url = f"{BASE}/jobs/{waiting_job['id']}"
    wrong_gate = staff_client.post(f"{url}/approve", {"stage": "storyboard"}, format="json")
    assert wrong_gate.status_code == 409 and "not waiting at the storyboard gate" in wrong_gate.json()["detail"]
    unknown = staff_client.post(f"{url}/approve", {"stage": "mixing"}, format="json")
    assert unknown.status_code == 400 and "unknown stage 'mixing'" in unknown.json()["stage"]
    assert staff_client.post(f"{url}/reject", {}, format="json").status_code == 400
    no_gate = staff_client.post(f"{url}/approve", {"stage": "outline"}, format="json")
    assert no_gate.status_code == 409 and "no approval gate" in no_gate.json()["detail"]
    assert staff_client.post(f"{url}/resume").status_code == 409
    assert staff_client.post(f"{BASE}/jobs/", {"slug": "bad slug!"}, format="json").status_code == 400
    missing = staff_client.post(f"{BASE}/jobs/", {"slug": "x", "definition": "nope"}, format="json")
    assert missing.status_code == 400 and "definition" in missing.json()
    assert staff_client.get(f"{BASE}/jobs/999999/").status_code == 404
    assert not GateDecision.objects.exists()
    assert staff_client.get(f"{url}/").json()["status"] == "needs_approval"


def test_approving_a_running_job_is_a_conflict(staff_client):
    job = PipelineJob.objects.create(
        slug="busy", definition=PipelineDefinition.default(), config=PipelineDefinition.default().snapshot(),
        status=t.RUNNING, stage="script", stage_run=3,
    )  # fmt: skip
    response = staff_client.post(f"{BASE}/jobs/{job.pk}/approve", {"stage": "script"}, format="json")
    assert response.status_code == 409 and "job is running at script" in response.json()["detail"]


def test_permissions(anon_client, user_client, approver_client, waiting_job, django_capture_on_commit_callbacks):
    url = f"{BASE}/jobs/{waiting_job['id']}"
    assert anon_client.get(f"{BASE}/jobs/").status_code == 401
    assert anon_client.post(f"{url}/approve", {"stage": "script"}, format="json").status_code == 401
    assert user_client.get(f"{url}/events/").status_code == 200  # reading needs only a login
    for path, body in ((f"{url}/approve", {"stage": "script"}), (f"{url}/reject", {"stage": "script"})):
        assert user_client.post(path, body, format="json").status_code == 403
    assert user_client.post(f"{BASE}/jobs/", {"slug": "x"}, format="json").status_code == 403
    # The gate permission lets a non-staff reviewer decide, and only decide.
    assert approver_client.post(f"{BASE}/jobs/", {"slug": "x"}, format="json").status_code == 403
    assert approver_client.post(f"{url}/cancel").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        ok = approver_client.post(f"{url}/approve", {"stage": "script", "notes": "fine"}, format="json")
    assert ok.status_code == 200
    decision = GateDecision.objects.get()
    assert (decision.decided_by, decision.notes, decision.automatic) == ("reviewer", "fine", False)
    assert LedgerEntry.objects.filter(event_type="pipeline.approve", actor="reviewer").exists()


def test_definitions_list_and_create_validated(staff_client, user_client):
    listed = staff_client.get(f"{BASE}/definitions/").json()["results"]
    assert [d["name"] for d in listed] == ["default"] and listed[0]["stages"][0] == "outline"
    body = {
        "name": "short",
        "stages": ["draft", "review"],
        "gates": {"review": {"required": True, "auto_approve": True, "timeout_minutes": 5}},
        "stage_timeouts": {"draft": 1, "review": 2},
    }
    assert user_client.post(f"{BASE}/definitions/", body, format="json").status_code == 403
    created = staff_client.post(f"{BASE}/definitions/", body, format="json")
    assert created.status_code == 201, created.content
    assert PipelineDefinition.objects.get(name="short").gates["review"]["auto_approve"] is True
    bad = staff_client.post(f"{BASE}/definitions/", {**body, "name": "bad", "gates": {"nope": {}}}, format="json")
    assert bad.status_code == 400 and "gate for unknown stage 'nope'" in str(bad.json())
    job = staff_client.post(f"{BASE}/jobs/", {"slug": "s", "definition": "short"}, format="json").json()
    assert (job["definition"], job["stage"]) == ("short", "draft")


def test_the_json_events_endpoint_accepts_event_stream_without_406(staff_client, waiting_job):
    PipelineJob.objects.filter(pk=waiting_job["id"]).update(status=t.CANCELED)
    response = staff_client.get(f"{BASE}/jobs/{waiting_job['id']}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    body = b"".join(response.streaming_content).decode()
    assert "event: job_started" in body and "event: end" in body


def test_the_stream_is_bounded_and_resumes_after_the_last_event_id(staff_client, waiting_job, settings):
    from pipeline.api.sse import stream

    job_id = waiting_job["id"]
    settings.PIPELINE_SSE_POLL_SECONDS = 0.05
    started = time.monotonic()
    chunks = list(stream(job_id, max_seconds=0.3))  # the job waits at a gate: it never ends by itself
    assert time.monotonic() - started < 3
    assert chunks[-1].startswith("event: timeout") and sum(c.startswith("id: ") for c in chunks) == 8
    last_id = PipelineEvent.objects.filter(job_id=job_id).order_by("id").values_list("id", flat=True)[5]
    rest = list(stream(job_id, after_id=last_id, max_seconds=0.2))
    assert [c.split("\n")[1] for c in rest if c.startswith("id: ")] == ["event: stage_completed", "event: gate_pause"]
    response = staff_client.get(
        f"{BASE}/jobs/{job_id}/events/", HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="abc"
    )
    assert response.status_code == 400
    # Digits that are not ASCII ("²" passes str.isdigit) and ids past 64 bits: 400, not 500.
    for after in ("²", "١٢", "9" * 30):
        response = staff_client.get(f"{BASE}/jobs/{job_id}/events/?after={after}", HTTP_ACCEPT="text/event-stream")
        assert response.status_code == 400 and b"after" in response.content, after


def test_the_api_schema_documents_the_pipeline_endpoints(staff_client):
    response = staff_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/v1/pipeline/jobs/", "/api/v1/pipeline/jobs/{id}/approve", "/api/v1/pipeline/jobs/{id}/events/"):
        assert any(p.rstrip("/") == path.rstrip("/") for p in paths), path


def test_the_job_list_uses_a_constant_number_of_queries(staff_client, django_assert_max_num_queries):
    definition = PipelineDefinition.default()
    jobs = PipelineJob.objects.bulk_create(
        PipelineJob(slug=f"j{i}", definition=definition, config=definition.snapshot(), stage="storyboard",
                    status=t.NEEDS_APPROVAL)
        for i in range(40)
    )  # fmt: skip
    GateDecision.objects.bulk_create(
        GateDecision(job=job, stage="script", decision="approved", decided_by="ops") for job in jobs
    )
    staff_client.get(f"{BASE}/jobs/")  # warm up auth/session queries
    with django_assert_max_num_queries(6):
        response = staff_client.get(f"{BASE}/jobs/?limit=40")
    results = response.json()["results"]
    assert len(results) == 40 and all(r["gates"][0]["state"] == "approved" for r in results)


def test_an_anonymous_event_stream_request_is_refused_with_401(anon_client, waiting_job):
    response = anon_client.get(f"{BASE}/jobs/{waiting_job['id']}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 401
