"""The fleet's default rules (DESIGN.md: open circuit → recovery; anomaly → its
recovery strategy; stale data → force upstream refresh). Seeded by migration 0005."""

from __future__ import annotations


def c(field: str, op: str, value) -> dict:
    return {"field": field, "op": op, "value": value}


FLEET_RULES = [
    {
        "name": "fleet-dead-runs",
        "description": "Worker runs stopped sending heartbeats: sweep (crash → restart + alert)",
        "conditions": [c("workers.dead_runs", ">", 0)],
        "action_type": "sweep_workers",
        "priority": 10,
    },
    {
        "name": "fleet-recovery-due",
        "description": "Open worker anomalies due another recovery attempt",
        "conditions": [c("workers.recovery_due", ">", 0)],
        "action_type": "recover_workers",
        "priority": 8,
    },
    {
        "name": "fleet-alerts-due",
        "description": "Worker anomaly alerts are due",
        "conditions": [c("workers.alerts_due", ">", 0)],
        "action_type": "deliver_worker_alerts",
        "priority": 7,
    },
    {
        "name": "fleet-open-circuits",
        "description": "A worker's circuit breaker is open: queue a probe run",
        "conditions": [c("workers.circuits_open", ">", 0)],
        "action_type": "probe_open_circuits",
        "priority": 6,
        "cooldown_seconds": 60,
    },
]
