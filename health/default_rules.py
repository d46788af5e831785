"""Default rules for service health (thresholds are data; the migration seeds them once)."""

from __future__ import annotations

DEFAULT_RULES = [
    {
        "name": "service-circuit-open",
        "description": "A service's circuit breaker opened: alert, naming root causes once",
        "conditions": [{"field": "services.breakers_open", "op": ">", "value": 0}],
        "action_type": "service_alert",
        "action_params": {"severity": "warning"},
        "priority": 7,
        "cooldown_seconds": 300,
    },
    {
        "name": "services-all-unhealthy",
        "description": "No monitored service is healthy",
        "conditions": [{"field": "services.all_unhealthy", "op": ">", "value": 0}],
        "action_type": "service_alert",
        "action_params": {"severity": "critical"},
        "priority": 10,
        "cooldown_seconds": 300,
    },
]


# What service health may cost the health score. Seeded switched off: the score is the
# documented formula (the queue's four) until a person switches these on. The emergency
# rebalance reads the queue's own score, so these never fail queued work.
DEFAULT_DEDUCTIONS = [
    {
        "name": "services-none-healthy",
        "conditions": [{"field": "services.all_unhealthy", "op": ">", "value": 0}],
        "points": 30,
        "reason": "No monitored service is healthy",
        "scope": "services",
        "enabled": False,
    },
    {
        "name": "services-down",
        "conditions": [
            {"field": "services.down", "op": ">", "value": 0},
            {"field": "services.all_unhealthy", "op": "==", "value": 0},
        ],
        "points": 10,
        "reason": "A monitored service is down (unhealthy or its circuit open)",
        "scope": "services",
        "enabled": False,
    },
    {
        "name": "service-circuits-open",
        "conditions": [{"field": "services.breakers_open", "op": ">", "value": 0}],
        "points": 5,
        "per_field": "services.breakers_open",
        "max_points": 20,
        "reason": "Service circuit breakers open (5 each, at most 20)",
        "scope": "services",
        "enabled": False,
    },
]
