"""The gate rules without a database: who may decide, the quorum, typed input."""

from __future__ import annotations

import pytest

from pipeline import gates
from pipeline.definitions import DefinitionError, parse

SCHEMA = {
    "type": "object",
    "required": ["tone"],
    "properties": {
        "tone": {"type": "string", "enum": ["calm", "bold"]},
        "takes": {"type": "integer", "minimum": 1, "default": 2},
        "publish": {"type": "boolean", "default": False},
    },
    "additionalProperties": False,
}
ANN = gates.Person("ann", frozenset({"editors"}), can_approve=True)
BOB = gates.Person("bob", can_approve=True)


def test_it_tallies_a_quorum_of_approvals_and_one_rejection_rejects():
    policy = gates.Policy(quorum=2)
    approve = lambda name: gates.Vote(name, gates.APPROVED)  # noqa: E731
    assert gates.tally(policy, [approve("a")]) is None
    assert gates.tally(policy, [approve("a"), approve("b")]) == gates.APPROVED
    assert gates.tally(policy, [approve("a"), gates.Vote("b", gates.REJECTED)]) == gates.REJECTED
    lenient = gates.Policy(quorum=2, reject_quorum=2)
    assert gates.tally(lenient, [gates.Vote("b", gates.REJECTED)]) is None


def test_it_checks_assignees_groups_permission_and_self_approval():
    policy = gates.Policy(assignees=("group:editors", "carol"))
    assert gates.refusal(policy, ANN, "approve", starter="zed") is None
    assert "not one of them" in gates.refusal(policy, BOB, "approve", starter="zed")
    assert "may not decide" in gates.refusal(gates.Policy(), gates.Person("eve"), "approve", starter="zed")
    assert "started this job" in gates.refusal(gates.Policy(), ANN, "approve", starter="ann")
    assert gates.refusal(gates.Policy(), ANN, "reject", starter="ann") is None  # rejecting one's own job is fine
    assert gates.refusal(gates.Policy(allow_self_approval=True), ANN, "approve", starter="ann") is None
    tiered = gates.Policy(assignees=("carol",), escalate_to=(("bob",),))
    assert gates.refusal(tiered, BOB, "approve", starter="zed", tier=0) is not None
    assert gates.refusal(tiered, BOB, "approve", starter="zed", tier=1) is None


def test_input_errors_name_the_field():
    assert gates.input_errors(SCHEMA, {"tone": "calm"}) == {}
    assert set(gates.input_errors(SCHEMA, {})) == {"tone"}
    assert set(gates.input_errors(SCHEMA, {"tone": "loud", "takes": 0})) == {"tone", "takes"}
    assert set(gates.input_errors(SCHEMA, {"tone": "calm", "colour": 1})) == {"colour"}
    assert gates.with_defaults(SCHEMA, {"tone": "bold"}) == {"tone": "bold", "takes": 2, "publish": False}


def test_a_form_is_typed_by_the_schema():
    values, errors = gates.coerce_form(SCHEMA, {"tone": "bold", "takes": "3", "publish": "on"})
    assert (values, errors) == ({"tone": "bold", "takes": 3, "publish": True}, {})
    assert gates.coerce_form(SCHEMA, {"takes": "many"})[1] == {"takes": ["'many' is not a valid integer"]}
    widgets = {f["name"]: f["widget"] for f in gates.form_fields(SCHEMA)}
    assert widgets == {"tone": "select", "takes": "number", "publish": "checkbox"}


def test_the_definition_refuses_bad_gate_settings_naming_the_key():
    doc = {
        "pipeline": {"stage_timeouts": {"a": 1}},
        "gates": {
            "a": {
                "input_schema": {"type": "object", "properties": {"x": {"type": "nonsense"}}},
                "assignees": ["ok", 5],
                "quorum": 0,
                "on_timeout": "shrug",
            }
        },
    }
    with pytest.raises(DefinitionError) as raised:
        parse(doc)
    text = str(raised.value)
    for key in ("gates.a.input_schema", "gates.a.assignees", "gates.a.quorum", "gates.a.on_timeout"):
        assert key in text
    with pytest.raises(DefinitionError, match="quorum 3 is more than the 2 assignee"):
        parse({"pipeline": {"stage_timeouts": {"a": 1}}, "gates": {"a": {"assignees": ["x", "y"], "quorum": 3}}})
    spec = parse({"pipeline": {"stage_timeouts": {"a": 1}}, "gates": {"a": {"auto_approve": True}}})
    assert spec.gates["a"]["on_timeout"] == "approve_with_defaults"


def test_runner_kinds_are_checked():
    base = {"stage_timeouts": {"a": 1}}
    with pytest.raises(DefinitionError, match=r"runners.a.argv must be a non-empty list"):
        parse({"pipeline": {**base, "runners": {"a": {"kind": "command", "argv": "make all"}}}})
    with pytest.raises(DefinitionError, match=r"runners.a.kind must be one of command, http"):
        parse({"pipeline": {**base, "runners": {"a": {"kind": "shell"}}}})
