"""Gates through the API with real users: quorum, self-approval, typed input, the
inbox, timeout policies (time travel) and the signed one-click links."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core import signing
from django.test import Client
from django.utils import timezone

from orchestration.core.models import Delivery, LedgerEntry, NotificationChannel
from pipeline import engine, links
from pipeline import transitions as t
from pipeline.models import Artifact, GateDecision, GateLink, PipelineDefinition, PipelineEvent, PipelineJob
from tests.conftest import _client_for
from tests.support.smtp import smtp_server

pytestmark = pytest.mark.django_db
BASE = "/api/v1/pipeline"
SCHEMA = {
    "type": "object",
    "required": ["tone"],
    "properties": {
        "tone": {"type": "string", "enum": ["calm", "bold"], "default": "calm"},
        "takes": {"type": "integer", "minimum": 1, "default": 2},
    },
}


def person(name: str, *, approve: bool = True, group: str | None = None, email: str = ""):
    user = get_user_model().objects.create_user(name, password=f"pw-{name}-123", email=email)
    if approve:
        user.user_permissions.add(Permission.objects.get(codename="approve_gate", content_type__app_label="pipeline"))
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def waiting(run_commits, gate: dict, *, starter: str = "starter") -> PipelineJob:
    definition = PipelineDefinition.objects.create(
        name=f"gated-{PipelineDefinition.objects.count()}",
        stages=["draft", "review", "publish"],
        gates={"review": {"required": True, "timeout_minutes": 30, **gate}},
        stage_timeouts={"draft": 5, "review": 5, "publish": 5},
    )
    job = run_commits(engine.create_job, "explainer", "Explain it", definition=definition, actor=starter)
    assert (job.status, job.stage) == (t.NEEDS_APPROVAL, "review")
    return job


def post(client, job, verb, body, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(f"{BASE}/jobs/{job.pk}/{verb}", body, format="json")


def test_quorum_two_of_three_with_typed_input(run_commits, django_capture_on_commit_callbacks, settings):
    ann, bob, _ = person("ann"), person("bob", group="legal"), person("cy", group="legal")
    job = waiting(run_commits, {"input_schema": SCHEMA, "assignees": ["ann", "group:legal"], "quorum": 2})

    bad = post(
        _client_for(ann),
        job,
        "approve",
        {"stage": "review", "input": {"tone": "loud"}},
        django_capture_on_commit_callbacks,
    )
    assert bad.status_code == 400 and "tone" in bad.json()["input"]
    assert not GateDecision.objects.exists()

    first = post(
        _client_for(ann),
        job,
        "approve",
        {"stage": "review", "notes": "ok", "input": {"tone": "bold"}},
        django_capture_on_commit_callbacks,
    )
    assert first.status_code == 200 and first.json()["status"] == "needs_approval"
    gate = first.json()["gates"][0]
    assert (gate["approvals"], gate["quorum"], gate["state"]) == (1, 2, "waiting")
    assert gate["decisions"][0]["decided_by"] == "ann" and gate["decisions"][0]["input"] == {"tone": "bold", "takes": 2}

    again = post(
        _client_for(ann),
        job,
        "approve",
        {"stage": "review", "input": {"tone": "bold"}},
        django_capture_on_commit_callbacks,
    )
    assert again.status_code == 409 and "already decided" in again.json()["detail"]

    second = post(
        _client_for(bob),
        job,
        "approve",
        {"stage": "review", "input": {"tone": "bold", "takes": 5}},
        django_capture_on_commit_callbacks,
    )
    body = second.json()
    assert second.status_code == 200 and body["stage"] == "publish"
    review = body["gates"][0]
    assert review["state"] == "approved" and [d["decided_by"] for d in review["decisions"]] == ["ann", "bob"]
    assert review["input"] == {"tone": "bold", "takes": 5}

    events = list(PipelineEvent.objects.filter(job=job, stage="review").values_list("type", "data"))
    decisions = [data for kind, data in events if kind == "gate_decision"]
    assert [(d["actor"], d["approvals"]) for d in decisions] == [("ann", 1), ("bob", 2)]
    approved = next(data for kind, data in events if kind == "gate_approved")
    assert approved["input"] == {"tone": "bold", "takes": 5} and approved["decided_by"] == ["ann", "bob"]
    artifact = Artifact.objects.get(job=job, kind="gate_input")
    assert json.loads((settings.RUNS_DIR / str(job.pk) / artifact.path).read_text()) == {"tone": "bold", "takes": 5}
    assert LedgerEntry.objects.filter(event_type="pipeline.gate_decision", actor="ann").exists()
    assert LedgerEntry.objects.filter(event_type="pipeline.approve", actor="bob").exists()


def test_one_rejection_rejects_unless_the_gate_says_otherwise(run_commits, django_capture_on_commit_callbacks):
    ann, bob = person("ann"), person("bob")
    strict = waiting(run_commits, {"assignees": ["ann", "bob"], "quorum": 2})
    answer = post(
        _client_for(ann), strict, "reject", {"stage": "review", "notes": "no"}, django_capture_on_commit_callbacks
    )
    assert answer.json()["status"] == "paused"
    lenient = waiting(run_commits, {"assignees": ["ann", "bob"], "quorum": 1, "reject_quorum": 2})
    answer = post(_client_for(bob), lenient, "reject", {"stage": "review"}, django_capture_on_commit_callbacks)
    assert answer.json()["status"] == "needs_approval" and answer.json()["gates"][0]["rejections"] == 1


def test_the_starter_may_not_approve_and_outsiders_may_not_decide(run_commits, django_capture_on_commit_callbacks):
    starter, outsider, nobody = person("starter"), person("out"), person("plain", approve=False)
    job = waiting(run_commits, {"assignees": ["starter", "ann"]})
    own = post(_client_for(starter), job, "approve", {"stage": "review"}, django_capture_on_commit_callbacks)
    assert own.status_code == 403 and "started this job" in own.json()["detail"]
    assert (
        post(_client_for(outsider), job, "approve", {"stage": "review"}, django_capture_on_commit_callbacks).status_code
        == 403
    )
    assert (
        post(_client_for(nobody), job, "approve", {"stage": "review"}, django_capture_on_commit_callbacks).status_code
        == 403
    )
    assert not GateDecision.objects.exists()
    allowed = waiting(run_commits, {"allow_self_approval": True})
    assert (
        post(
            _client_for(starter), allowed, "approve", {"stage": "review"}, django_capture_on_commit_callbacks
        ).status_code
        == 200
    )


def test_the_inbox_lists_what_waits_for_the_caller(run_commits, django_capture_on_commit_callbacks, client):
    ann, bob = person("ann"), person("bob")
    for_ann = waiting(run_commits, {"assignees": ["ann"]})
    for_both = waiting(run_commits, {"assignees": ["ann", "bob"], "quorum": 2})
    inbox = lambda user: [j["id"] for j in _client_for(user).get(f"{BASE}/inbox").json()["results"]]  # noqa: E731
    assert inbox(ann) == [for_ann.pk, for_both.pk] and inbox(bob) == [for_both.pk]
    post(_client_for(bob), for_both, "approve", {"stage": "review"}, django_capture_on_commit_callbacks)
    assert inbox(bob) == [] and _client_for(ann).get(f"{BASE}/inbox").json()["count"] == 2
    assert client.get(f"{BASE}/inbox").status_code == 401


@pytest.mark.parametrize(
    ("policy", "status", "decision"),
    [
        ("approve_with_defaults", t.COMPLETED, "approved"),
        ("reject", t.PAUSED, "rejected"),
        ("fail", t.FAILED, None),
        ("escalate", t.NEEDS_APPROVAL, None),
    ],
)
def test_each_timeout_policy(run_commits, policy, status, decision):
    from orchestration.loop.cycle import run_cycle

    job = waiting(run_commits, {"input_schema": SCHEMA, "on_timeout": policy, "timeout_minutes": 30})
    with time_machine.travel(timezone.now() + timedelta(minutes=29)):
        run_cycle()
    job.refresh_from_db()
    assert job.status == t.NEEDS_APPROVAL
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        run_commits(run_cycle)
    job.refresh_from_db()
    assert job.status == status
    assert PipelineEvent.objects.filter(job=job, type="gate_timed_out").count() == 1
    if decision:
        automatic = GateDecision.objects.get(job=job)
        assert (automatic.decision, automatic.automatic, automatic.decided_by) == (decision, True, "system")
    if policy == "approve_with_defaults":
        assert automatic.input == {"tone": "calm", "takes": 2}
        assert PipelineEvent.objects.get(job=job, type="gate_approved").data["input"] == {"tone": "calm", "takes": 2}
    if policy == "escalate":
        assert (
            job.escalated_at is not None and LedgerEntry.objects.filter(event_type="pipeline.gate_escalated").exists()
        )


def test_a_decision_the_timeout_beat_is_a_409_and_changes_nothing(run_commits, django_capture_on_commit_callbacks):
    from orchestration.loop.cycle import run_cycle

    ann = person("ann")
    job = waiting(run_commits, {"assignees": ["ann"], "on_timeout": "reject", "timeout_minutes": 30})
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        run_commits(run_cycle)
        late = post(_client_for(ann), job, "approve", {"stage": "review"}, django_capture_on_commit_callbacks)
    assert late.status_code == 409 and "detail" in late.json()
    job.refresh_from_db()
    assert job.status == t.PAUSED
    assert list(GateDecision.objects.filter(job=job).values_list("decided_by", "automatic")) == [("system", True)]
    assert not LedgerEntry.objects.filter(actor="ann").exists()


def test_escalation_adds_a_tier_with_a_fresh_deadline(run_commits, django_capture_on_commit_callbacks):
    from orchestration.loop.cycle import run_cycle

    lead = person("lead")
    job = waiting(run_commits, {"assignees": ["ann"], "escalate_to": [["lead"]], "timeout_minutes": 10})
    assert (
        post(_client_for(lead), job, "approve", {"stage": "review"}, django_capture_on_commit_callbacks).status_code
        == 403
    )
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        run_commits(run_cycle)
    job.refresh_from_db()
    assert (job.escalation_tier, job.escalated_at, job.status) == (1, None, t.NEEDS_APPROVAL)
    assert (
        post(_client_for(lead), job, "approve", {"stage": "review"}, django_capture_on_commit_callbacks).status_code
        == 200
    )


# --- signed links ------------------------------------------------------------------
@pytest.fixture
def mailbox():
    """An e-mail channel that carries notices, to an SMTP server on 127.0.0.1."""
    with smtp_server() as box:
        NotificationChannel.objects.create(
            name="mail", url=f"mailto://127.0.0.1:{box.port}?from=orchestrator@localhost", notices=True
        )
        yield box


def _links(box) -> dict[str, str]:
    """The links each person was sent, from the e-mails (the real delivery path)."""
    found = {}
    for (to, *_), text in box.texts():
        for line in text.splitlines():
            if line.startswith(("approve: ", "reject: ")):
                verb, url = line.split(": ", 1)
                found[(to, verb)] = url.split("://", 1)[1].split("/", 1)[1]
    return {key: "/" + path for key, path in found.items()}


def test_every_pause_mails_each_assignee_their_own_links(run_commits, mailbox):
    person("ann", email="ann@example.org"), person("bob", email="bob@example.org")
    job = waiting(run_commits, {"assignees": ["ann", "bob"]})
    sent = _links(mailbox)
    assert set(sent) == {(f"{u}@example.org", v) for u in ("ann", "bob") for v in ("approve", "reject")}
    assert GateLink.objects.filter(job=job).count() == 4
    assert not LedgerEntry.objects.filter(event_type="notice.sent", message__contains="/pipeline/links/").exists()
    # Each delivery is recorded, sent to its person; the links are kept apart from what is shown.
    deliveries = Delivery.objects.filter(event=f"notice:pipeline:{job.pk}")
    assert sorted(d.recipient for d in deliveries) == ["ann@example.org", "bob@example.org"]
    assert all(d.status == "sent" and "/pipeline/links/" not in d.body for d in deliveries)


def test_a_link_confirms_on_get_and_decides_once_on_post(run_commits, mailbox):
    person("ann", email="ann@example.org")
    job = waiting(run_commits, {"assignees": ["ann"], "input_schema": SCHEMA})
    url = _links(mailbox)[("ann@example.org", "approve")]
    browser = Client()
    page = browser.get(url)
    assert (
        page.status_code == 200 and b"Approve the review gate" in page.content and b'name="input-tone"' in page.content
    )
    assert not GateDecision.objects.exists() and GateLink.objects.filter(used_at__isnull=False).count() == 0

    bad = browser.post(url, {"input-tone": "loud"})
    assert bad.status_code == 400 and not GateDecision.objects.exists()
    assert GateLink.objects.filter(used_at__isnull=False).count() == 0  # a refused decision leaves it unused

    done = browser.post(url, {"input-tone": "bold", "input-takes": "4", "notes": "from mail"})
    assert done.status_code == 200 and b"You approved" in done.content
    decision = GateDecision.objects.get(job=job)
    assert (decision.decided_by, decision.via, decision.input) == ("ann", "link", {"tone": "bold", "takes": 4})

    replay = browser.post(url, {"input-tone": "bold"})
    assert replay.status_code == 410 and GateDecision.objects.count() == 1


def test_forged_expired_and_revoked_links_change_nothing(run_commits, settings, mailbox):
    ann = person("ann", email="ann@example.org")
    job = waiting(run_commits, {"assignees": ["ann"]})
    url = _links(mailbox)[("ann@example.org", "approve")]
    token = url.rsplit("/", 1)[1]
    forged = signing.dumps({"n": "0" * 32}, salt="not-the-link-salt")
    assert Client().post(f"/pipeline/links/{forged}").status_code == 400
    assert Client().post(url[:-2] + "xx").status_code == 400
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.PIPELINE_LINK_MAX_AGE_SECONDS + 5)):
        assert Client().post(url).status_code == 410
    # Permission is checked again when the decision is made, not only when the link was sent.
    ann.user_permissions.clear()
    assert Client().post(url).status_code == 403
    other = person("eve")
    signed_in = Client()
    signed_in.force_login(other)
    assert signed_in.post(url).status_code == 403
    assert not GateDecision.objects.exists() and links.open_link(token).used_at is None
    assert PipelineJob.objects.get(pk=job.pk).status == t.NEEDS_APPROVAL
