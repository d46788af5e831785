"""Who may decide a gate, what a decision must carry, and when a gate is settled.

Pure functions over plain data (no Django, no ORM): the engine, the API, the console
and the one-click links all ask these, and the tests run them without a database.

A gate's settings (in a definition's ``gates``)::

    script:
      required: true
      input_schema: {type: object, properties: {tone: {type: string, default: calm}}}
      assignees: [alice, "group:editors"]   # empty: anyone holding pipeline.approve_gate
      quorum: 2                              # approvals needed
      reject_quorum: 1                       # rejections that reject (default 1)
      allow_self_approval: false             # may the job's starter approve it?
      timeout_minutes: 60
      on_timeout: escalate                   # approve_with_defaults | reject | fail | escalate
      escalate_to: [["group:leads"], [carol]]   # tiers added one per timeout
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

APPROVE_WITH_DEFAULTS = "approve_with_defaults"
REJECT = "reject"
FAIL = "fail"
ESCALATE = "escalate"
ON_TIMEOUT = (APPROVE_WITH_DEFAULTS, REJECT, FAIL, ESCALATE)

APPROVED = "approved"
REJECTED = "rejected"

GROUP_PREFIX = "group:"


@dataclass(frozen=True)
class Policy:
    """One gate's rules, read from its settings."""

    input_schema: dict[str, Any] = field(default_factory=dict)
    assignees: tuple[str, ...] = ()
    quorum: int = 1
    reject_quorum: int = 1
    allow_self_approval: bool = False
    timeout_minutes: int = 60
    on_timeout: str = ESCALATE
    escalate_to: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def of(cls, gate: dict[str, Any] | None) -> Policy:
        gate = gate or {}
        # Gates stored before on_timeout existed said auto_approve: true for the same thing.
        default_timeout = APPROVE_WITH_DEFAULTS if gate.get("auto_approve") else ESCALATE
        return cls(
            input_schema=dict(gate.get("input_schema") or {}),
            assignees=tuple(gate.get("assignees") or ()),
            quorum=int(gate.get("quorum", 1)),
            reject_quorum=int(gate.get("reject_quorum", 1)),
            allow_self_approval=bool(gate.get("allow_self_approval", False)),
            timeout_minutes=int(gate.get("timeout_minutes", 60)),
            on_timeout=gate.get("on_timeout") or default_timeout,
            escalate_to=tuple(tuple(tier) for tier in gate.get("escalate_to") or ()),
        )

    def assignees_at(self, tier: int) -> tuple[str, ...]:
        """The gate's assignees plus the escalation tiers reached so far."""
        extra = [name for level in self.escalate_to[:tier] for name in level]
        return (*self.assignees, *extra) if (self.assignees or extra) else ()


@dataclass(frozen=True)
class Person:
    username: str
    groups: frozenset[str] = frozenset()
    can_approve: bool = False  # staff or pipeline.approve_gate
    active: bool = True


@dataclass(frozen=True)
class Vote:
    username: str
    decision: str  # APPROVED | REJECTED


class NotAllowed(Exception):
    """This person may not make this decision (answered 403)."""


def is_assignee(names: Iterable[str], person: Person) -> bool:
    for name in names:
        if name.startswith(GROUP_PREFIX):
            if name[len(GROUP_PREFIX) :] in person.groups:
                return True
        elif name == person.username:
            return True
    return False


def refusal(policy: Policy, person: Person, verb: str, *, starter: str, tier: int = 0) -> str | None:
    """Why ``person`` may not ``verb`` ("approve"/"reject") this gate, or None."""
    if not person.active:
        return f"{person.username} is not an active user"
    if not person.can_approve:
        return f"{person.username} may not decide gates (needs staff or pipeline.approve_gate)"
    names = policy.assignees_at(tier)
    if names and not is_assignee(names, person):
        return f"this gate is assigned to {', '.join(names)}; {person.username} is not one of them"
    if verb == "approve" and person.username == starter and not policy.allow_self_approval:
        return f"{person.username} started this job and this gate does not allow approving one's own job"
    return None


def waits_for(policy: Policy, person: Person, votes: Iterable[Vote], *, starter: str, tier: int = 0) -> bool:
    """True when the gate is waiting for this person: they may decide and have not yet."""
    if any(v.username == person.username for v in votes):
        return False
    return refusal(policy, person, "reject", starter=starter, tier=tier) is None


def tally(policy: Policy, votes: Iterable[Vote]) -> str | None:
    """APPROVED or REJECTED once the votes settle the gate, else None (still waiting)."""
    votes = list(votes)
    if sum(v.decision == REJECTED for v in votes) >= max(1, policy.reject_quorum):
        return REJECTED
    if sum(v.decision == APPROVED for v in votes) >= max(1, policy.quorum):
        return APPROVED
    return None


# --- typed input --------------------------------------------------------------------
def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a usable JSON Schema for a gate's input, or None."""
    if not isinstance(schema, dict):
        return f"must be a JSON Schema object, got {type(schema).__name__}"
    if not schema:
        return None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return f"not a valid JSON Schema: {exc.message}"
    if schema.get("type", "object") != "object":
        return "must describe an object (type: object): a decision's input is named fields"
    return None


def _field_of(error) -> str:
    # A missing required property is reported on its parent; name the property itself.
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        if missing:
            path.append(missing[0])
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set((error.schema.get("properties") or {}).keys())
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            path.append(extra[0])
    return ".".join(path) or "input"


def input_errors(schema: dict[str, Any], values: Any) -> dict[str, list[str]]:
    """Field (dotted path inside the input) → problems; empty when the input is valid."""
    if not isinstance(values, dict):
        return {"input": [f"must be an object, got {type(values).__name__}"]}
    if not schema:
        return {}
    errors: dict[str, list[str]] = {}
    for error in sorted(Draft202012Validator(schema).iter_errors(values), key=lambda e: list(e.absolute_path)):
        errors.setdefault(_field_of(error), []).append(error.message)
    return errors


def with_defaults(schema: dict[str, Any], values: dict[str, Any] | None = None) -> dict[str, Any]:
    """``values`` with the schema's top-level defaults filled in where absent."""
    out = dict(values or {})
    for name, prop in (schema.get("properties") or {}).items():
        if name not in out and isinstance(prop, dict) and "default" in prop:
            out[name] = prop["default"]
    return out


def form_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The schema's top-level properties as form fields for a person to fill in."""
    required = set(schema.get("required") or ())
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = prop if isinstance(prop, dict) else {}
        kind = prop.get("type", "string")
        if "enum" in prop:
            widget = "select"
        elif kind == "boolean":
            widget = "checkbox"
        elif kind in ("integer", "number"):
            widget = "number"
        elif kind in ("object", "array"):
            widget = "json"
        else:
            widget = "textarea" if prop.get("maxLength", 0) > 200 else "text"
        fields.append(
            {
                "name": name,
                "label": prop.get("title") or name.replace("_", " ").capitalize(),
                "help": prop.get("description", ""),
                "type": kind,
                "widget": widget,
                "choices": list(prop.get("enum") or ()),
                "required": name in required,
                "default": prop.get("default"),
                "minimum": prop.get("minimum"),
                "maximum": prop.get("maximum"),
            }
        )
    return fields


def coerce_form(schema: dict[str, Any], form: dict[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Text from an HTML form → typed values per the schema (then ``input_errors`` checks them)."""
    values: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for spec in form_fields(schema):
        name, kind = spec["name"], spec["type"]
        raw = form.get(name)
        if kind == "boolean":
            values[name] = raw in ("on", "true", "1", "yes")
            continue
        if raw is None or raw == "":
            continue  # absent: the schema's required list decides whether that is allowed
        try:
            if kind == "integer":
                values[name] = int(raw)
            elif kind == "number":
                values[name] = float(raw)
            elif kind in ("object", "array"):
                values[name] = json.loads(raw)
            else:
                values[name] = raw
        except ValueError:
            errors.setdefault(name, []).append(f"{raw!r} is not a valid {kind}")
    return values, errors
