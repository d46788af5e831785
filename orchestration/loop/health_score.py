"""The system health score (seed formula). Pure: takes a snapshot dict, returns numbers.

100 points, minus 20 when the queue is saturated (> 50 pending), 15 when a job has
waited more than 30 minutes, 10 when jobs failed in the last hour, 5 per ledger error
in the last hour; other capabilities add their own penalties through
``register_penalty``. healthy ≥ 80, degraded 50–79, critical < 50.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Penalty = tuple[int, str]
PenaltyRule = Callable[[dict[str, Any]], list[Penalty]]

QUEUE_SATURATED_PENDING = 50
OLD_PENDING_MINUTES = 30
HEALTHY_AT = 80
DEGRADED_AT = 50

_PENALTIES: list[PenaltyRule] = []


def register_penalty(rule: PenaltyRule) -> PenaltyRule:
    """Add a penalty rule: snapshot → [(points, reason)]. Used as a decorator."""
    if rule not in _PENALTIES:
        _PENALTIES.append(rule)
    return rule


@register_penalty
def _job_penalties(snapshot: dict[str, Any]) -> list[Penalty]:
    jobs = snapshot.get("jobs", {})
    found: list[Penalty] = []
    if jobs.get("pending", 0) > QUEUE_SATURATED_PENDING:
        found.append((20, f"queue saturated ({jobs['pending']} pending > {QUEUE_SATURATED_PENDING})"))
    if (jobs.get("oldest_pending_minutes") or 0) > OLD_PENDING_MINUTES:
        found.append((15, f"a job has been pending {jobs['oldest_pending_minutes']:.0f} min"))
    if jobs.get("failed_last_hour", 0) > 0:
        found.append((10, f"{jobs['failed_last_hour']} job(s) failed in the last hour"))
    return found


@register_penalty
def _ledger_penalties(snapshot: dict[str, Any]) -> list[Penalty]:
    errors = snapshot.get("ledger", {}).get("errors_last_hour", 0)
    return [(5 * errors, f"{errors} ledger error(s) in the last hour")] if errors else []


def status_for(score: int) -> str:
    if score >= HEALTHY_AT:
        return "healthy"
    if score >= DEGRADED_AT:
        return "degraded"
    return "critical"


def health_score(snapshot: dict[str, Any]) -> dict[str, Any]:
    penalties = [p for rule in _PENALTIES for p in rule(snapshot)]
    score = max(0, min(100, 100 - sum(points for points, _ in penalties)))
    return {
        "health_score": score,
        "status": status_for(score),
        "penalties": [{"points": points, "reason": reason} for points, reason in penalties],
    }
