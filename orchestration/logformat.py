"""Structured JSON logs (LOG_FORMAT=json) with a component tag and correlating ids."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

_COMPONENTS = {
    "orchestration.loop": "orchestrator",
    "orchestration.jobs": "orchestrator",
    "orchestration.workers": "worker",
    "orchestration.routing": "routing",
    "health": "health",
    "pipeline.gates": "gate",
    "pipeline": "stage",
}
_EXTRA_IDS = ("job_id", "cycle", "service", "worker", "run_id", "pipeline_job", "stage")


def component_for(logger_name: str) -> str:
    for prefix, component in _COMPONENTS.items():
        if logger_name == prefix or logger_name.startswith(prefix + "."):
            return component
    return logger_name.split(".")[0]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "component": getattr(record, "component", None) or component_for(record.name),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _EXTRA_IDS:
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
