"""The console's gate pieces: the decision form built from the gate's input_schema, the
inbox page and its count in the navigation, and a decision seen live on the SSE stream."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client

from pipeline import engine
from pipeline import transitions as t
from pipeline.models import GateDecision, PipelineDefinition, PipelineEvent, PipelineJob
from tests.conftest import _client_for

pytestmark = pytest.mark.django_db
SCHEMA = {
    "type": "object",
    "required": ["tone", "takes"],
    "properties": {
        "tone": {"type": "string", "enum": ["calm", "bold"], "default": "calm", "title": "Tone of voice"},
        "takes": {"type": "integer", "minimum": 1, "maximum": 9, "description": "How many takes to record"},
        "subtitles": {"type": "boolean", "default": True},
    },
}


@pytest.fixture
def run_commits(django_capture_on_commit_callbacks):
    """Run what the call commits (the stages, in django-q2's sync mode) before returning."""

    def run(func, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            result = func(*args, **kwargs)
        if hasattr(result, "refresh_from_db"):
            result.refresh_from_db()
        return result

    return run


def person(name: str, group: str = "") -> Client:
    user = get_user_model().objects.create_user(name, password=f"pw-{name}-123")
    user.user_permissions.add(Permission.objects.get(codename="approve_gate", content_type__app_label="pipeline"))
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    return client


def waiting(run_commits, gate: dict, slug: str = "explainer") -> PipelineJob:
    definition = PipelineDefinition.objects.create(
        name=f"console-{PipelineDefinition.objects.count()}",
        stages=["draft", "review", "publish"],
        gates={"review": {"required": True, "input_schema": SCHEMA, **gate}},
        stage_timeouts={"draft": 5, "review": 5, "publish": 5},
    )
    job = run_commits(engine.create_job, slug, "Explain it", definition=definition, actor="writer")
    assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "review")
    return job


def approve(client: Client, job: PipelineJob, run_commits, **inputs: str):
    body = {"decision": "approve", "stage": "review", "notes": "", "from": "job"}
    body.update({f"input-{k}": v for k, v in inputs.items()})
    return run_commits(client.post, f"/pipelines/{job.pk}/decide", body)


def nav_count(html: str) -> int | None:
    found = re.search(r'id="nav-inbox".*?data-inbox-count>(\d+)<', html, re.S)
    return int(found.group(1)) if found else None


def test_the_job_page_renders_the_gates_input_schema_as_fields(run_commits):
    job = waiting(run_commits, {})
    html = person("ann").get(f"/pipelines/{job.pk}/").content.decode()
    select = re.search(r'<select id="gate-input-tone" name="input-tone" required>(.*?)</select>', html, re.S)
    assert select and re.findall(r'<option value="(\w+)"( selected)?>', select.group(1)) == [
        ("calm", " selected"),
        ("bold", ""),
    ]
    assert '<label for="gate-input-tone">Tone of voice *</label>' in html
    assert re.search(
        r'<input type="number" step="1" id="gate-input-takes" name="input-takes" value="" min="1" max="9" required>',
        html,
    )
    assert "How many takes to record" in html
    assert '<input type="checkbox" id="gate-input-subtitles" name="input-subtitles" checked>' in html


def test_approving_through_the_form_stores_typed_input(run_commits):
    job = waiting(run_commits, {})
    response = approve(person("ann"), job, run_commits, tone="bold", takes="3")
    assert response.status_code == 302
    decision = GateDecision.objects.get(job=job)
    # An unticked checkbox is false, not the schema's default: the person saw it and cleared it.
    assert (decision.decided_by, decision.via, decision.input) == (
        "ann",
        "console",
        {"tone": "bold", "takes": 3, "subtitles": False},
    )
    job.refresh_from_db()
    assert job.status == t.COMPLETED and job.gate_input("review") == decision.input


def test_bad_input_is_a_400_with_the_error_next_to_its_field_and_nothing_decided(run_commits):
    job = waiting(run_commits, {})
    response = approve(person("ann"), job, run_commits, tone="loud", takes="12")
    assert response.status_code == 400
    html = response.content.decode()
    errors = dict(re.findall(r'id="gate-input-(\w+)".*?<span class="error" role="alert">([^<]+)</span>', html, re.S))
    assert set(errors) == {"tone", "takes"} and "9" in errors["takes"]
    assert 'value="12"' in html  # what the person typed is kept
    assert not GateDecision.objects.exists()
    assert PipelineJob.objects.get(pk=job.pk).status == t.NEEDS_APPROVAL


def test_the_inbox_lists_what_waits_for_me_and_the_nav_counts_it(run_commits):
    mine = waiting(run_commits, {"assignees": ["group:legal"]}, slug="for-legal")
    waiting(run_commits, {"assignees": ["someone-else"]}, slug="not-mine")
    lena, viewer = person("lena", group="legal"), Client()
    viewer.force_login(get_user_model().objects.create_user("viewer", password="pw-viewer-123"))

    page = lena.get("/inbox/")
    html = page.content.decode()
    assert page.status_code == 200 and "Waiting for me (1)" in html
    assert f'id="inbox-{mine.pk}"' in html and "not-mine" not in html
    assert f'id="inbox-{mine.pk}-input-tone"' in html  # each row has its own form
    assert nav_count(html) == 1 and nav_count(lena.get("/").content.decode()) == 1
    assert nav_count(viewer.get("/").content.decode()) is None  # no inbox for who may not decide

    body = {"decision": "approve", "stage": "review", "from": "job", "next": "/inbox/"}
    done = run_commits(lena.post, f"/pipelines/{mine.pk}/decide", {**body, "input-tone": "calm", "input-takes": "2"})
    assert done.status_code == 302 and done["Location"] == "/inbox/"
    after = lena.get("/inbox/").content.decode()
    assert "Nothing waits for you." in after and nav_count(after) == 0


def test_the_event_stream_shows_each_decision_as_it_is_made(run_commits, settings):
    settings.PIPELINE_SSE_POLL_SECONDS = 0.05
    job = waiting(run_commits, {"quorum": 2})
    api = _client_for(get_user_model().objects.create_user("watcher", is_staff=True))
    response = api.get(f"/api/v1/pipeline/jobs/{job.pk}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    chunks = iter(response.streaming_content)

    def next_event() -> tuple[str, dict]:
        for chunk in chunks:
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            if text.startswith("id: "):
                _, kind, data = text.strip().split("\n")
                return kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))
        raise AssertionError("the stream ended")

    while next_event()[0] != "gate_pause":
        pass  # what happened before the gate
    approve(person("ann"), job, run_commits, tone="bold", takes="3")
    kind, first = next_event()
    assert kind == "gate_decision" and first["type"] == "gate_decision"
    assert (first["data"]["actor"], first["data"]["approvals"], first["data"]["quorum"]) == ("ann", 1, 2)
    assert first["data"]["input"] == {"tone": "bold", "takes": 3, "subtitles": False}
    approve(person("bob"), job, run_commits, tone="calm", takes="2")
    kind, second = next_event()
    assert kind == "gate_decision" and (second["data"]["actor"], second["data"]["approvals"]) == ("bob", 2)
    assert next_event()[0] == "gate_approved"
    assert PipelineEvent.objects.filter(job=job, type="gate_decision").count() == 2
