"""Routing against real local services on 127.0.0.1, the real database and job queue."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from django.utils import timezone

from health.models import Service
from orchestration.core.choices import JobStatus
from orchestration.core.jobs import queue
from orchestration.core.models import Job, LedgerEntry
from orchestration.routing import executor, improvement
from orchestration.routing.models import OutlierState, RouteStat, Suggestion, TaskOutcome
from orchestration.routing.router import NoRoute, route
from tests.routing.helpers import drain, run_task
from tests.support.processes import ROOT, subprocess_env

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


def test_round_robin_is_an_exact_rotation_across_two_processes(transactional_db, services):
    for name in ("a", "b", "c"):
        services(name)
    script = (
        "import django; django.setup()\n"
        "from orchestration.routing.router import route\n"
        "print(' '.join(route('email_campaign', strategy='round_robin', advance=True).primary_service "
        "for _ in range(15)))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    picks = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        picks += out.split()
    assert Counter(picks) == {"a": 10, "b": 10, "c": 10}


def test_least_loaded_follows_in_flight_counts(services):
    services("a")
    services("b")
    services("c")
    for ref, n in (("route:a", 3), ("route:b", 1), ("route:c", 2)):
        Job.objects.bulk_create(Job(kind="routing.task", reference=ref) for _ in range(n))
    decision = route("email_campaign", strategy="least_loaded")
    assert decision.primary_service == "b" and decision.fallback_services == ["c", "a"]
    Job.objects.filter(reference="route:b").update(status=JobStatus.COMPLETED)
    Job.objects.filter(reference="route:a").update(status=JobStatus.FAILED)
    assert route("email_campaign", strategy="least_loaded").primary_service == "a"


def test_a_failed_try_fails_over_at_once_without_backoff(services):
    _, broken = services("a-broken", "failing")
    _, good = services("b-good")
    job = run_task(strategy="round_robin")  # rotation 0 → a-broken first
    assert job.status == JobStatus.COMPLETED
    assert job.result["service"] == "b-good" and job.result["fallbacks_used"] == 1
    # Failover first: one try on the broken primary, then the fallback in the same attempt.
    assert broken.count == 1 and good.count == 1 and job.attempts == 1
    assert good.requests[0] == {"n": 1}
    outcomes = list(TaskOutcome.objects.order_by("id").values_list("service_name", "success", "attempt"))
    assert outcomes == [("a-broken", False, 1), ("b-good", True, 2)]
    assert TaskOutcome.objects.get(service_name="a-broken").error_class == "http_5xx"
    stat = RouteStat.objects.get(service_name="a-broken")
    assert (stat.count, stat.successes) == (1, 0)


def test_backoff_only_between_rounds_and_tries_are_bounded(services, generous_budget):
    _, one = services("a", "failing")
    _, two = services("b", "failing")
    job, _ = executor.submit("email_campaign", "high", {"n": 1}, strategy="round_robin")
    queue.execute(*queue.claim(1, owner="test:1")[0])
    job.refresh_from_db()
    # Round one: both services at once; then the exponential backoff before round two.
    assert (one.count, two.count) == (1, 1) and job.status == JobStatus.RETRY
    assert 0.5 < (job.not_before - timezone.now()).total_seconds() <= 1.0
    drain()
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "every service failed in 4 round(s)" in job.error
    # high priority: 3 retries → 4 rounds of 2 services = 8 tries, the cap.
    assert one.count + two.count == executor.MAX_TRIES_PER_TASK == 8


def test_the_retry_budget_stops_a_wide_outage_from_multiplying_the_load(services):
    _, one = services("a", "failing")
    _, two = services("b", "failing")
    jobs = [executor.submit("email_campaign", "high", {"n": i}, strategy="round_robin")[0] for i in range(10)]
    for pk, token in queue.claim(100, owner="test:1"):
        queue.execute(pk, token)
    # Ten first tries and at least three retries allowed in the window: 2 of 10 (20 %) < 3.
    assert TaskOutcome.objects.filter(attempt=1).count() == 10
    assert TaskOutcome.objects.filter(attempt__gt=1).count() == 3
    assert one.count + two.count == 13
    waiting = Job.objects.filter(pk__in=[j.pk for j in jobs], error__startswith="retry budget of email_campaign")
    assert waiting.count() == 7 and all(j.status == JobStatus.RETRY for j in waiting)


def test_process_failures_eject_the_service_and_passing_health_checks_do_not_undo_it(generous_budget, services):
    broken, broken_server = services("a-broken", "failing")
    services("b-good")
    for _ in range(10):  # every other one starts on a-broken: five failures in a row
        assert run_task(strategy="round_robin").status == JobStatus.COMPLETED
    state = OutlierState.objects.get(service_name="a-broken", task_type="email_campaign")
    assert state.is_ejected() and state.reason.startswith("5 consecutive failures")
    entry = LedgerEntry.objects.get(event_type="routing.service_ejected", subject="service:a-broken")
    assert entry.data["ejections"] == 1 and "5 consecutive failures" in entry.message
    for _ in range(3):
        broken.check_now()  # its /health answers 200
    broken.refresh_from_db()
    assert broken.health == "healthy"
    assert OutlierState.objects.get(pk=state.pk).is_ejected()
    before = broken_server.count
    for _ in range(6):
        job = run_task(strategy="round_robin")
        assert job.status == JobStatus.COMPLETED and job.result["fallbacks_used"] == 0
    assert broken_server.count == before  # not one first try while ejected
    decision = route("email_campaign", strategy="round_robin")
    assert decision.fallback_services == ["a-broken"]
    assert "not a-broken: ejected until" in decision.reasoning
    with pytest.raises(NoRoute):
        route("email_campaign", requirements={"capabilities": ["something_else"]})


def test_disabled_and_unhealthy_services_are_not_routed_to(services):
    a, _ = services("a")
    b, _ = services("b")
    services("c")
    a.enabled = False
    a.save()
    Service.objects.filter(pk=b.pk).update(health="unhealthy")
    decision = route("email_campaign")
    assert decision.primary_service == "c" and decision.fallback_services == []
    assert decision.excluded == {"a": "disabled", "b": "unhealthy"}


def test_best_shifts_traffic_to_the_better_service(generous_budget, services):
    services("flaky", "flapping")
    services("solid")
    primaries = []
    for i in range(50):
        _job, decision = executor.submit("email_campaign", "high", {"i": i})
        primaries.append(decision.primary_service)
        drain()
    assert primaries[0] in ("flaky", "solid")
    assert Counter(primaries[-25:])["solid"] >= 20
    stats = {s.service_name: s for s in RouteStat.objects.filter(task_type="email_campaign")}
    assert stats["solid"].success_rate == 1.0 and stats["flaky"].success_rate < 0.7


def test_confidence_rises_with_successes(services):
    services("solid")
    assert route("email_campaign").confidence == 0.7
    for _ in range(10):
        run_task()
    assert route("email_campaign").confidence >= 0.9


def test_a_client_error_is_not_retried_and_not_blamed_on_the_service(services):
    rejecting, server = services("picky", "reject")
    job = run_task()
    assert job.status == JobStatus.FAILED and "rejected the task" in job.error
    assert server.count == 1
    rejecting.refresh_from_db()
    assert rejecting.circuit.consecutive_failures == 0


def test_a_slow_service_yields_a_suggestion_and_nothing_changes_until_approved(services):
    _fast, _ = services("fast")
    slow, _ = services("slow")
    for _ in range(12):
        executor.remember(task_type="email_campaign", service="fast", success=True, execution_ms=120)
        executor.remember(task_type="email_campaign", service="slow", success=True, execution_ms=2400)
    result = improvement.analyze(24)
    suggestion = Suggestion.objects.get(kind="slow_service")
    assert suggestion.pk in result["created"] and suggestion.subject == "slow:email_campaign"
    assert suggestion.status == "pending" and suggestion.auto_apply is False
    assert suggestion.evidence["avg_ms"] == 2400 and suggestion.evidence["fastest_ms"] == 120
    slow.refresh_from_db()
    assert slow.weight == 1.0 and slow.enabled  # nothing applied
    improvement.analyze(24)
    assert Suggestion.objects.filter(kind="slow_service").count() == 1  # not duplicated while pending
    suggestion.decide(True, actor="ops", before=improvement.current_metrics(suggestion))
    assert suggestion.status == "approved" and suggestion.impact["before"]["avg_ms"] == 2400
    slow.refresh_from_db()
    assert slow.weight == 1.0  # approval records the decision; a person makes the change
    executor.remember(task_type="email_campaign", service="slow", success=True, execution_ms=600)
    suggestion.track_impact(improvement.current_metrics(suggestion), actor="ops")
    assert suggestion.status == "applied" and suggestion.impact["change"]["avg_ms"].startswith("-")
