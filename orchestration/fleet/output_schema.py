"""A worker's optional JSON Schema for its output. Pure: no Django.

A run whose output breaks the schema is marked ``data_valid: false`` with the
reasons, so the orchestrator itself raises DATA_CORRUPTION (anomaly_rules) and the
data-quality score drops, not only when a worker reports it.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

# Keys the orchestrator adds to an HTTP target's output; not the worker's to describe.
OWN_KEYS = ("status_code",)
MAX_PROBLEMS = 5


def schema_problem(schema: Any) -> str:
    """What is wrong with ``schema`` as a JSON Schema, or ""."""
    if schema in (None, {}):
        return ""
    if not isinstance(schema, dict):
        return "must be a JSON Schema object"
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    return ""


def problems(schema: dict[str, Any], output: dict[str, Any]) -> list[str]:
    """Where ``output`` breaks ``schema``, as short lines (at most MAX_PROBLEMS)."""
    own = {k: v for k, v in output.items() if k not in OWN_KEYS}
    found = sorted(Draft202012Validator(schema).iter_errors(own), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '(output)'}: {e.message}" for e in found[:MAX_PROBLEMS]]


def checked(schema: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    """The output, marked invalid with the reasons when it breaks the schema."""
    found = problems(schema, output)
    if not found:
        return output
    return {**output, "data_valid": False, "schema_errors": found}
