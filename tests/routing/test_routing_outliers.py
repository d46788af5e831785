"""Outlier ejection, cooldowns and retry budgets against real services on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestration.core.choices import JobStatus
from orchestration.core.models import LedgerEntry
from orchestration.routing import executor
from orchestration.routing.models import OutlierState, RetryBudget
from orchestration.routing.router import route
from tests.routing.helpers import drain, run_task
from tests.support.processes import ROOT, subprocess_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


def test_it_never_ejects_more_than_the_share_cap_allows(services, generous_budget):
    services("a-broken", "failing")
    services("b-broken", "failing")
    _, good = services("c-good")
    for _ in range(30):
        assert run_task(strategy="round_robin").status == JobStatus.COMPLETED
    ejected = [s.service_name for s in OutlierState.objects.all() if s.is_ejected()]
    # Half of three services is one: the other failing one keeps being tried.
    assert len(ejected) == 1
    held = LedgerEntry.objects.filter(event_type="routing.ejection_held_back")
    assert held.exists() and "too many of its 3 services are out already" in held.first().message
    assert good.count == 30


def test_a_successful_try_ends_an_ejection_early(generous_budget, services):
    _, broken = services("a-broken", "failing")
    _, good = services("b-good")
    for _ in range(10):
        run_task(strategy="round_robin")
    state = OutlierState.objects.get(service_name="a-broken")
    assert state.is_ejected()
    broken.behaviour, good.behaviour = "fast", "failing"  # they swap roles
    job = run_task(strategy="round_robin")
    assert job.status == JobStatus.COMPLETED and job.result["service"] == "a-broken"
    state.refresh_from_db()
    assert not state.is_ejected() and state.until is None and state.ended_at is not None
    assert LedgerEntry.objects.filter(event_type="routing.ejection_ended", subject="service:a-broken").exists()


def test_retry_after_cools_a_service_down_and_the_api_says_why(services, staff_client):
    _, busy = services("a-busy", "busy")
    _, good = services("b-good")
    job = run_task(strategy="round_robin")
    assert job.status == JobStatus.COMPLETED and job.result["service"] == "b-good"
    state = OutlierState.objects.get(service_name="a-busy")
    assert state.is_ejected() and state.reason == "retry_after" and state.ejections == 0
    assert 29 <= (state.until - state.ejected_at).total_seconds() <= 30
    for _ in range(4):
        run_task(strategy="round_robin")
    assert busy.count == 1 and good.count == 5
    assert LedgerEntry.objects.filter(event_type="routing.service_cooldown").count() == 1
    body = staff_client.get("/api/v1/routing/ejections").json()
    (row,) = body["ejections"]
    assert row["service"] == "a-busy" and row["task_type"] == "email_campaign"
    assert row["reason"] == "retry_after" and row["ejections"] == 0 and row["active"] is True
    assert {"ejected_at", "until"} <= set(row)


def test_a_429_without_retry_after_is_a_penalty_for_ewma(services):
    services("a-throttling", "throttling")
    services("b-slow", delay=0.05)
    for _ in range(4):
        run_task(strategy="round_robin")
    decision = route("email_campaign", strategy="ewma")
    assert decision.primary_service == "b-slow"
    assert "not a-throttling: expected wait" in decision.reasoning


def test_the_ejections_api_lists_ejections_with_their_reasons(generous_budget, services, staff_client, user_client):
    services("a-broken", "failing")
    services("b-good")
    for _ in range(10):
        run_task(strategy="round_robin")
    body = user_client.get("/api/v1/routing/ejections?type=email_campaign").json()
    (row,) = body["ejections"]
    assert row["service"] == "a-broken" and row["ejections"] == 1
    assert row["reason"].startswith("5 consecutive failures (last: http://127.0.0.1:")
    assert staff_client.get("/api/v1/routing/ejections?type=other").json()["ejections"] == []


def test_memory_groups_errors_and_links_contexts_to_tasks(services, staff_client):
    services("a-broken", "failing")
    services("b-good")
    jobs = []
    for i in range(4):
        job, _ = executor.submit("email_campaign", "normal", {"i": i}, strategy="round_robin", context="spring")
        jobs.append(job.pk)
        drain()
    staff_client.post("/api/v1/routing/contexts/", {"name": "spring", "data": {"audience": "all"}}, format="json")
    body = staff_client.get("/api/v1/routing/memory?type=email_campaign").json()
    (pattern,) = body["error_patterns"]
    assert pattern["service_name"] == "a-broken" and pattern["status_code"] == 500
    assert pattern["error_class"] == "http_5xx" and pattern["count"] == 2
    (context,) = body["contexts"]
    assert context["name"] == "spring" and context["jobs"] == jobs and context["data"] == {"audience": "all"}


def test_two_processes_share_one_retry_budget(transactional_db):
    script = (
        "import django; django.setup()\n"
        "from orchestration.routing.models import RetryBudget\n"
        "print(sum(RetryBudget.take_retry('email_campaign') for _ in range(10)))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    taken = [int(proc.communicate(timeout=60)[0]) for proc in procs]
    # No first tries yet: the floor of three retries, across both processes together.
    assert sum(taken) == 3
    assert RetryBudget.objects.get(task_type="email_campaign").denied == 17


def test_ejections_of_one_service_are_limited_per_hour_and_loop_protection_pauses_them(db):
    from datetime import timedelta

    from django.utils import timezone

    from orchestration.core.models import Anomaly
    from orchestration.loop.models import AutomationPolicy, GuardrailCounter
    from orchestration.routing.models import EJECTION

    AutomationPolicy.of(EJECTION, risky=False, max_per_hour=1, loop_limit=2)
    now = timezone.now()

    def fail_until_judged(at) -> str | None:
        # Five failures in a row call for an ejection (the default rule).
        transitions = [
            OutlierState.observe("billing", "render", False, capable=3, what="500", now=at) for _ in range(5)
        ]
        return transitions[-1]

    assert fail_until_judged(now) == "ejected"
    # Back after the ejection: on probation, one failure calls for another — the limit holds it back.
    after = now + timedelta(minutes=2)
    assert OutlierState.observe("billing", "render", False, capable=3, what="500", now=after) is None
    held = LedgerEntry.objects.filter(event_type="routing.ejection_held_back").latest("id")
    assert "guardrails" in held.message and "limit 1" in held.message
    assert not OutlierState.objects.get(service_name="billing").is_ejected(after)
    OutlierState.observe("billing", "render", False, capable=3, what="500", now=after + timedelta(seconds=1))
    counter = GuardrailCounter.objects.get(automation=EJECTION, target="billing/render")
    assert counter.paused_at is not None
    assert Anomaly.objects.filter(code="REMEDIATION_LOOP", subject=counter.subject, resolved_at__isnull=True).exists()
