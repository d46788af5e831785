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
