"""Per-minute counts of ended runs (``RunTally``): what the workers section reads for
its last-hour figures.

Every place a run ends calls :func:`count`: one ``INSERT … ON CONFLICT DO UPDATE``
that adds to the minute's row, atomic on SQLite and PostgreSQL alike, so runs ending
at once on several nodes are all counted. The last hour is read to the minute: from
the start of the minute an hour ago, so it can hold up to a minute more than a
sliding hour.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Sum
from django.db.models.functions import Coalesce

from orchestration.fleet.choices import FAILED_RUN_STATUSES, RunStatus
from orchestration.fleet.models import RunTally, WorkerRun

KEEP = timedelta(hours=2)


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def hour_start(now: datetime) -> datetime:
    """Where the last hour starts, to the minute."""
    return minute_of(now - timedelta(hours=1))


def columns(status: str) -> tuple[int, int, int]:
    """(runs, failed, skipped) that one run ending with ``status`` adds."""
    skipped = status == RunStatus.SKIPPED
    return (0 if skipped else 1, 1 if status in FAILED_RUN_STATUSES else 0, 1 if skipped else 0)


def count(status: str, ended_at: datetime, n: int = 1) -> None:
    """Add ``n`` runs that ended with ``status`` at ``ended_at`` to their minute."""
    if n <= 0:
        return
    add(minute_of(ended_at), *(c * n for c in columns(status)))


_ADD_TEXT: dict[str, str] = {}


def add(minute: datetime, runs: int, failed: int, skipped: int) -> None:
    text = _ADD_TEXT.get(connection.vendor)
    if text is None:  # made once per database: every ended run pays for this statement
        table = connection.ops.quote_name(RunTally._meta.db_table)
        text = _ADD_TEXT[connection.vendor] = (
            f"INSERT INTO {table} (minute, runs, failed, skipped) VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (minute) DO UPDATE SET runs = {table}.runs + excluded.runs, "
            f"failed = {table}.failed + excluded.failed, skipped = {table}.skipped + excluded.skipped"
        )
    with connection.cursor() as cursor:
        cursor.execute(text, [connection.ops.adapt_datetimefield_value(minute), runs, failed, skipped])


def last_hour_part(now: datetime):
    """The workers section's part: the last hour's figures from at most 61 rows."""
    return (
        RunTally.objects.filter(minute__gte=hour_start(now)),
        {
            "runs_last_hour": Coalesce(Sum("runs"), 0),
            "failed_last_hour": Coalesce(Sum("failed"), 0),
            "skipped_last_hour": Coalesce(Sum("skipped"), 0),
        },
    )


def recount(since: datetime) -> int:
    """Rebuild the minutes from ``since`` on out of the runs table (the migration that
    added the tally, and histories written in bulk). Returns how many minutes."""
    since = minute_of(since)
    per_minute: dict[datetime, Counter] = {}
    ended = WorkerRun.objects.filter(completed_at__gte=since).values_list("completed_at", "status")
    for completed_at, status in ended.iterator():
        runs, failed, skipped = columns(status)
        per_minute.setdefault(minute_of(completed_at), Counter()).update(runs=runs, failed=failed, skipped=skipped)
    RunTally.objects.filter(minute__gte=since).delete()
    RunTally.objects.bulk_create(
        [RunTally(minute=m, runs=c["runs"], failed=c["failed"], skipped=c["skipped"]) for m, c in per_minute.items()]
    )
    return len(per_minute)


def prune(now: datetime) -> int:
    return RunTally.objects.filter(minute__lt=minute_of(now - KEEP)).delete()[0]
