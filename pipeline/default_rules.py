"""Default loop rules for pipelines, written once by migration 0002 (thresholds are data)."""

from __future__ import annotations

PIPELINE_RULES = [
    {
        "name": "pipeline-gate-overdue",
        "description": "A pipeline gate has waited past its timeout: escalate (auto-approve where configured)",
        "conditions": [{"field": "pipeline.overdue_gates", "op": ">", "value": 0}],
        "action_type": "escalate_pipeline_gates",
        "priority": 7,
    },
    {
        "name": "pipeline-stage-overdue",
        "description": "A pipeline stage has run past its timeout: fail it",
        "conditions": [{"field": "pipeline.overdue_stages", "op": ">", "value": 0}],
        "action_type": "fail_overdue_pipeline_stages",
        "priority": 7,
    },
]
