"""Gate escalations as fleet anomalies, so they reach the same alert channels
(webhook, e-mail) as everything else: an overdue gate opens TIMEOUT_WARNING about
``pipeline:<id>``; a decision on the gate resolves it."""

from __future__ import annotations

import logging
from typing import Any

from orchestration.core.anomalies import open_anomaly, resolve

log = logging.getLogger("pipeline.gates")

CODE = "TIMEOUT_WARNING"


def subject(job_id: int) -> str:
    return f"pipeline:{job_id}"


def open_gate_anomaly(job_id: int, details: dict[str, Any]) -> int | None:
    anomaly, _ = open_anomaly(CODE, subject(job_id), details)
    return anomaly.pk if anomaly else None


def resolve_gate_anomaly(job_id: int) -> int:
    return resolve(CODE, subject(job_id))
