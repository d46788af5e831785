"""Ejections as guarded, verified actions, and the one probe try when an ejection's time
is up, against real services on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from orchestration.core.choices import ActionStatus, JobStatus
from orchestration.core.models import LedgerEntry
from orchestration.loop.models import Action, GuardrailCounter
from orchestration.routing.models import EJECT_ACTION, EJECTION, OutlierState, verify_ejections
from orchestration.routing.router import route
from tests.routing.helpers import run_task
from tests.support.processes import ROOT, subprocess_env

pytestmark = pytest.mark.usefixtures("broker_only")
TARGET = "a-broken/email_campaign"


def _eject(services) -> tuple:
    _, broken = services("a-broken", "failing")
    services("b-good")
    for _ in range(10):
        assert run_task(strategy="round_robin").status == JobStatus.COMPLETED
    state = OutlierState.objects.get(service_name="a-broken")
    assert state.is_ejected() and state.ejections == 1
    return broken, state


@pytest.mark.django_db
def test_an_ejection_is_a_guarded_action_that_a_successful_probe_ends_and_later_verifies(
    services, generous_budget, staff_session
):
    broken, state = _eject(services)
    (action,) = Action.objects.filter(rule_name=EJECTION)
    assert action.action_type == EJECT_ACTION and action.target == TARGET
    assert action.status == ActionStatus.SUCCEEDED and action.effective is None and action.verify_after is None
    assert action.reason.startswith("5 consecutive failures (last: http://127.0.0.1:")
    assert "out for 30 s (ejection 1)" in action.reason and "verified 60 s after it ends" in action.reason
    assert action.params == {"service": "a-broken", "task_type": "email_campaign"}
    assert GuardrailCounter.objects.get(automation=EJECTION, target=TARGET).runs == 1
    assert LedgerEntry.objects.get(event_type="routing.service_ejected").data["action_id"] == action.pk
    tried = broken.count

    # Still ejected: tried by nobody while the other service answers.
    for _ in range(3):
        run_task(strategy="round_robin")
    assert broken.count == tried

    broken.behaviour = "fast"  # it recovered meanwhile
    with time_machine.travel(state.until + timedelta(seconds=1), tick=True):
        decision = route("email_campaign", strategy="round_robin")
        assert decision.primary_service == "b-good"
        assert "not a-broken: ejection over at" in decision.reasoning and "one probe try succeeds" in decision.reasoning
        job = run_task(strategy="round_robin")
        # The probe is this task's first try.
        assert job.status == JobStatus.COMPLETED and job.result["service"] == "a-broken"
        assert job.result["tries"] == 1 and broken.count == tried + 1
        state.refresh_from_db()
        assert state.until is None and not state.probation and state.probe_claimed_at is None
        assert LedgerEntry.objects.filter(event_type="routing.probe_sent", subject="service:a-broken").count() == 1
        ended = LedgerEntry.objects.get(event_type="routing.ejection_ended")
        assert "its probe try succeeded" in ended.message and ended.data["probe"] is True
        assert ended.data["action_id"] == action.pk
        action.refresh_from_db()
        assert action.result["ended_by"] == "its probe try succeeded"
        ended_at = action.verify_after - timedelta(seconds=60)
        assert action.result["ended_at"] == ended_at.isoformat()
        for _ in range(4):
            run_task(strategy="round_robin")
        # Not due yet: nothing is verified before its time.
        assert verify_ejections() == 0

    with time_machine.travel(action.verify_after + timedelta(seconds=1), tick=True):
        assert verify_ejections() == 1
    action.refresh_from_db()
    assert action.effective is True and action.verified_at is not None
    # The tries after the probe (round robin: two of the four went back to it).
    after = broken.count - tried - 1
    assert after == 2
    assert action.verification.startswith(f"{after}/{after} routed tries succeeded after the ejection ended")
    verified = LedgerEntry.objects.get(event_type="orchestrator.action_verified")
    assert verified.data == {"action_id": action.pk, "rule": EJECTION, "effective": True}
    # The console's Actions page lists it with what the check found, and the rule's rate.
    page = staff_session.get("/actions/").content.decode()
    assert f"eject_service (routing:ejection) on {TARGET}: effective — {action.verification}" in page
    assert "<td>routing:ejection</td><td>1 / 1</td>" in page


@pytest.mark.django_db
def test_a_failed_probe_renews_the_ejection_for_longer_and_marks_the_first_not_effective(services, generous_budget):
    broken, state = _eject(services)
    tried = broken.count
    with time_machine.travel(state.until + timedelta(seconds=1), tick=True):
        job = run_task(strategy="round_robin")
        # The probe failed; the task went on to the other service at once.
        assert job.status == JobStatus.COMPLETED and job.result["service"] == "b-good" and job.result["tries"] == 2
        assert broken.count == tried + 1
        state.refresh_from_db()
        assert state.is_ejected() and state.ejections == 2
        assert (state.until - state.ejected_at).total_seconds() == 60
        assert state.reason.startswith("failed on probation after ejection 1")
        for _ in range(3):
            run_task(strategy="round_robin")
        assert broken.count == tried + 1  # no second probe while the new ejection lasts
    first, second = Action.objects.filter(rule_name=EJECTION).order_by("id")
    assert first.effective is False and first.verification.startswith("ejected again at")
    assert second.status == ActionStatus.SUCCEEDED and second.effective is None
    assert "out for 60 s (ejection 2)" in second.reason


@pytest.mark.django_db
def test_a_probe_is_skipped_while_another_process_holds_it_and_taken_again_once_its_claim_is_stale(
    services, generous_budget, user_client
):
    broken, state = _eject(services)
    tried = broken.count
    later = state.until + timedelta(seconds=1)
    # Another process claimed the probe and has not answered yet.
    OutlierState.objects.filter(pk=state.pk).update(probe_claimed_at=later)
    with time_machine.travel(later, tick=True):
        (row,) = user_client.get("/api/v1/routing/ejections").json()["ejections"]
        assert row["service"] == "a-broken" and row["active"] is False and row["awaiting_probe"] is True
        for _ in range(3):
            assert run_task(strategy="round_robin").result["service"] == "b-good"
        assert broken.count == tried
    with time_machine.travel(later + timedelta(seconds=91), tick=True):
        run_task(strategy="round_robin")
        assert broken.count == tried + 1


@pytest.mark.django_db
def test_a_service_waiting_for_its_probe_gets_it_even_behind_many_others(services, generous_budget):
    _, probed = services("a-probed")
    fast = [services(f"b-{i}")[1] for i in range(5)]
    now = timezone.now()
    OutlierState.objects.create(
        service_name="a-probed",
        task_type="email_campaign",
        ejections=1,
        ejected_at=now - timedelta(seconds=31),
        until=now - timedelta(seconds=1),
        reason="5 consecutive failures",
        probation=True,
    )
    decision = route("email_campaign", strategy="round_robin")
    # Four others in front of it, and still in the task's list.
    assert decision.fallback_services[-1] == "a-probed" and len(decision.fallback_services) == 4
    job = run_task(strategy="round_robin")
    assert job.result["service"] == "a-probed" and probed.count == 1
    assert sum(f.count for f in fast) == 0
    assert not OutlierState.live("email_campaign")


@pytest.mark.django_db
def test_held_back_ejections_are_actions_too_and_leave_the_service_in_traffic(db):
    from orchestration.loop.models import AutomationPolicy

    AutomationPolicy.of(EJECTION, risky=False, max_per_hour=1, loop_limit=2)
    now = timezone.now()
    for _ in range(5):
        OutlierState.observe("billing", "render", False, capable=3, what="500", now=now)
    after = now + timedelta(minutes=2)
    # Its probe failed, but the hourly limit holds the new ejection back: in traffic again.
    assert OutlierState.observe("billing", "render", False, capable=3, what="500", now=after) is None
    state = OutlierState.objects.get(service_name="billing")
    assert not state.probation and state.until is None
    first = Action.objects.get(rule_name=EJECTION, status=ActionStatus.SUCCEEDED)
    assert first.effective is False and first.verification.startswith("its probe failed at")
    assert "not ejected again (guardrails: already ran 1 times this hour" in first.verification
    assert OutlierState.live("render", after) == {}
    OutlierState.observe("billing", "render", False, capable=3, what="500", now=after + timedelta(seconds=1))
    OutlierState.observe("billing", "render", False, capable=3, what="500", now=after + timedelta(seconds=2))
    rows = list(Action.objects.filter(rule_name=EJECTION).order_by("id").values_list("status", "reason"))
    assert [status for status, _ in rows] == [ActionStatus.SUCCEEDED, ActionStatus.RATE_LIMITED, ActionStatus.PAUSED]
    assert "limit 1" in rows[1][1] and "loop protection above 2" in rows[2][1]


PROBE_RACE = """
import sys, time
import django
django.setup()
from orchestration.core.jobs import queue
from orchestration.core.models import Job
from orchestration.routing import executor
start = float(sys.argv[1])
job, _ = executor.submit("email_campaign", "normal", {"n": 1}, strategy="round_robin")
time.sleep(max(0.0, start - time.time()))
deadline = time.time() + 60
while time.time() < deadline:
    for pk, token in queue.claim(1, owner=f"race:{job.pk}"):
        queue.execute(pk, token)
    job.refresh_from_db()
    if job.is_final:
        break
    time.sleep(0.01)
print(job.status, job.result.get("service"))
"""


@pytest.mark.django_db(transaction=True)
def test_of_processes_racing_for_a_probe_exactly_one_sends_it(services):
    _, probed = services("a-probed", "failing")
    _, good = services("b-good")
    now = timezone.now()
    # Ejected once, its time just up: the next tasks race for its probe.
    OutlierState.objects.create(
        service_name="a-probed",
        task_type="email_campaign",
        ejections=1,
        ejected_at=now - timedelta(seconds=31),
        until=now - timedelta(seconds=1),
        reason="5 consecutive failures",
        probation=True,
    )
    start = time.time() + 4
    env = subprocess_env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROBE_RACE, str(start)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    answers = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert answers == ["completed b-good"] * 4
    # One probe went out, it failed, and the ejection was renewed for longer.
    assert probed.count == 1 and good.count == 4
    assert LedgerEntry.objects.filter(event_type="routing.probe_sent").count() == 1
    state = OutlierState.objects.get(service_name="a-probed")
    assert state.ejections == 2 and state.is_ejected()
