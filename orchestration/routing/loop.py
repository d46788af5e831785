"""Routing in the control loop: the snapshot's ``routing`` section and its schedule."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q

from orchestration.core.choices import JobStatus
from orchestration.core.models import Job
from orchestration.core.schedules import ensure_schedule
from orchestration.loop.monitor import Aggregation, aggregate_section
from orchestration.routing.models import Suggestion, TaskOutcome, verify_ejections
from orchestration.routing.router import ROUTED_KIND


def _routing_parts(now: datetime) -> list[Aggregation]:
    """Three counts on three tables, each on its own index (COUNT(*) as ``.count()``
    has it, so PostgreSQL can answer from the index alone)."""

    return [
        (
            Job.objects.filter(kind=ROUTED_KIND, status__in=(JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.RETRY)),
            {"n": Count("*")},
        ),
        (
            TaskOutcome.objects.filter(created_at__gte=now - timedelta(hours=1)),
            {"n": Count("id"), "ok": Count("id", filter=Q(success=True))},
        ),
        (Suggestion.objects.filter(status="pending"), {"n": Count("*")}),
    ]


@aggregate_section("routing", _routing_parts)
def routing_section(now: datetime, results: list[dict[str, Any]]) -> dict[str, Any]:
    in_flight, hour, pending = results
    return {
        "in_flight": in_flight["n"],
        "outcomes_last_hour": hour["n"],
        "success_rate_last_hour": round(hour["ok"] / hour["n"], 4) if hour["n"] else None,
        "pending_suggestions": pending["n"],
    }


def sync_schedules(**kwargs: Any) -> None:
    from django_q.models import Schedule

    ensure_schedule(
        "routing.analyze",
        "orchestration.routing.improvement.analyze",
        schedule_type=Schedule.HOURLY,
        repeats=-1,
    )


class _VerifyTick:
    """Runner tick hook: the later check of ejections that ended, every
    VERIFY_EVERY_SECONDS per runner process (a check is written once: the first wins)."""

    VERIFY_EVERY_SECONDS = 10.0

    def __init__(self) -> None:
        self.last = 0.0
        self.__name__ = "routing_verify_ejections"

    def __call__(self) -> object:
        if time.monotonic() - self.last < self.VERIFY_EVERY_SECONDS:
            return None
        self.last = time.monotonic()
        return {"verified": verify_ejections()}


verify_tick = _VerifyTick()
