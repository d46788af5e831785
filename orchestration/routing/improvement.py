"""Self-improvement: analyse outcomes over a window and propose changes for a person
to approve. The analysis changes nothing: only a person applying an approved
suggestion does (``Suggestion.apply``, through the target kinds of ``loop.adjustments``).

``find_findings`` and ``planned_change`` are pure (stats in, findings out; a suggestion
and the object's fields in, the change out); ``analyze`` reads the database and writes
one pending Suggestion per new finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError

from health.models import DependencyError, Service
from orchestration.core.models.ledger import record
from orchestration.core.runnables import runnable
from orchestration.loop import adjustments
from orchestration.routing.learning import percentile
from orchestration.routing.models import RouteStat, Suggestion, SuggestionStatus, TaskOutcome

SLOW_FACTOR = 2.0  # a service at 2× the type's fastest average is a bottleneck
SLOW_MIN_MS = 1000.0  # …when it also takes a second or more
FAILING_RATE = 0.8  # below 80 % success with enough evidence
MIN_EVIDENCE = 10


@dataclass
class Finding:
    kind: str
    subject: str
    title: str
    description: str
    action: str
    priority: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowStat:
    task_type: str
    service: str
    count: int
    successes: int
    avg_ms: float | None
    p95_ms: float | None


def find_findings(stats: list[WindowStat], capable: dict[str, list[str]], window_hours: float) -> list[Finding]:
    """``capable`` maps each enabled, healthy service to the task types it lists."""
    findings: list[Finding] = []
    by_type: dict[str, list[WindowStat]] = {}
    for s in stats:
        by_type.setdefault(s.task_type, []).append(s)
    for task_type, rows in by_type.items():
        timed = [r.avg_ms for r in rows if r.avg_ms and r.count >= MIN_EVIDENCE]
        fastest = min(timed) if timed else None
        for r in rows:
            rate = r.successes / r.count if r.count else 1.0
            base = {
                "task_type": task_type,
                "service": r.service,
                "count": r.count,
                "success_rate": round(rate, 3),
                "avg_ms": r.avg_ms,
                "p95_ms": r.p95_ms,
                "window_hours": window_hours,
            }
            if r.count >= MIN_EVIDENCE and rate < FAILING_RATE:
                findings.append(
                    Finding(
                        "failing_service",
                        f"{r.service}:{task_type}",
                        f"{r.service} fails {100 - rate * 100:.0f}% of {task_type} tasks",
                        f"{r.successes}/{r.count} succeeded in the last {window_hours:g} h. Consider routing "
                        f"{task_type} elsewhere, removing the capability, or investigating the service.",
                        "remove_capability",
                        "high" if rate < 0.5 else "medium",
                        base,
                    )
                )
            if (
                fastest
                and r.avg_ms
                and r.count >= MIN_EVIDENCE
                and r.avg_ms >= SLOW_MIN_MS
                and r.avg_ms >= SLOW_FACTOR * fastest
                and r.service
            ):
                findings.append(
                    Finding(
                        "slow_service",
                        f"{r.service}:{task_type}",
                        f"{r.service} is slow on {task_type} ({r.avg_ms:.0f} ms vs {fastest:.0f} ms)",
                        f"Average {r.avg_ms:.0f} ms, p95 {r.p95_ms or 0:.0f} ms, {r.avg_ms / fastest:.1f}× the fastest "
                        f"service. Consider lowering its weight, scaling it, or preferring the faster one.",
                        "lower_weight",
                        "medium",
                        {**base, "fastest_ms": fastest},
                    )
                )
        type_avgs = [r.avg_ms for r in rows if r.avg_ms]
        if len(rows) == 1 and type_avgs and type_avgs[0] >= SLOW_MIN_MS * 5 and rows[0].count >= MIN_EVIDENCE:
            only = rows[0]
            findings.append(
                Finding(
                    "slow_task_type",
                    task_type,
                    f"{task_type} tasks are slow ({only.avg_ms:.0f} ms on average)",
                    "One service handles every task of this type and it is slow; a second capable service "
                    "would spread the load.",
                    "add_capacity",
                    "medium",
                    {"task_type": task_type, "avg_ms": only.avg_ms, "count": only.count},
                )
            )
    busy_types = {s.task_type for s in stats if s.count}
    used = {(s.service, s.task_type) for s in stats if s.count}
    for service, types in capable.items():
        idle = [t for t in types if t in busy_types and (service, t) not in used]
        if idle:
            findings.append(
                Finding(
                    "unused_capacity",
                    service,
                    f"{service} is healthy but received no {', '.join(idle)} tasks",
                    f"It lists {', '.join(idle)} yet took none of them in the last {window_hours:g} h while other "
                    f"services did. Consider the least_loaded or round_robin strategy, or raising its weight.",
                    "rebalance",
                    "low",
                    {"service": service, "idle_types": idle, "window_hours": window_hours},
                )
            )
    return findings


@runnable
def analyze(window_hours: float = 24.0, *, actor: str = "system") -> dict[str, Any]:
    """Analyse the window and write a pending Suggestion for each finding that does not
    already have one waiting."""
    from django.db.models import Avg, Count, Q
    from django.utils import timezone

    since = timezone.now() - timedelta(hours=window_hours)
    window = TaskOutcome.objects.filter(created_at__gte=since)
    rows = window.values("task_type", "service_name").annotate(
        n=Count("id"), ok=Count("id", filter=Q(success=True)), avg=Avg("execution_ms")
    )
    stats = []
    for row in rows:
        times = list(
            window.filter(task_type=row["task_type"], service_name=row["service_name"], execution_ms__isnull=False)
            .order_by("-created_at")
            .values_list("execution_ms", flat=True)[:500]
        )
        stats.append(
            WindowStat(
                row["task_type"],
                row["service_name"],
                row["n"],
                row["ok"],
                round(row["avg"], 1) if row["avg"] is not None else None,
                percentile(times, 95),
            )
        )
    capable = {
        s.name: list(s.capabilities or []) for s in Service.objects.filter(enabled=True).exclude(health="unhealthy")
    }
    findings = find_findings(stats, capable, window_hours)
    for source in adjustments.sources():  # the fleet's findings about its workers
        findings += [Finding(**found) for found in source(window_hours)]
    created = []
    for finding in findings:
        exists = Suggestion.objects.filter(
            kind=finding.kind, subject=finding.subject, status=SuggestionStatus.PENDING
        ).exists()
        if not exists:
            created.append(
                Suggestion.objects.create(
                    kind=finding.kind,
                    subject=finding.subject,
                    title=finding.title,
                    description=finding.description,
                    action=finding.action,
                    priority=finding.priority,
                    evidence=finding.evidence,
                )
            )
    record(
        "routing.analysis",
        f"Analysed {sum(s.count for s in stats)} outcome(s) over {window_hours:g} h: {len(created)} new suggestion(s)",
        data={"window_hours": window_hours, "suggestions": [s.pk for s in created]},
        actor=actor,
    )
    return {"window_hours": window_hours, "outcomes": sum(s.count for s in stats), "created": [s.pk for s in created]}


# --- applying a suggestion (a person's act; never the analysis) -------------------------------
WEIGHT_DOWN = 0.5  # lower_weight halves it
WEIGHT_UP = 1.5  # rebalance raises it by half
MAX_WEIGHT = 1000.0
# The four kinds of change a suggestion may make, by its action: a service's weight or
# capabilities, a worker's cadence, a worker's or a service's switch.
WEIGHT_ACTIONS = ("lower_weight", "rebalance")
SWITCH_ACTIONS = {"disable_worker": False, "enable_worker": True, "disable_service": False, "enable_service": True}
WORKER_ACTIONS = ("set_cadence", "disable_worker", "enable_worker")


class NotApplicable(Exception):
    """This suggestion names nothing the orchestrator can change by itself (a 409)."""


@dataclass(frozen=True)
class Change:
    """One field of one service or worker: what applying sets, and what reverting puts back."""

    target: str
    name: str
    field: str
    before: Any
    after: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "name": self.name,
            "field": self.field,
            "before": self.before,
            "after": self.after,
        }


def target_of(action: str, subject: str, evidence: dict[str, Any]) -> tuple[str, str]:
    """Which object a suggestion is about: ("worker" | "service", its name)."""
    if action in WORKER_ACTIONS or evidence.get("worker"):
        return "worker", str(evidence.get("worker") or subject.removeprefix("worker:").partition(":")[0])
    return "service", str(evidence.get("service") or subject.removeprefix("service:").partition(":")[0])


def planned_change(action: str, subject: str, evidence: dict[str, Any], state: dict[str, Any]) -> Change:
    """What applying a suggestion changes, from its action and the object's fields as
    they are now (``state``: what its target kind reads)."""
    kind, name = target_of(action, subject, evidence)
    if action in WEIGHT_ACTIONS:
        weight = float(state["weight"])
        after = weight * WEIGHT_DOWN if action == "lower_weight" else min(MAX_WEIGHT, max(weight, 0.1) * WEIGHT_UP)
        return Change(kind, name, "weight", weight, round(after, 3))
    if action == "remove_capability":
        capabilities = list(state["capabilities"])
        task_type = str(evidence.get("task_type") or subject.partition(":")[2])
        if task_type not in capabilities:
            raise NotApplicable(f"{name} no longer lists {task_type}")
        return Change(kind, name, "capabilities", capabilities, [c for c in capabilities if c != task_type])
    if action == "set_cadence":
        after = {"interval_seconds": evidence.get("interval_seconds") or None, "cron": str(evidence.get("cron") or "")}
        if not (after["interval_seconds"] or after["cron"]):
            raise NotApplicable(f"the suggestion names no new cadence for {name} (interval_seconds or cron)")
        if after == state["cadence"]:
            raise NotApplicable(f"{name} already runs on that cadence")
        return Change(kind, name, "cadence", state["cadence"], after)
    if action in SWITCH_ACTIONS:
        enabled = SWITCH_ACTIONS[action]
        if state["enabled"] == enabled:
            raise NotApplicable(f"{kind} {name} is already {'enabled' if enabled else 'disabled'}")
        return Change(kind, name, "enabled", state["enabled"], enabled)
    raise NotApplicable(f"'{action or 'nothing'}' needs a person's work outside the orchestrator (e.g. new capacity)")


def current_metrics(suggestion) -> dict[str, Any]:
    """The numbers a suggestion is about, as they are now (for before/after impact)."""
    kind, name = target_of(suggestion.action, suggestion.subject, suggestion.evidence or {})
    if kind != "service":
        try:
            return adjustments.target(kind).metrics(name)
        except (adjustments.AdjustmentError, LookupError):
            return {}
    _, _, task_type = suggestion.subject.partition(":")
    rows = RouteStat.objects.filter(service_name=name)
    if task_type:
        rows = rows.filter(task_type=task_type)
    stats = list(rows)
    count = sum(r.count for r in stats)
    return {
        "count": count,
        "success_rate": round(sum(r.successes for r in stats) / count, 4) if count else None,
        "avg_ms": round(sum(r.total_ms for r in stats) / max(1, sum(r.timed for r in stats)), 1) if stats else None,
    }


class Services:
    """A service as a suggestion changes it: routing's fields through ``configure``,
    the switch through ``set_enabled`` (the admin's and the API's writes)."""

    fields = ("weight", "capabilities", "enabled")

    def read(self, name: str) -> dict[str, Any]:
        service = Service.objects.filter(name=name).first()
        if service is None:
            raise LookupError(f"service {name} does not exist")
        return {"weight": service.weight, "capabilities": list(service.capabilities or []), "enabled": service.enabled}

    def write(self, name: str, field: str, value: Any, *, actor: str, reason: str) -> None:
        service = Service.objects.get(name=name)
        try:
            if field == "enabled":
                service.set_enabled(bool(value), actor=actor)
            else:
                service.configure(actor=actor, reason=reason, **{field: value})
        except (DependencyError, ValueError, ValidationError) as exc:
            raise adjustments.AdjustmentError(f"service {name} refused {field}={value}: {exc}") from None

    def metrics(self, name: str) -> dict[str, Any]:
        return {}  # a service's numbers are its routing stats (current_metrics)


adjustments.register_target("service", Services())
