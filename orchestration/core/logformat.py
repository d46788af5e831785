"""Structured JSON logs (LOG_FORMAT=json) with a component tag and correlating ids,
and the one redaction on every log line: a requests exception that names a webhook URL
with its token, logged with its traceback, leaves with the token masked."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from orchestration.core.redaction import redact, redact_text

_COMPONENTS = {
    "orchestration.loop": "orchestrator",
    "orchestration.core.jobs": "orchestrator",
    "orchestration.fleet": "worker",
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


def install_record_redaction() -> None:
    """Every log record is created with its message masked, so no handler (a file, the
    test suite's capture, a third-party one) can see the secret; idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it when it formats
            return record
        shown = redact_text(message)
        if shown != message:
            record.msg, record.args = shown, None
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class TextFormatter(logging.Formatter):
    """The plain format, masked as a whole (tracebacks included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "component": getattr(record, "component", None) or component_for(record.name),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key in _EXTRA_IDS:
            if hasattr(record, key):
                payload[key] = redact(getattr(record, key))
        if record.exc_info:
            payload["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)
