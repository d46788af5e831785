"""Decider: rules (plain data) + snapshot → actions sorted by priority. Pure, no ORM.

A condition is ``{"field": "jobs.pending", "op": ">", "value": 50}``. Fields are dotted
paths into the snapshot; operators are a fixed table, never ``eval``. A condition on
a missing field is false, so a rule about a capability that is not installed stays
quiet instead of crashing the cycle.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

OPERATORS = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

_MISSING = object()
MISSING = _MISSING  # what resolve() answers for a field the snapshot lacks


class ConditionError(ValueError):
    pass


@dataclass(frozen=True)
class RuleSpec:
    name: str
    conditions: list[dict[str, Any]]
    action_type: str
    priority: int
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    rule_id: int | None = None


@dataclass
class PlannedAction:
    type: str
    priority: int
    reason: str
    target: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    rule: str = ""
    rule_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "priority": self.priority,
            "reason": self.reason,
            "target": self.target,
            "params": self.params,
            "trigger": self.trigger,
            "rule": self.rule,
        }


def resolve(snapshot: dict[str, Any], path: str) -> Any:
    node: Any = snapshot
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def validate_condition(condition: Any) -> dict[str, Any]:
    """Return the condition if well-formed, else raise ConditionError saying why."""
    if not isinstance(condition, dict):
        raise ConditionError("each condition must be an object with field, op and value")
    unknown = set(condition) - {"field", "op", "value"}
    if unknown:
        raise ConditionError(f"unknown keys in condition: {', '.join(sorted(unknown))}")
    fld, op = condition.get("field"), condition.get("op")
    if not isinstance(fld, str) or not fld or any(not part for part in fld.split(".")):
        raise ConditionError("field must be a dotted path such as 'jobs.pending'")
    if op not in OPERATORS:
        raise ConditionError(f"op must be one of {', '.join(OPERATORS)} (got {op!r})")
    if "value" not in condition:
        raise ConditionError("value is required")
    value = condition["value"]
    if not isinstance(value, int | float | str | bool) or value is None:
        raise ConditionError("value must be a number, string or boolean")
    if op not in ("==", "!=") and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ConditionError(f"op {op!r} needs a numeric value")
    return condition


def holds(condition: dict[str, Any], snapshot: dict[str, Any]) -> tuple[bool, Any]:
    actual = resolve(snapshot, condition["field"])
    if actual is _MISSING or actual is None:
        return False, None
    try:
        return bool(OPERATORS[condition["op"]](actual, condition["value"])), actual
    except TypeError:  # comparing a dict with a number, say: the rule does not apply
        return False, actual


def evaluate(rule: RuleSpec, snapshot: dict[str, Any]) -> PlannedAction | None:
    """The action this rule asks for, or None. An empty condition list never fires."""
    if not rule.conditions:
        return None
    trigger: dict[str, Any] = {}
    for condition in rule.conditions:
        ok, actual = holds(condition, snapshot)
        if not ok:
            return None
        trigger[condition["field"]] = actual
    reason = rule.reason or rule.name
    detail = ", ".join(f"{k}={v}" for k, v in trigger.items())
    return PlannedAction(
        type=rule.action_type,
        priority=rule.priority,
        reason=f"{reason} ({detail})",
        target=str(rule.params.get("target", "")),
        params=dict(rule.params),
        trigger=trigger,
        rule=rule.name,
        rule_id=rule.rule_id,
    )


def decide(rules: list[RuleSpec], snapshot: dict[str, Any]) -> list[PlannedAction]:
    """Every firing rule's action, highest priority first (stable for equal priority)."""
    actions = [a for a in (evaluate(rule, snapshot) for rule in rules) if a is not None]
    return sorted(actions, key=lambda a: -a.priority)


def summarize(actions: list[PlannedAction]) -> str:
    if not actions:
        return "No actions needed"
    kinds: dict[str, int] = {}
    for action in actions:
        kinds[action.type] = kinds.get(action.type, 0) + 1
    parts = ", ".join(f"{n}× {kind}" if n > 1 else kind for kind, n in kinds.items())
    return f"{len(actions)} action(s): {parts}; top priority {actions[0].priority} ({actions[0].type})"
