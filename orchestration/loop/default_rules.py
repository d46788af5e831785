"""The default rule table (DESIGN.md, from the control-loop seed). Thresholds are data:
the data migration writes these rows once and people edit them from then on."""

from __future__ import annotations


def c(field: str, op: str, value) -> dict:
    return {"field": field, "op": op, "value": value}


DEFAULT_RULES = [
    {
        "name": "queue-saturated",
        "description": "Queue saturated: more than 50 jobs pending",
        "conditions": [c("jobs.pending", ">", 50)],
        "action_type": "rebalance_queue",
        "priority": 9,
        "cooldown_seconds": 60,
    },
    {
        "name": "stuck-pending",
        "description": "Jobs pending for more than 60 minutes: run them now",
        "conditions": [c("jobs.oldest_pending_minutes", ">", 60), c("jobs.stuck_pending", ">", 0)],
        "action_type": "force_publish",
        "priority": 8,
    },
    {
        "name": "recent-failures",
        "description": "Jobs failed in the last hour need attention",
        "conditions": [c("jobs.failed_last_hour", ">", 0), c("jobs.retryable_failed", ">", 0)],
        "action_type": "retry_failed",
        "priority": 8,
    },
    {
        "name": "promote-high-score",
        "description": "High-score jobs while a channel window is open: capitalise on quality and timing",
        "conditions": [c("jobs.high_score_unpromoted", ">", 0), c("scheduler.active_windows", ">", 0)],
        "action_type": "promote_high_score",
        "priority": 7,
    },
    {
        "name": "high-score-accumulation",
        "description": "More than 3 high-score jobs waiting",
        "conditions": [c("jobs.high_score", ">", 3)],
        "action_type": "schedule_job",
        "action_params": {"target": "high_score"},
        "priority": 6,
        "cooldown_seconds": 300,
    },
    {
        "name": "ledger-errors",
        "description": "High error rate: more than 5 ledger errors in the last hour",
        "conditions": [c("ledger.errors_last_hour", ">", 5)],
        "action_type": "trigger_reconciliation",
        "priority": 7,
        "cooldown_seconds": 300,
    },
    {
        "name": "critical-health",
        "description": "Critical queue: emergency rebalance fails jobs due over 2 hours ago",
        "conditions": [c("system.queue_health_score", "<", 50), c("jobs.very_old_pending", ">", 0)],
        "action_type": "rebalance_queue",
        "action_params": {"emergency": True},
        "priority": 10,
        "cooldown_seconds": 60,
    },
    {
        "name": "high-value-campaign",
        "description": "A running campaign with a budget over 100 has jobs waiting",
        "conditions": [c("campaigns.high_value_active", ">", 0)],
        "action_type": "schedule_job",
        "action_params": {"target": "campaign"},
        "priority": 9,
        "cooldown_seconds": 300,
    },
    {
        "name": "window-closing",
        "description": "A channel window closes within the hour",
        "conditions": [c("scheduler.closing_soon", ">", 0)],
        "action_type": "schedule_job",
        "action_params": {"target": "window_closing"},
        "priority": 8,
        "cooldown_seconds": 900,
    },
    {
        "name": "low-score-trend",
        "description": "Low quality trend: average score below 40, postpone low scorers 24 h",
        "conditions": [c("jobs.avg_score", "<", 40), c("jobs.low_score", ">", 0)],
        "action_type": "downgrade_low_score",
        "priority": 3,
    },
    {
        "name": "expired-leases",
        "description": "Processing jobs whose lease expired: reclaim them",
        "conditions": [c("jobs.expired_leases", ">", 0)],
        "action_type": "trigger_reconciliation",
        "priority": 10,
    },
]


# The health score's deductions (the control-loop seed's formula). Data like the rules:
# the migration writes them once and people edit or switch them from then on.
DEFAULT_DEDUCTIONS = [
    {
        "name": "queue-saturated",
        "conditions": [c("jobs.pending", ">", 50)],
        "points": 20,
        "reason": "Queue saturated: more than 50 jobs pending",
    },
    {
        "name": "job-waiting-long",
        "conditions": [c("jobs.oldest_pending_minutes", ">", 30)],
        "points": 15,
        "reason": "A job has waited more than 30 minutes since it was due",
    },
    {
        "name": "recent-failures",
        "conditions": [c("jobs.failed_last_hour", ">", 0)],
        "points": 10,
        "reason": "Jobs failed in the last hour",
    },
    {
        "name": "ledger-errors",
        "conditions": [c("ledger.errors_last_hour", ">", 0)],
        "points": 5,
        "per_field": "ledger.errors_last_hour",
        "reason": "Ledger errors in the last hour (5 points each)",
    },
]
