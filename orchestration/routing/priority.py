"""Task priority scores (routing seed). Pure.

score = priority level (critical 4, high 3, normal 2, low 1) × task-type multiplier.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PRIORITY_LEVELS = {"critical": 4, "high": 3, "normal": 2, "low": 1}

DEFAULT_TYPE_MULTIPLIERS = {
    "fraud_detection": 1.5,
    "finance": 1.5,
    "crypto_prediction": 1.2,
    "email_campaign": 1.0,
    "video_generation": 0.8,
}


def priority_level(priority: str) -> int:
    try:
        return PRIORITY_LEVELS[priority]
    except KeyError:
        raise ValueError(f"priority must be one of {', '.join(PRIORITY_LEVELS)} (got {priority!r})") from None


def priority_score(priority: str, task_type: str, multipliers: Mapping[str, float] | None = None) -> float:
    table = DEFAULT_TYPE_MULTIPLIERS if multipliers is None else multipliers
    return round(priority_level(priority) * float(table.get(task_type, 1.0)), 4)


def prioritize(tasks: list[dict[str, Any]], multipliers: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Tasks sorted by score, highest first (stable for equal scores), each with ``score``."""
    scored = [
        {**task, "score": priority_score(task.get("priority", "normal"), task.get("type", ""), multipliers)}
        for task in tasks
    ]
    return sorted(scored, key=lambda t: -t["score"])
