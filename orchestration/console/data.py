"""What the console shows, read with a fixed number of queries per panel.

Each function returns plain values for one panel of a page. Lists are capped (the
newest/most urgent rows first), so a panel costs the same whether a table holds ten
rows or a million; tests/console/test_queries.py holds them to that.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Avg, Count, FloatField, Q, Value
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, TruncMinute
from django.utils import timezone

from health.choices import BreakerState, ServiceHealth
from health.models import CircuitBreaker, MaintenanceWindow, Service
from health.report import display_health, health_filter
from orchestration.console import charts, service_list
from orchestration.core.choices import AnomalySeverity, JobStatus
from orchestration.core.jobs.counts import counts_by_status_and_lane
from orchestration.core.models import Anomaly, LedgerEntry, OrchestratorProcess
from orchestration.fleet.choices import ReportPeriod
from orchestration.fleet.models import ScoreReport, Worker
from orchestration.loop.models import Action, LoopState
from orchestration.routing.learning import confidence
from orchestration.routing.models import OutlierState, RouteStat, Suggestion, SuggestionStatus
from pipeline import transitions as t
from pipeline.choices import PipelineStatus
from pipeline.models import PipelineJob

HISTORY_MINUTES = 60
LIST_LIMIT = 50
# Matches of a filter are counted exactly up to this many ("10,000+" above).
MATCH_COUNT_LIMIT = 10_000
CYCLE_EVENTS = ("orchestrator.cycle_completed", "orchestrator.cycle_idle")
SEVERITY_ORDER = [s.value for s in AnomalySeverity]


# --- dashboard ------------------------------------------------------------------------
def loop_panel(now: datetime) -> dict[str, Any]:
    """The loop switch, the last cycle and the health score with an hour of history."""
    state = LoopState.get()
    history, since = health_history(now)
    last = state.last_cycle or {}
    score = state.last_health_score
    return {
        "state": state,
        "running": state.running,
        "score": score,
        "status": last.get("health_status") or charts.health_status(score),
        "last_cycle": last,
        "history": charts.line_chart(
            history,
            floor=0,
            ceiling=100,
            height=110,
            bands=[(0, 50, "band-critical"), (50, 80, "band-degraded")],
        ),
        "history_minutes": HISTORY_MINUTES,
        "history_from": since,
        "history_to": now,
        "dedicated_runner": state.runner_owner if state.dedicated_runner_alive(now) else "",
    }


def health_history(now: datetime) -> tuple[list[float | None], datetime]:
    """Per-minute average health score of the last HISTORY_MINUTES, from the cycles'
    ledger entries (one grouped query); a minute without cycles is a gap, so a stopped
    loop shows as one."""
    since = (now - timedelta(minutes=HISTORY_MINUTES - 1)).replace(second=0, microsecond=0)
    score = Cast(KeyTextTransform("health_score", "data"), FloatField())
    rows = (
        LedgerEntry.objects.filter(event_type__in=CYCLE_EVENTS, created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .order_by()
        .values("minute")
        .annotate(avg=Avg(score))
    )
    by_minute = {row["minute"]: row["avg"] for row in rows}
    return [by_minute.get(since + timedelta(minutes=i)) for i in range(HISTORY_MINUTES)], since


def queue_panel(now: datetime) -> dict[str, Any]:
    by_status: dict[str, int] = {s: 0 for s in JobStatus.values}
    lanes: dict[str, dict[str, int]] = {}
    # Live jobs and those finished in the window, never the whole history.
    for status, lane, n in counts_by_status_and_lane(now):
        by_status[status] = by_status.get(status, 0) + n
        if status in (JobStatus.PENDING, JobStatus.RETRY, JobStatus.PROCESSING):
            lanes.setdefault(lane or "default", {"pending": 0, "retry": 0, "processing": 0})[status] += n
    return {
        "counts": [(s, JobStatus(s).label, by_status.get(s, 0)) for s in JobStatus.values],
        "by_status": by_status,
        "total": sum(by_status.values()),
        "lanes": sorted(lanes.items()),
    }


def _rank_groups() -> dict[int, list[Q]]:
    """The rows of each rank of service_list.RANK (the breaker first, as display_health
    does), in parts. Each part is read along an index (most are a range of
    service_health_name_idx: enabled, health, name), so a page walks it in name order
    instead of sorting every row by a computed rank (6-10 ms a page at 20,000 services)."""
    # enabled=True alone is written as a bare column test, which SQLite cannot match to
    # the index; compared with a value it is the index's first column.
    on, off = Value(True), Value(False)
    open_ = Q(circuit__state=BreakerState.OPEN)
    # Found by breaker_state_idx, not by reading every service's breaker.
    opened = Q(circuit__in=CircuitBreaker.objects.filter(state=BreakerState.OPEN).values("pk"))
    named = {ServiceHealth.CIRCUIT_OPEN, ServiceHealth.UNHEALTHY, ServiceHealth.HEALTHY}
    # Unknown, and any other health the ranks do not name (the rank's default).
    others = [h for h in ServiceHealth.values if h not in named]
    return {
        # Two parts: the enabled test left bare, so the open breakers' ids lead.
        service_list.RANK[ServiceHealth.CIRCUIT_OPEN]: [
            opened & Q(enabled=True),
            Q(enabled=on, health=ServiceHealth.CIRCUIT_OPEN),
        ],
        service_list.RANK[ServiceHealth.UNHEALTHY]: [Q(enabled=on, health=ServiceHealth.UNHEALTHY) & ~open_],
        service_list.RANK[ServiceHealth.UNKNOWN]: [Q(enabled=on, health__in=others) & ~open_],
        service_list.RANK[ServiceHealth.HEALTHY]: [Q(enabled=on, health=ServiceHealth.HEALTHY) & ~open_],
        service_list.DISABLED_RANK: [Q(enabled=off)],
    }


def service_counts() -> dict[str, int]:
    """Services by the health a reader sees, over every row. Two grouped queries, so
    neither reads the breakers of every service: the stored health (covered by
    service_health_name_idx), then the few services whose breaker is open (by
    breaker_state_idx), moved from their stored health to "circuit open"."""
    counts = {h: 0 for h in service_list.HEALTHS}
    for row in Service.objects.values("enabled", "health").annotate(n=Count("*")).order_by():
        key = row["health"] if row["enabled"] else service_list.DISABLED
        counts[key] = counts.get(key, 0) + row["n"]
    open_rows = (
        CircuitBreaker.objects.filter(state=BreakerState.OPEN, service__enabled=True)
        .values("service__health")
        .annotate(n=Count("*"))
        .order_by()
    )
    for row in open_rows:
        counts[row["service__health"]] -= row["n"]
        counts[ServiceHealth.CIRCUIT_OPEN] += row["n"]
    return counts


def _filtered(query: service_list.ServiceQuery):
    services = Service.objects.all()
    if query.q:
        services = services.filter(name__icontains=query.q)
    if query.health == service_list.DISABLED:
        services = services.filter(enabled=False)
    elif query.health:
        services = services.filter(health_filter(query.health), enabled=True)
    if query.breaker == BreakerState.CLOSED:
        services = services.filter(Q(circuit__state=BreakerState.CLOSED) | Q(circuit__isnull=True))
    elif query.breaker:
        services = services.filter(circuit__state=query.breaker)
    if query.kind:
        services = services.filter(kind=query.kind)
    if query.tag:
        # The JSON text holds the tag quoted: a whole-tag match, whatever the case.
        services = services.filter(tags__icontains=json.dumps(query.tag))
    return services


def services_panel(now: datetime, query: service_list.ServiceQuery | None = None) -> dict[str, Any]:
    """One page of services, most urgent first, paged by key; the counts are over every
    service (not this page), and the matches are counted up to a bound."""
    query = query or service_list.ServiceQuery()
    counts = service_counts()
    total = sum(counts.values())
    services = _filtered(query).select_related("circuit")
    matching = services.order_by()[: MATCH_COUNT_LIMIT + 1].count() if query.filtered else total
    page = _page(services, query)
    more, page = len(page) > LIST_LIMIT, page[:LIST_LIMIT]
    quiet = MaintenanceWindow.quiet_services({s.name: s.tags or [] for s in page}, now) if page else set()
    rows = []
    for s in page:
        health = display_health(s) if s.enabled else service_list.DISABLED
        rows.append(
            {
                "service": s,
                "health": health,
                "health_label": health.replace("_", " "),
                "breaker": s.breaker_state,
                "uptime": s.uptime_percentage,
                "maintenance": s.name in quiet,
            }
        )
    return {
        "rows": rows,
        "total": total,
        "healthy": counts[ServiceHealth.HEALTHY],
        "counts": [{"health": h, "label": h.replace("_", " "), "n": counts[h]} for h in service_list.HEALTHS],
        "matching": min(matching, MATCH_COUNT_LIMIT),
        "matching_capped": matching > MATCH_COUNT_LIMIT,
        "query": query,
        "query_string": query.query_string(after=query.after),
        "next_query": query.query_string(after=(page[-1].rank, page[-1].name)) if more else None,
        "first_query": query.query_string() if query.after else None,
        "more": more,
        "maintenance": maintenance_panel(now),
    }


def _page(services, query: service_list.ServiceQuery) -> list[Service]:
    """Up to LIST_LIMIT + 1 rows after the page key, most urgent first, each with its
    ``rank``. One query: the rows whose ids the first LIST_LIMIT + 1 of each rank group
    (from the key's on) name, each group an index walk in name order; so the page costs
    the same query whatever the data, and the rank is display_health's, in Python."""
    first_rank, after_name = query.after or (0, "")
    wanted = service_list.rank_of_filter(query.health)
    picked = Q(pk__in=[])
    for rank, parts in _rank_groups().items():
        if rank < first_rank or (wanted is not None and rank != wanted):
            continue
        for where in parts:
            part = services.filter(where)
            if rank == first_rank and after_name:
                part = part.filter(name__gt=after_name)
            picked |= Q(pk__in=part.order_by("name").values("pk")[: LIST_LIMIT + 1])
    rows = list(Service.objects.select_related("circuit").filter(picked))
    for s in rows:
        s.rank = service_list.rank_of(s.enabled, display_health(s))
    rows.sort(key=lambda s: (s.rank, s.name))
    return rows[: LIST_LIMIT + 1]


def maintenance_panel(now: datetime) -> dict[str, Any]:
    """Windows on now, and those starting within a week (few rows: windows are made by hand)."""
    windows = list(
        MaintenanceWindow.objects.prefetch_related("services").filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))[
            :200
        ]
    )
    active, upcoming = [], []
    for w in windows:
        current = w.occurrence(now)
        if current:
            active.append({"window": w, "until": current[1], "scope": w.scope()})
            continue
        upcoming_span = w.next_occurrence(now)
        if upcoming_span and upcoming_span[0] <= now + timedelta(days=7):
            upcoming.append({"window": w, "starts": upcoming_span[0], "until": upcoming_span[1], "scope": w.scope()})
    upcoming.sort(key=lambda row: row["starts"])
    return {"active": active, "upcoming": upcoming[:10]}


def workers_panel(now: datetime) -> dict[str, Any]:
    workers = list(Worker.objects.select_related("circuit").order_by("-enabled", "name")[:LIST_LIMIT])
    total = Worker.objects.count()
    rows = [
        {
            "worker": w,
            "next_run_at": None if w.paused else w.next_due_at,
            "breaker": w.breaker_state,
            "fresh": w.is_fresh(now),
        }
        for w in workers
    ]
    return {"rows": rows, "total": total, "more": max(0, total - len(rows))}


def processes_panel(now: datetime) -> dict[str, Any]:
    """The process registry: alive ones first, then those gone (until they are pruned)."""
    processes = list(OrchestratorProcess.objects.order_by("-last_seen", "role", "host", "pid")[: LIST_LIMIT * 4])
    rows = [{"process": p, "alive": p.is_alive(now)} for p in processes]
    rows.sort(key=lambda row: (not row["alive"], row["process"].role, row["process"].host, row["process"].pid))
    return {
        "rows": rows,
        "alive": sum(1 for row in rows if row["alive"]),
        "restarts": sum(row["process"].restarts for row in rows),
    }


def anomalies_panel(now: datetime) -> dict[str, Any]:
    open_ = Anomaly.objects.filter(resolved_at__isnull=True)
    counts = dict(open_.order_by().values_list("severity").annotate(n=Count("id")).values_list("severity", "n"))
    latest = list(open_.select_related("worker").order_by("-detected_at", "-id")[:10])
    return {
        "by_severity": [(s, counts.get(s, 0)) for s in SEVERITY_ORDER],
        "total": sum(counts.values()),
        "latest": latest,
    }


def gates_panel(now: datetime) -> dict[str, Any]:
    waiting = list(PipelineJob.objects.filter(status=t.NEEDS_APPROVAL).order_by("waiting_since", "id")[:20])
    active = PipelineJob.objects.filter(status__in=t.ACTIVE).count()
    moving = list(
        PipelineJob.objects.filter(status__in=[s for s in t.ACTIVE if s != t.NEEDS_APPROVAL])
        .select_related("definition")
        .order_by("-updated_at", "-id")[:8]
    )
    return {
        "waiting": [{"job": job, "wait_seconds": _age(job.waiting_since, now)} for job in waiting],
        "active": active,
        "moving": [_progress_row(job) for job in moving],
    }


def _progress_row(job: PipelineJob) -> dict[str, Any]:
    done, total = job.progress()
    return {"job": job, "done": done, "total": total, "percent": round(100 * done / total) if total else 0}


def routing_panel(now: datetime) -> dict[str, Any]:
    """What routing has learned (busiest routes) and suggestions waiting for a person."""

    routes = list(RouteStat.objects.order_by("-count", "task_type", "service_name")[:8])
    pending = Suggestion.objects.filter(status=SuggestionStatus.PENDING)
    out = OutlierState.objects.filter(OutlierState.out_of_traffic(now)).order_by("-ejected_at", "service_name")
    return {
        "routes": [{"stat": r, "rate": r.success_rate, "confidence": confidence(r.successes, r.count)} for r in routes],
        "pending_suggestions": pending.count(),
        "suggestions": list(pending.order_by("-created_at", "-id")[:3]),
        "ejections": [_ejection_row(row, now) for row in out[:MAX_EJECTIONS_SHOWN]],
    }


MAX_EJECTIONS_SHOWN = 20


def _ejection_row(row: OutlierState, now: datetime) -> dict[str, Any]:
    """One service out of routed traffic, in words a person reads at a glance."""
    if row.reason == "retry_after":
        state, badge = "cooling down", "warning"
    elif row.awaiting_probe(now):
        state, badge = "waiting for its probe", "half_open"
    else:
        state, badge = "ejected", "open"
    return {"row": row, "state": state, "badge": badge}


def activity_panel(now: datetime) -> dict[str, Any]:
    return {
        "ledger": list(LedgerEntry.objects.exclude(event_type__in=CYCLE_EVENTS).order_by("-created_at", "-id")[:15]),
        "actions": list(Action.objects.order_by("-created_at", "-id")[:10]),
    }


def summary(now: datetime | None = None) -> dict[str, Any]:
    """The numbers of the dashboard, for scripts and for the live test (few queries)."""
    now = now or timezone.now()
    loop = loop_panel(now)
    queue = queue_panel(now)
    anomalies = anomalies_panel(now)
    gates = gates_panel(now)
    return {
        "timestamp": now.isoformat(),
        "health_score": loop["score"],
        "health_status": loop["status"],
        "loop": {
            "enabled": loop["state"].enabled,
            "running": loop["running"],
            "cycle_count": loop["state"].cycle_count,
            "interval_seconds": loop["state"].interval_seconds,
        },
        "jobs": queue["by_status"],
        "open_anomalies": dict(anomalies["by_severity"]),
        "gates_waiting": len(gates["waiting"]),
    }


def pipelines_page(now: datetime, status: str | None = None) -> dict[str, Any]:
    """The newest pipeline jobs (optionally of one status), with their progress."""
    jobs = PipelineJob.objects.select_related("definition").order_by("-created_at", "-id")
    if status:
        jobs = jobs.filter(status=status)
    counts = dict(PipelineJob.objects.order_by().values_list("status").annotate(n=Count("id")))
    return {
        "rows": [_progress_row(job) for job in jobs[:100]],
        "counts": [(s, PipelineStatus(s).label, counts.get(s, 0)) for s in t.STATUSES],
        "status": status or "",
        "total": sum(counts.values()),
    }


# --- per-object pages ---------------------------------------------------------------------
def service_page(service: Service, now: datetime) -> dict[str, Any]:
    checks = list(service.checks.order_by("-checked_at", "-id")[:200])
    checks.reverse()
    chart = charts.line_chart(
        [c.response_time_ms if c.success else None for c in checks],
        floor=0,
        failures=[not c.success for c in checks],
    )
    subject = f"service:{service.name}"
    transitions = list(
        LedgerEntry.objects.filter(subject=subject, event_type__startswith="health.circuit_").order_by(
            "-created_at", "-id"
        )[:LIST_LIMIT]
    )
    day = now - timedelta(hours=24)
    last_day = service.checks.filter(checked_at__gte=day).aggregate(
        n=Count("id"), ok=Count("id", filter=Q(success=True))
    )
    return {
        "service": service,
        "health": display_health(service) if service.enabled else "disabled",
        "breaker": service.circuit if service.circuit_id else None,
        "checks": list(reversed(checks))[:LIST_LIMIT],
        "chart": chart,
        "transitions": transitions,
        "depends_on": list(service.depends_on.order_by("name").values_list("name", flat=True)),
        "dependents": list(service.dependents.order_by("name").values_list("name", flat=True)),
        "uptime_24h": round(100.0 * last_day["ok"] / last_day["n"], 2) if last_day["n"] else None,
        "checks_24h": last_day["n"],
    }


def worker_page(worker: Worker, now: datetime) -> dict[str, Any]:

    runs = list(worker.runs.select_related("score").order_by("-queued_at", "-id")[:LIST_LIMIT])
    reports = list(
        ScoreReport.objects.filter(worker=worker, period=ReportPeriod.RUN).order_by("-created_at", "-id")[:60]
    )
    reports.reverse()
    chart = charts.line_chart(
        [r.overall_score for r in reports],
        floor=0,
        ceiling=100,
        bands=[(0, 40, "band-critical"), (40, 70, "band-degraded")],
    )
    durations = charts.line_chart(
        [r.duration_ms for r in runs[::-1] if r.duration_ms is not None],
        floor=0,
        height=80,
    )
    circuit = worker.circuit if worker.circuit_id else None
    anomalies = list(worker.anomalies.order_by("resolved_at", "-detected_at")[:LIST_LIMIT])
    return {
        "worker": worker,
        "runs": runs,
        "score_chart": chart,
        "duration_chart": durations,
        "last_report": reports[-1] if reports else None,
        "next_runs": worker.next_runs(5, now),
        "circuit": circuit,
        "anomalies": anomalies,
        "open_anomalies": sum(1 for a in anomalies if a.resolved_at is None),
        "fresh": worker.is_fresh(now),
        "active_run": next((r for r in runs if r.status in ("queued", "running")), None),
    }


def pipeline_job_page(job: PipelineJob, now: datetime) -> dict[str, Any]:
    config = job.config or job.definition.snapshot()
    stages = config.get("stages", [])
    gates = config.get("gates", {})
    done, total = job.progress()
    try:
        current = stages.index(job.stage)
    except ValueError:
        current = 0
    steps = []
    for index, stage in enumerate(stages):
        if job.status == t.COMPLETED or index < current:
            state = "done"
        elif index == current:
            state = {
                t.NEEDS_APPROVAL: "waiting",
                t.RUNNING: "running",
                t.QUEUED: "queued",
                t.PAUSED: "paused",
                t.FAILED: "failed",
                t.CANCELED: "canceled",
            }.get(job.status, "pending")
        else:
            state = "pending"
        steps.append({"name": stage, "state": state, "gate": stage in gates})
    return {
        "job": job,
        "steps": steps,
        "done": done,
        "total": total,
        "percent": round(100 * done / total) if total else 0,
        "gates": job.gates_view(),
        "events": list(job.events.order_by("-id")[:100]),
        "artifacts": list(job.artifacts.order_by("created_at", "id")),
        "wait_seconds": _age(job.waiting_since, now) if job.status == t.NEEDS_APPROVAL else None,
        "final": job.is_final,
    }


# --- helpers ------------------------------------------------------------------------------
def _age(since: datetime | None, now: datetime) -> float | None:
    return max(0.0, (now - since).total_seconds()) if since else None


# --- automatic actions ------------------------------------------------------------------------
def actions_page(now: datetime) -> dict[str, Any]:
    """Bounded reads: pending approvals, the latest verified actions, effectiveness per
    rule (one grouped query) and the paused automations."""
    from orchestration.core.choices import ActionStatus
    from orchestration.loop.models import Action, GuardrailCounter

    return {
        "pending": list(Action.objects.filter(status=ActionStatus.AWAITING_APPROVAL).order_by("expires_at")[:50]),
        "approved": list(Action.objects.filter(status=ActionStatus.APPROVED, executed_at__isnull=True)[:20]),
        "verified": list(Action.objects.filter(verified_at__isnull=False).order_by("-verified_at")[:20]),
        "effectiveness": sorted(Action.effectiveness_by_rule().items()),
        "paused": list(GuardrailCounter.objects.filter(paused_at__isnull=False)[:50]),
        "anomalies": list(
            Anomaly.objects.filter(resolved_at__isnull=True, severity__in=("critical", "high")).order_by("detected_at")[
                :50
            ]
        ),
        "held": list(
            GuardrailCounter.objects.filter(last_outcome="rate_limited", updated_at__gte=now - timedelta(hours=1))[:50]
        ),
    }
