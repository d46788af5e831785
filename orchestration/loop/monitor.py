"""Monitor: one snapshot of the whole system, with a constant number of queries.

Each capability contributes a section through ``snapshot_section``. A section must
use aggregate queries only, so the query count does not grow with the data; the test
suite checks that with large tables. A section made of aggregates alone registers
through ``aggregate_section`` instead: the snapshot reads all such sections in a
single query (``aggregate_together``), which keeps a control-loop cycle within its
15 queries as capabilities add sections.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Aggregate, Avg, Count, Min, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from orchestration.core.choices import CLAIMABLE_STATUSES, FINAL_STATUSES, JobStatus
from orchestration.core.jobs.counts import ACTIVE_STATUSES, finished_since
from orchestration.core.models import Campaign, Job, LedgerEntry
from orchestration.core.models.jobs import due_before
from orchestration.loop.health_score import DeductionSpec, health_score
from orchestration.loop.models import ChannelWindow, ScoreDeduction
from orchestration.loop.windows import window_state

Section = Callable[[datetime], dict[str, Any]]
# A part of an aggregate section: what ``queryset.aggregate(**aggregates)`` reads.
Aggregation = tuple[QuerySet, Mapping[str, Aggregate]]
Parts = Callable[[datetime], Sequence[Aggregation]]
Finish = Callable[[datetime, list[dict[str, Any]]], dict[str, Any]]

_SECTIONS: dict[str, Section] = {}
# Declared number of queries per section: the test suite holds every section to its
# budget with large tables, so a section that starts scanning rows fails a test.
_QUERY_BUDGETS: dict[str, int] = {}
# Sections registered through aggregate_section(): build_snapshot reads all their
# parts in a single query.
_AGGREGATE_SECTIONS: dict[str, tuple[Parts, Finish]] = {}


HIGH_SCORE = 80
LOW_SCORE = 40
STUCK_PENDING_MINUTES = 60
EMERGENCY_PENDING_MINUTES = 120
# build_snapshot's own read besides the sections: the enabled score deductions.
DEDUCTION_QUERIES = 1
MAX_AUTO_RETRIES = 1
HIGH_VALUE_BUDGET = 100


def snapshot_section(name: str, *, queries: int) -> Callable[[Section], Section]:
    """Register ``func(now) -> dict`` as the snapshot's ``name`` section, which runs at
    most ``queries`` aggregate queries whatever the size of the tables."""

    def register(func: Section) -> Section:
        _SECTIONS[name] = func
        _QUERY_BUDGETS[name] = queries
        _AGGREGATE_SECTIONS.pop(name, None)
        return func

    return register


def aggregate_section(name: str, parts: Parts) -> Callable[[Finish], Section]:
    """Register a section made of aggregates only, as one query's worth of parts.

    ``parts(now)`` lists the ``(queryset, aggregates)`` pairs the section reads;
    the decorated ``finish(now, results)`` turns their results (one dict per part,
    in order) into the section. ``build_snapshot`` reads the parts of every such
    section in one query; called on its own, the section runs one query. What the
    decorator returns is the plain ``section(now) -> dict``.
    """

    def register(finish: Finish) -> Section:
        def section(now: datetime) -> dict[str, Any]:
            return finish(now, aggregate_together(*parts(now)))

        section.__name__ = section.__qualname__ = finish.__name__
        section.__doc__ = finish.__doc__
        section.__module__ = finish.__module__
        _SECTIONS[name] = section
        _QUERY_BUDGETS[name] = 1
        _AGGREGATE_SECTIONS[name] = (parts, finish)
        return section

    return register


def empty_section(name: str, **defaults: Any) -> None:
    """Reserve a section that a later capability fills, so clients can rely on it."""
    if name not in _SECTIONS:
        _SECTIONS[name] = lambda now: dict(defaults)
        _QUERY_BUDGETS[name] = 0


def sections() -> dict[str, Section]:
    return dict(_SECTIONS)


def query_budget(name: str | None = None) -> int:
    """The declared query budget of one section, or of the whole snapshot (where the
    aggregate sections share one query)."""
    if name:
        return _QUERY_BUDGETS[name]
    own = sum(budget for section, budget in _QUERY_BUDGETS.items() if section not in _AGGREGATE_SECTIONS)
    return own + (1 if _AGGREGATE_SECTIONS else 0) + DEDUCTION_QUERIES


def aggregate_together(*parts: Aggregation) -> list[dict[str, Any]]:
    """``[queryset.aggregate(**aggregates) for queryset, aggregates in parts]`` in one query.

    Each part is compiled by Django exactly as ``aggregate()`` would compile it (so
    each keeps its own WHERE clause and index), becomes a single-row derived table,
    and the parts are cross-joined: one row, one round trip. Values go through the
    same converters as ``aggregate()`` (on SQLite a MIN over a datetime comes back as
    a string from the database and leaves here as an aware datetime).

    A part is a plain filtered queryset: annotations, slicing, DISTINCT or GROUP BY
    would need ``aggregate()``'s subquery form, so they are refused rather than
    silently compiled into something else.
    """
    if not parts:
        return []
    connection = connections[parts[0][0].db]
    sqls: list[str] = []
    params: list[Any] = []
    decoders: list[tuple[list[str], Any, dict]] = []
    for index, (queryset, aggregates) in enumerate(parts):
        query = queryset.query.chain()
        if query.annotations or query.is_sliced or query.distinct or query.combinator or query.group_by is not None:
            raise ValueError("aggregate_together() takes plain filtered querysets")
        if queryset.db != parts[0][0].db:
            raise ValueError("aggregate_together() parts must share one database")
        query.select = ()
        query.default_cols = False
        query.clear_ordering(force=True)
        for alias, aggregate in aggregates.items():
            query.add_annotation(aggregate, alias, select=True)
        # elide_empty=False: a WHERE that can match nothing (``status__in=[]``)
        # compiles to ``0 = 1`` so the part still yields its one row (COUNT 0, MIN
        # NULL), as aggregate() answers for an empty result.
        compiler = query.get_compiler(connection=connection, elide_empty=False)
        sql, part_params = compiler.as_sql()
        sqls.append(f"({sql}) AS part{index}")
        params.extend(part_params)
        columns = list(query.annotation_select.values())
        decoders.append((list(query.annotation_select), compiler, compiler.get_converters(columns)))
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM " + " CROSS JOIN ".join(sqls), params)
        row = cursor.fetchone()
    results = []
    start = 0
    for aliases, compiler, converters in decoders:
        values = row[start : start + len(aliases)]
        start += len(aliases)
        (converted,) = compiler.apply_converters((values,), converters)
        results.append(dict(zip(aliases, converted, strict=True)))
    return results


def build_snapshot(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    # The aggregate sections' parts first, all in one round trip; each part keeps
    # its own WHERE clause and index, so this costs what the separate queries cost
    # minus their round trips.
    # (Planned in the snapshot's order, which is the order the results are used in.)
    planned = {name: list(_AGGREGATE_SECTIONS[name][0](now)) for name in _SECTIONS if name in _AGGREGATE_SECTIONS}
    results = iter(aggregate_together(*(part for parts in planned.values() for part in parts)))
    snapshot: dict[str, Any] = {"taken_at": now.isoformat()}
    for name, section in _SECTIONS.items():
        if name in planned:
            finish = _AGGREGATE_SECTIONS[name][1]
            snapshot[name] = finish(now, list(islice(results, len(planned[name]))))
        else:
            snapshot[name] = section(now)
    snapshot["system"] = health_score(snapshot, deduction_specs())
    return snapshot


def deduction_specs() -> list[DeductionSpec]:
    """The enabled health-score deductions, as plain data for the pure score."""
    return [
        DeductionSpec(
            name=d.name,
            conditions=d.conditions or [],
            points=d.points,
            reason=d.reason,
            per_field=d.per_field,
            max_points=d.max_points,
            scope=d.scope,
        )
        for d in ScoreDeduction.objects.filter(enabled=True)
    ]


def _jobs_parts(now: datetime) -> list[Aggregation]:
    """The live queue, the recently finished and the last hour's failures, each part
    a range of the index that suits it: the cost follows what changes, not history."""
    return [
        # One pass over the live part of the queue (pending, retry, processing) that
        # reads only job_live_snapshot_idx, never the table.
        (
            Job.objects.filter(status__in=ACTIVE_STATUSES),
            {
                **{status: Count("id", filter=Q(status=status)) for status in ACTIVE_STATUSES},
                # A job waits from the moment it is due (not_before, else created_at):
                # one scheduled for tomorrow is not stuck today.
                "oldest_pending": Min(
                    Coalesce("not_before", "created_at"), filter=Q(status=JobStatus.PENDING) & due_before(now)
                ),
                "stuck_pending": Count(
                    "id",
                    filter=Q(status=JobStatus.PENDING, forced=False)
                    & due_before(now - timedelta(minutes=STUCK_PENDING_MINUTES)),
                ),
                "very_old_pending": Count(
                    "id",
                    filter=Q(status=JobStatus.PENDING) & due_before(now - timedelta(minutes=EMERGENCY_PENDING_MINUTES)),
                ),
                "scheduled_pending": Count("id", filter=Q(status=JobStatus.PENDING, not_before__gte=now)),
                "high_score": Count("id", filter=Q(status__in=CLAIMABLE_STATUSES, score__gt=HIGH_SCORE)),
                "high_score_unpromoted": Count(
                    "id", filter=Q(status__in=CLAIMABLE_STATUSES, score__gt=HIGH_SCORE, promoted=False)
                ),
                "low_score": Count(
                    "id", filter=Q(status__in=CLAIMABLE_STATUSES, score__lt=LOW_SCORE, downgraded=False)
                ),
                "avg_score": Avg("score", filter=Q(status__in=CLAIMABLE_STATUSES)),
                "expired_leases": Count("id", filter=Q(status=JobStatus.PROCESSING, lease_expires_at__lt=now)),
            },
        ),
        # Finished in the window: one range of job_finished_idx per final status,
        # counting a column of the index so PostgreSQL reads the index alone (COUNT(id)
        # visited 33k heap rows at 1M jobs: 10 ms → 3 ms).
        (
            Job.objects.filter(status__in=FINAL_STATUSES, finished_at__gte=finished_since(now)),
            {status: Count("status", filter=Q(status=status)) for status in FINAL_STATUSES},
        ),
        # Failures of the last hour: a range of job_finished_idx.
        (
            Job.objects.filter(status=JobStatus.FAILED, finished_at__gte=now - timedelta(hours=1)),
            {
                "failed_last_hour": Count("id"),
                "retryable_failed": Count("id", filter=Q(auto_retries__lt=MAX_AUTO_RETRIES, failed_permanently=False)),
            },
        ),
    ]


@aggregate_section("jobs", _jobs_parts)
def jobs_section(now: datetime, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per status: the live ones (pending, retry, processing) whatever their
    age, the final ones (completed, failed, canceled) finished within
    ``JOB_FINISHED_WINDOW_HOURS``; ``total`` is their sum."""
    live, finished, failed = results
    counts = {**{status: live.pop(status) for status in ACTIVE_STATUSES}, **finished}
    oldest = live.pop("oldest_pending")
    avg = live.pop("avg_score")
    section = {status: counts[status] for status in JobStatus.values}
    section.update(
        total=sum(counts.values()),
        finished_window_hours=settings.JOB_FINISHED_WINDOW_HOURS,
        oldest_pending_minutes=round(max(0.0, (now - oldest).total_seconds()) / 60, 1) if oldest else 0,
        avg_score=round(avg, 1) if avg is not None else None,
        queue_saturated=section[JobStatus.PENDING] > 50,
        **live,
        **failed,
    )
    return section


@snapshot_section("scheduler", queries=1)
def scheduler_section(now: datetime) -> dict[str, Any]:
    windows = {
        w.channel: window_state(w.start_hour, w.end_hour, now) for w in ChannelWindow.objects.filter(enabled=True)
    }
    return {
        "windows": windows,
        "active_windows": sum(1 for w in windows.values() if w["active"]),
        "active_channels": sorted(c for c, w in windows.items() if w["active"]),
        "closing_soon": sum(1 for w in windows.values() if w["closing_soon"]),
    }


@snapshot_section("campaigns", queries=1)
def campaigns_section(now: datetime) -> dict[str, Any]:
    running = (
        Q(active=True)
        & (Q(starts_at__isnull=True) | Q(starts_at__lte=now))
        & (Q(ends_at__isnull=True) | Q(ends_at__gt=now))
    )
    rows = list(
        Campaign.objects.filter(running)
        .annotate(pending_jobs=Count("jobs", filter=Q(jobs__status__in=CLAIMABLE_STATUSES)))
        .values("name", "channel", "budget", "pending_jobs")[:50]
    )
    for row in rows:
        row["budget"] = float(row["budget"])
    return {
        "active": len(rows),
        "total_budget": round(sum(r["budget"] for r in rows), 2),
        "high_value_active": sum(1 for r in rows if r["budget"] > HIGH_VALUE_BUDGET and r["pending_jobs"]),
        "campaigns": rows,
    }


def _ledger_parts(now: datetime) -> list[Aggregation]:
    return [
        (
            LedgerEntry.objects.filter(created_at__gte=now - timedelta(hours=1)),
            {
                "errors_last_hour": Count("id", filter=Q(severity__in=("error", "critical"))),
                "warnings_last_hour": Count("id", filter=Q(severity="warning")),
            },
        )
    ]


@aggregate_section("ledger", _ledger_parts)
def ledger_section(now: datetime, results: list[dict[str, Any]]) -> dict[str, Any]:
    (counts,) = results
    return counts


# Filled in by the capabilities that own them; present from day one so clients and
# rules can rely on the keys.
empty_section("workers", total=0, enabled=0, running=0, failed_last_hour=0, open_anomalies=0)
empty_section("services", total=0, overall_health="unknown")
empty_section("pipeline", total=0, awaiting_approval=0)
