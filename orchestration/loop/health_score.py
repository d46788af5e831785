"""The system health score. Pure: a snapshot and a list of deductions in, numbers out.

The score is 100 minus the deductions that apply (floored at 0); healthy ≥ 80,
degraded 50–79, critical < 50. Deductions are data (``ScoreDeduction`` rows, seeded
with the control-loop seed's four: −20 more than 50 pending, −15 a job waiting over
30 minutes, −10 failures in the last hour, −5 per ledger error in the last hour), so
every point a person sees lost is a row they can read and switch.

The queue's own score counts only the deductions scoped to the queue: the emergency
rebalance reads it, so a service's outage cannot fail queued work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestration.loop.decider import holds, resolve

HEALTHY_AT = 80
DEGRADED_AT = 50
QUEUE_SCOPE = "queue"


@dataclass(frozen=True)
class DeductionSpec:
    name: str
    conditions: list[dict[str, Any]]
    points: int
    reason: str
    per_field: str = ""
    max_points: int | None = None
    scope: str = QUEUE_SCOPE


def status_for(score: int) -> str:
    if score >= HEALTHY_AT:
        return "healthy"
    if score >= DEGRADED_AT:
        return "degraded"
    return "critical"


def applies(deduction: DeductionSpec, snapshot: dict[str, Any]) -> dict[str, Any] | None:
    """The deduction as it applies to this snapshot (points, and the values that made
    it apply), or None. No conditions never applies, like a rule."""
    if not deduction.conditions:
        return None
    values: dict[str, Any] = {}
    for condition in deduction.conditions:
        ok, actual = holds(condition, snapshot)
        if not ok:
            return None
        values[condition["field"]] = actual
    points = deduction.points
    if deduction.per_field:
        units = resolve(snapshot, deduction.per_field)
        if isinstance(units, bool) or not isinstance(units, int | float):
            return None  # nothing to count: the deduction cannot say how much
        values[deduction.per_field] = units
        points = round(points * units)
    if deduction.max_points is not None:
        points = min(points, deduction.max_points)
    if points <= 0:
        return None
    return {
        "name": deduction.name,
        "reason": deduction.reason,
        "points": points,
        "values": values,
        "scope": deduction.scope,
    }


def health_score(snapshot: dict[str, Any], deductions: list[DeductionSpec]) -> dict[str, Any]:
    """The snapshot's ``system`` section: score, status, the deductions that apply, and
    the queue's own score (only its deductions)."""
    applied = [d for d in (applies(spec, snapshot) for spec in deductions) if d is not None]
    score = max(0, 100 - sum(d["points"] for d in applied))
    queue_score = max(0, 100 - sum(d["points"] for d in applied if d["scope"] == QUEUE_SCOPE))
    return {
        "health_score": score,
        "status": status_for(score),
        "deductions": applied,
        "queue_health_score": queue_score,
        "queue_status": status_for(queue_score),
    }


def explain(system: dict[str, Any]) -> list[str]:
    """One line per deduction, as a person reads it next to the score."""
    lines = []
    for d in system.get("deductions", []):
        values = ", ".join(f"{k}={v}" for k, v in d.get("values", {}).items())
        lines.append(f"-{d['points']}: {d['reason']}" + (f" ({values})" if values else ""))
    return lines
