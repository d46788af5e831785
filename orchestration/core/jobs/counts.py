"""Job counts that cost what the live queue costs, not what history costs.

Live jobs (pending, retry, processing) are counted whatever their age, from an index
led by status; finished ones (completed, failed, canceled) only within
``JOB_FINISHED_WINDOW_HOURS``, a range of ``job_finished_idx``. A million jobs that
finished last month are never read.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count

from orchestration.core.choices import FINAL_STATUSES, JobStatus
from orchestration.core.models import Job

ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RETRY, JobStatus.PROCESSING)


def finished_since(now: datetime) -> datetime:
    return now - timedelta(hours=settings.JOB_FINISHED_WINDOW_HOURS)


def counts_by_status_and_lane(now: datetime) -> list[tuple[str, str, int]]:
    """``[(status, lane, n)]``: live jobs, and jobs finished in the window; one query."""

    live = Job.objects.filter(status__in=ACTIVE_STATUSES).order_by().values_list("status", "lane")
    finished = (
        Job.objects.filter(status__in=FINAL_STATUSES, finished_at__gte=finished_since(now))
        .order_by()
        .values_list("status", "lane")
    )
    rows = live.annotate(n=Count("id")).union(finished.annotate(n=Count("id")), all=True)
    return [(status, lane, n) for status, lane, n in rows]
