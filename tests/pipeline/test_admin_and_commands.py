"""Admin pages and actions, the guided tour command and the demo loader."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from orchestration.core.demo import loaders
from pipeline import engine
from pipeline import transitions as t
from pipeline.models import GateDecision, PipelineDefinition, PipelineJob

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


def gate_person(name: str, group: str = "") -> object:
    user = get_user_model().objects.create_user(name, password=f"pw-{name}-123", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["approve_gate", "view_pipelinejob"], content_type__app_label="pipeline"
        )
    )
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def legal_gate(run_commits, *, starter: str) -> PipelineJob:
    definition = PipelineDefinition.objects.create(
        name="legal",
        stages=["draft", "review", "publish"],
        gates={"review": {"assignees": ["group:legal"], "input_schema": ADMIN_SCHEMA}},
        stage_timeouts={"draft": 5, "review": 5, "publish": 5},
    )
    job = run_commits(engine.create_job, "legal", definition=definition, actor=starter)
    assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "review")
    return job


ADMIN_SCHEMA = {
    "type": "object",
    "required": ["takes"],
    "properties": {"takes": {"type": "integer", "minimum": 1}, "tone": {"type": "string", "enum": ["calm", "bold"]}},
}


def test_the_admin_decides_as_the_signed_in_person_with_their_groups_and_typed_input(client, run_commits):
    job = legal_gate(run_commits, starter="writer")
    client.force_login(gate_person("lena", group="legal"))
    page = client.get(f"/admin/pipeline/pipelinejob/{job.pk}/change/").content.decode()
    assert 'name="input-takes"' in page and 'name="input-tone"' in page
    url = f"/admin/pipeline/pipelinejob/{job.pk}/decide/"
    bad = client.post(url, {"decision": "approve", "stage": "review", "input-takes": "0"}, follow=True)
    assert "Not done: input.takes:" in bad.content.decode() and not GateDecision.objects.exists()
    done = run_commits(
        client.post, url, {"decision": "approve", "stage": "review", "input-takes": "3", "input-tone": "bold"}
    )
    assert done.status_code == 302
    decision = GateDecision.objects.get(job=job)
    assert (decision.decided_by, decision.via, decision.input) == ("lena", "admin", {"takes": 3, "tone": "bold"})
    assert PipelineJob.objects.get(pk=job.pk).status == t.COMPLETED


def test_the_admin_refuses_outsiders_and_the_starter_by_the_gate_rules(client, run_commits):
    job = legal_gate(run_commits, starter="lena")
    gate_person("lena", group="legal")
    url = f"/admin/pipeline/pipelinejob/{job.pk}/decide/"
    body = {"decision": "approve", "stage": "review", "input-takes": "2"}
    # A superuser outside the gate's assignees is not one of them.
    client.force_login(get_user_model().objects.create_superuser("root", password="pw-root-123"))
    outsider = client.post(url, body, follow=True).content.decode()
    assert "Not done: this gate is assigned to group:legal; root is not one of them" in outsider
    # The person who started the job may not approve it (the gate does not allow it).
    client.force_login(get_user_model().objects.get(username="lena"))
    starter = client.post(url, body, follow=True).content.decode()
    assert "Not done: lena started this job" in starter
    assert not GateDecision.objects.exists()
    assert PipelineJob.objects.get(pk=job.pk).status == t.NEEDS_APPROVAL


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
