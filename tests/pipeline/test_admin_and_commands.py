"""Admin pages and actions, the guided tour command and the demo loader."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command

from orchestration.core.demo import loaders
from pipeline import engine
from pipeline import transitions as t
from pipeline.models import GateDecision, PipelineJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user(db):
    return get_user_model().objects.create_superuser("boss", password="pw-boss-123")


def test_the_change_page_offers_approve_and_reject_for_a_waiting_gate(client, admin_user, run_commits):
    job = run_commits(engine.create_job, "admin-job", "Shown in admin")
    client.force_login(admin_user)
    page = client.get(f"/admin/pipeline/pipelinejob/{job.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "Waiting for approval at the <strong>script</strong> gate" in html
    assert 'value="approve"' in html and 'value="reject"' in html
    assert "outline.txt" in html and "gate_pause" in html  # artifacts and events inline
    listing = client.get("/admin/pipeline/pipelinejob/").content.decode()
    assert "Needs approval" in listing and 'max="9"' in listing


def test_the_admin_decides_a_gate_with_notes(client, admin_user, run_commits):
    job = run_commits(engine.create_job, "admin-decide")
    client.force_login(admin_user)
    url = f"/admin/pipeline/pipelinejob/{job.pk}/decide/"
    response = run_commits(
        client.post, url, {"decision": "reject", "stage": "script", "notes": "redo the hook"}, follow=True
    )
    assert "Gate script rejected" in response.content.decode()
    decision = GateDecision.objects.get(job=job)
    assert (decision.decision, decision.decided_by, decision.notes) == ("rejected", "boss", "redo the hook")
    again = client.post(url, {"decision": "approve", "stage": "script"}, follow=True)
    assert "Not done: job is paused" in again.content.decode()
    assert client.get(url).status_code == 405


def test_staff_without_the_gate_permission_cannot_decide_in_admin(client, run_commits):
    job = run_commits(engine.create_job, "admin-perm")
    staff = get_user_model().objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_pipelinejob"))
    client.force_login(staff)
    page = client.get(f"/admin/pipeline/pipelinejob/{job.pk}/change/").content.decode()
    assert "You need the" in page and 'value="approve"' not in page
    assert client.post(f"/admin/pipeline/pipelinejob/{job.pk}/decide/", {"decision": "approve"}).status_code == 403
    assert not GateDecision.objects.exists()


def test_admin_actions_resume_and_cancel(client, admin_user, run_commits):
    paused = run_commits(engine.create_job, "to-resume")
    run_commits(engine.reject, paused, "script", actor="boss")
    waiting = run_commits(engine.create_job, "to-cancel")
    client.force_login(admin_user)
    changelist = "/admin/pipeline/pipelinejob/"
    run_commits(client.post, changelist, {"action": "resume_jobs", "_selected_action": [paused.pk]})
    assert PipelineJob.objects.get(pk=paused.pk).status == t.NEEDS_APPROVAL  # re-ran script, waits again
    response = client.post(
        changelist, {"action": "cancel_jobs", "_selected_action": [waiting.pk, paused.pk]}, follow=True
    )
    assert "2 job(s) canceled" in response.content.decode()
    assert set(PipelineJob.objects.values_list("status", flat=True)) == {t.CANCELED}


# The tour and the loader run stages when their transactions commit, as in production.
@pytest.mark.django_db(transaction=True)
def test_pipeline_demo_tours_gates_rejection_artifacts_and_events(settings):
    out = StringIO()
    call_command("pipeline_demo", "--slug", "tour", stdout=out)
    text = out.getvalue()
    assert "Job paused at the script gate" in text and "Rejected script: job is paused" in text
    for gate in ("script", "storyboard", "assets", "audio"):
        assert f"Approved {gate}" in text
    assert "Job completed (9/9 stages)" in text
    assert "captions.srt" in text and "job_completed" in text
    job = PipelineJob.objects.get(slug="tour")
    assert job.status == t.COMPLETED and job.artifacts.count() == 10
    assert (settings.RUNS_DIR / str(job.pk) / "acceptance_results.json").is_file()


@pytest.mark.django_db(transaction=True)
def test_the_demo_loader_leaves_a_job_waiting_at_its_first_gate():
    demo = dict(loaders())["pipeline"]
    assert "needs_approval at script" in demo.load()
    assert demo.load() == "already loaded"
    job = PipelineJob.objects.get(slug__startswith="demo-")
    assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "script")
    assert demo.remove() >= 1 and not PipelineJob.objects.exists()
