"""Routing in the control loop: the snapshot section, the collapse rule, the schedule."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.models import Schedule

from orchestration.core.models import Job, LedgerEntry
from orchestration.loop.cycle import run_cycle
from orchestration.loop.monitor import build_snapshot
from orchestration.routing import executor
from orchestration.routing.loop import routing_section

pytestmark = pytest.mark.django_db


def test_the_section_reports_in_flight_and_the_last_hours_success_rate():
    Job.objects.create(kind="routing.task", reference="route:a")
    for ok in (True, True, True, False):
        executor.remember(task_type="t", service="a", success=ok, execution_ms=10)
    section = build_snapshot()["routing"]
    assert section == {
        "in_flight": 1,
        "outcomes_last_hour": 4,
        "success_rate_last_hour": 0.75,
        "pending_suggestions": 0,
    }


def test_the_section_uses_a_constant_number_of_queries():
    def count() -> int:
        from django.utils import timezone

        with CaptureQueriesContext(connection) as ctx:
            routing_section(timezone.now())
        return len(ctx.captured_queries)

    small = count()
    for i in range(300):
        executor.remember(task_type="t", service=f"s{i % 7}", success=i % 3 > 0, execution_ms=i)
    assert count() == small


def test_a_collapsing_success_rate_raises_an_alert():
    for _ in range(12):
        executor.remember(task_type="t", service="a", success=False, execution_ms=10)
    result = run_cycle()
    assert "ledger_alert" in [a["type"] for a in result["decision"]["actions"]]
    alert = LedgerEntry.objects.get(event_type="routing.alert")
    assert alert.severity == "error"


def test_a_periodic_analysis_is_scheduled():
    schedule = Schedule.objects.get(name="routing.analyze")
    assert schedule.func == "orchestration.routing.improvement.analyze"
    assert schedule.schedule_type == Schedule.HOURLY
