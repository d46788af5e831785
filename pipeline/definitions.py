"""Pipeline definitions as plain data: the seeded default and the YAML format.

No Django here: the loader command and the API both validate through ``parse``, and
the tests run it without a database.

YAML format (the seed's ``conf/operator.yaml``)::

    name: default                 # optional; the command's --name wins
    gates:
      script: {required: true, timeout_minutes: 60}   # more keys: pipeline/gates.py
    pipeline:
      stages: [outline, research, script]   # optional: else the order of stage_timeouts
      stage_timeouts: {outline: 30, research: 45, script: 60}
      runners:                                    # optional; else the placeholder
        outline: mypkg.stages.outline             # a function declared @runnable
        build: {kind: command, argv: [make, all], timeout_seconds: 600}   # in PIPELINE_COMMANDS
        notify: {kind: http, url: "https://example.org/hook", timeout_seconds: 10}
      lane: pipeline                              # optional
      stage_attempts: 3                           # optional
      retry_timed_out_stages: false               # optional
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestration.core import runnables
from pipeline import gates as gate_rules
from pipeline import runner_kinds
from pipeline.transitions import Definition, Gate

DEFAULT_STAGES = (
    "outline",
    "research",
    "script",
    "storyboard",
    "assets",
    "animatics",
    "audio",
    "assemble",
    "acceptance",
)
DEFAULT_STAGE_TIMEOUTS = {
    "outline": 30,
    "research": 45,
    "script": 60,
    "storyboard": 120,
    "assets": 180,
    "animatics": 90,
    "audio": 60,
    "assemble": 120,
    "acceptance": 30,
}
DEFAULT_GATES = {
    "script": {"required": True, "auto_approve": False, "timeout_minutes": 60},
    "storyboard": {"required": True, "auto_approve": False, "timeout_minutes": 120},
    "assets": {"required": True, "auto_approve": False, "timeout_minutes": 180},
    "audio": {"required": True, "auto_approve": False, "timeout_minutes": 60},
}
DEFAULT_LANE = "pipeline"

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


class DefinitionError(ValueError):
    """The definition is malformed; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass
class DefinitionSpec:
    name: str
    stages: list[str]
    gates: dict[str, dict[str, Any]]
    stage_timeouts: dict[str, int]
    runners: dict[str, Any] = field(default_factory=dict)
    lane: str = DEFAULT_LANE
    stage_attempts: int = 3
    retry_timed_out_stages: bool = False

    def machine(self) -> Definition:
        return to_machine(self.stages, self.gates)


def to_machine(stages: list[str] | tuple[str, ...], gates: dict[str, dict[str, Any]]) -> Definition:
    return Definition(
        tuple(stages),
        {
            name: Gate(
                bool(g.get("required", True)), bool(g.get("auto_approve", False)), int(g.get("timeout_minutes", 60))
            )
            for name, g in gates.items()
        },
    )


GATE_KEYS = {
    "required",
    "auto_approve",
    "timeout_minutes",
    "input_schema",
    "assignees",
    "quorum",
    "reject_quorum",
    "allow_self_approval",
    "on_timeout",
    "escalate_to",
}
_ASSIGNEE = re.compile(r"^(group:)?[\w.@+-]{1,150}$")


def _assignee_problems(key: str, names: Any) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) and _ASSIGNEE.match(n) for n in names):
        return [f"{key} must be a list of usernames and group:<name>, got {names!r}"]
    return []


def gate_settings(gate: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(problems, the gate with every default filled in); problems name the key."""
    problems: list[str] = []
    extra = set(gate) - GATE_KEYS
    if extra:
        problems.append(f"unknown key(s) {', '.join(sorted(map(str, extra)))}")
    for key in ("required", "auto_approve", "allow_self_approval"):
        if key in gate and not isinstance(gate[key], bool):
            problems.append(f"{key} must be true or false, got {gate[key]!r}")
    for key, default in (("timeout_minutes", 60), ("quorum", 1), ("reject_quorum", 1)):
        if not _positive_int(gate.get(key, default)):
            problems.append(f"{key} must be a positive whole number, got {gate.get(key)!r}")
    schema = gate.get("input_schema", {})
    problem = gate_rules.schema_problem(schema)
    if problem:
        problems.append(f"input_schema {problem}")
    assignees = gate.get("assignees", [])
    problems.extend(_assignee_problems("assignees", assignees))
    tiers = gate.get("escalate_to", [])
    if not isinstance(tiers, list):
        problems.append("escalate_to must be a list of tiers, each a list of usernames and group:<name>")
    else:
        for index, tier in enumerate(tiers):
            problems.extend(_assignee_problems(f"escalate_to[{index}]", tier))
    auto = gate.get("auto_approve", False)
    on_timeout = gate.get("on_timeout", gate_rules.APPROVE_WITH_DEFAULTS if auto is True else gate_rules.ESCALATE)
    if on_timeout not in gate_rules.ON_TIMEOUT:
        problems.append(f"on_timeout must be one of {', '.join(gate_rules.ON_TIMEOUT)}, got {on_timeout!r}")
    elif auto is True and on_timeout != gate_rules.APPROVE_WITH_DEFAULTS:
        problems.append(f"on_timeout is {on_timeout} but auto_approve is true; say one or the other")
    if isinstance(assignees, list) and _positive_int(gate.get("quorum", 1)):
        if assignees and not any(a.startswith(gate_rules.GROUP_PREFIX) for a in assignees if isinstance(a, str)):
            if gate.get("quorum", 1) > len(set(assignees)):
                problems.append(f"quorum {gate['quorum']} is more than the {len(set(assignees))} assignee(s)")
    settled = {
        "required": gate.get("required", True),
        "auto_approve": on_timeout == gate_rules.APPROVE_WITH_DEFAULTS,
        "timeout_minutes": gate.get("timeout_minutes", 60),
        "input_schema": schema if isinstance(schema, dict) else {},
        "assignees": list(assignees) if isinstance(assignees, list) else [],
        "quorum": gate.get("quorum", 1),
        "reject_quorum": gate.get("reject_quorum", 1),
        "allow_self_approval": gate.get("allow_self_approval", False),
        "on_timeout": on_timeout,
        "escalate_to": [list(t) for t in tiers] if isinstance(tiers, list) else [],
    }
    return problems, settled


def runner_spec_problems(runner: dict[str, Any]) -> list[str]:
    """Problems of a ``{kind: command|http, …}`` runner, each naming its key (the kinds
    and their keys: pipeline/runner_kinds.py)."""
    return runner_kinds.spec_problems(runner)


def default_spec(name: str = "default") -> DefinitionSpec:
    return DefinitionSpec(
        name=name,
        stages=list(DEFAULT_STAGES),
        gates={k: dict(v) for k, v in DEFAULT_GATES.items()},
        stage_timeouts=dict(DEFAULT_STAGE_TIMEOUTS),
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def allowed_commands() -> list[str]:
    """Executables a ``command`` runner may start: PIPELINE_COMMANDS, declared by the
    deployment like runnable functions (code runs only by name)."""
    from django.conf import settings

    return list(getattr(settings, "PIPELINE_COMMANDS", []))


def runner_problems(runners: Any) -> dict[str, str]:
    """Stage → why its runner may not run: only functions the deployment declared
    runnable (orchestration/core/runnables.py) are stage runners, and only commands it
    listed in PIPELINE_COMMANDS."""

    if not isinstance(runners, dict):
        return {}
    problems = {}
    for stage, runner in runners.items():
        if isinstance(runner, str) and runner != "placeholder" and _DOTTED.match(runner):
            if problem := runnables.problem(runner):
                problems[str(stage)] = problem
        elif problem := runner_kinds.deployment_problem(runner):
            problems[str(stage)] = problem
    return problems


def defines_code(runners: Any, stored: Any) -> bool:
    """True when saving ``runners`` over ``stored`` names a runner that was not there
    before: that needs the run_code permission, not only staff."""
    before = stored if isinstance(stored, dict) else {}
    return isinstance(runners, dict) and any(before.get(stage) != path for stage, path in runners.items())


def parse(data: Any, *, name: str | None = None, task_timeout_seconds: int | None = None) -> DefinitionSpec:
    """Validate a mapping in the YAML format; raise DefinitionError listing every problem.

    ``task_timeout_seconds``: the cluster's task timeout (Q_TIMEOUT), which kills a stage
    running longer, so no stage may be given a longer timeout than that, nor a runner
    one that leaves it too little time to stop and record why (runner_kinds.timeout_problem).
    """
    errors: list[str] = []
    if not isinstance(data, dict):
        raise DefinitionError(
            [f"the file must hold a mapping with 'gates:' and 'pipeline:', not {type(data).__name__}"]
        )
    unknown = set(data) - {"name", "description", "gates", "pipeline"}
    if unknown:
        errors.append(f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
    pipeline = data.get("pipeline")
    if not isinstance(pipeline, dict):
        raise DefinitionError([*errors, "'pipeline:' must be a mapping with 'stage_timeouts:'"])
    timeouts = pipeline.get("stage_timeouts")
    if not isinstance(timeouts, dict) or not timeouts:
        raise DefinitionError([*errors, "'pipeline: stage_timeouts:' must map each stage to minutes"])
    stages = pipeline.get("stages", list(timeouts))
    if not isinstance(stages, list) or not stages:
        errors.append("'pipeline: stages:' must be a non-empty list of stage names")
        stages = list(timeouts)
    for stage in stages:
        if not isinstance(stage, str) or not _STAGE_NAME.match(stage):
            errors.append(f"stage name {stage!r} must be lowercase letters, digits or _ (max 40)")
    if len(set(map(str, stages))) != len(stages):
        errors.append("a stage appears twice in 'stages'")
    for stage, minutes in timeouts.items():
        if stage not in stages:
            errors.append(f"stage_timeouts names unknown stage {stage!r}")
        elif not _positive_int(minutes):
            errors.append(f"stage_timeouts.{stage} must be a positive whole number of minutes, got {minutes!r}")
        elif task_timeout_seconds and minutes * 60 >= task_timeout_seconds:
            errors.append(
                f"stage_timeouts.{stage} ({minutes} min) must be shorter than the cluster's task timeout "
                f"(Q_TIMEOUT = {task_timeout_seconds} s), which would cut the stage off first"
            )
    for stage in stages:
        if stage not in timeouts:
            errors.append(f"stage {stage!r} has no entry in stage_timeouts")
    gates_in = data.get("gates") or {}
    gates: dict[str, dict[str, Any]] = {}
    if not isinstance(gates_in, dict):
        errors.append("'gates:' must map stage names to gate settings")
        gates_in = {}
    for stage, gate in gates_in.items():
        if stage not in stages:
            errors.append(f"gate for unknown stage {stage!r}")
            continue
        if not isinstance(gate, dict):
            errors.append(f"gates.{stage} must be a mapping (required, auto_approve, timeout_minutes, …)")
            continue
        problems, settled = gate_settings(gate)
        errors.extend(f"gates.{stage}.{problem}" for problem in problems)
        gates[stage] = settled
    runners = pipeline.get("runners") or {}
    if not isinstance(runners, dict):
        errors.append("'pipeline: runners:' must map stage names to dotted paths")
        runners = {}
    for stage, runner in runners.items():
        if stage not in stages:
            errors.append(f"runner for unknown stage {stage!r}")
        elif isinstance(runner, dict):
            errors.extend(f"runners.{stage}.{problem}" for problem in runner_spec_problems(runner))
        elif not isinstance(runner, str) or not (runner == "placeholder" or _DOTTED.match(runner)):
            errors.append(
                f"runners.{stage} must be a dotted path like package.module.function, 'placeholder', "
                f"or a mapping with kind: command or http, got {runner!r}"
            )
    errors.extend(f"runners.{stage}: {problem}" for stage, problem in runner_problems(runners).items())
    for stage, runner in runners.items():
        # A timeout left out is cut to fit when the stage runs; one written must fit.
        seconds = runner.get("timeout_seconds") if isinstance(runner, dict) else None
        minutes = timeouts.get(stage)
        if _positive_int(seconds) and (minutes is None or _positive_int(minutes)):
            if problem := runner_kinds.timeout_problem(str(stage), seconds, minutes, task_timeout_seconds):
                errors.append(problem)
    lane = pipeline.get("lane", DEFAULT_LANE)
    if not isinstance(lane, str) or not re.match(r"^[-a-zA-Z0-9_]{1,64}$", lane):
        errors.append(f"pipeline.lane must be a slug, got {lane!r}")
    attempts = pipeline.get("stage_attempts", 3)
    if not _positive_int(attempts) or attempts > 100:
        errors.append(f"pipeline.stage_attempts must be 1-100, got {attempts!r}")
    retry_timeouts = pipeline.get("retry_timed_out_stages", False)
    if not isinstance(retry_timeouts, bool):
        errors.append("pipeline.retry_timed_out_stages must be true or false")
    final_name = name or data.get("name") or "default"
    if not isinstance(final_name, str) or not re.match(r"^[-a-zA-Z0-9_]{1,100}$", final_name):
        errors.append(f"name must be a slug, got {final_name!r}")
    if errors:
        raise DefinitionError(errors)
    return DefinitionSpec(
        name=final_name,
        stages=list(stages),
        gates=gates,
        stage_timeouts={s: int(timeouts[s]) for s in stages},
        runners=dict(runners),
        lane=lane,
        stage_attempts=attempts,
        retry_timed_out_stages=retry_timeouts,
    )
