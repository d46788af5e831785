"""Pipeline definitions as plain data: the seeded default and the YAML format.

No Django here: the loader command and the API both validate through ``parse``, and
the tests run it without a database.

YAML format (the seed's ``conf/operator.yaml``)::

    name: default                 # optional; the command's --name wins
    gates:
      script: {required: true, auto_approve: false, timeout_minutes: 60}
    pipeline:
      stages: [outline, research, script]   # optional: else the order of stage_timeouts
      stage_timeouts: {outline: 30, research: 45, script: 60}
      runners: {outline: mypkg.stages.outline}   # optional: functions declared @runnable
      lane: pipeline                              # optional
      stage_attempts: 3                           # optional
      retry_timed_out_stages: false               # optional
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestration.core import runnables
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
    runners: dict[str, str] = field(default_factory=dict)
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


def default_spec(name: str = "default") -> DefinitionSpec:
    return DefinitionSpec(
        name=name,
        stages=list(DEFAULT_STAGES),
        gates={k: dict(v) for k, v in DEFAULT_GATES.items()},
        stage_timeouts=dict(DEFAULT_STAGE_TIMEOUTS),
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def runner_problems(runners: Any) -> dict[str, str]:
    """Stage → why its runner may not run: only functions the deployment declared
    runnable (orchestration/core/runnables.py) are stage runners."""

    if not isinstance(runners, dict):
        return {}
    return {
        str(stage): problem
        for stage, path in runners.items()
        if isinstance(path, str) and _DOTTED.match(path) and (problem := runnables.problem(path))
    }


def defines_code(runners: Any, stored: Any) -> bool:
    """True when saving ``runners`` over ``stored`` names a runner that was not there
    before: that needs the run_code permission, not only staff."""
    before = stored if isinstance(stored, dict) else {}
    return isinstance(runners, dict) and any(before.get(stage) != path for stage, path in runners.items())


def parse(data: Any, *, name: str | None = None, task_timeout_seconds: int | None = None) -> DefinitionSpec:
    """Validate a mapping in the YAML format; raise DefinitionError listing every problem.

    ``task_timeout_seconds``: the cluster's task timeout (Q_TIMEOUT), which kills a stage
    running longer, so no stage may be given a longer timeout than that.
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
            errors.append(f"gates.{stage} must be a mapping (required, auto_approve, timeout_minutes)")
            continue
        extra = set(gate) - {"required", "auto_approve", "timeout_minutes"}
        if extra:
            errors.append(f"gates.{stage}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        for key in ("required", "auto_approve"):
            if key in gate and not isinstance(gate[key], bool):
                errors.append(f"gates.{stage}.{key} must be true or false, got {gate[key]!r}")
        minutes = gate.get("timeout_minutes", 60)
        if not _positive_int(minutes):
            errors.append(f"gates.{stage}.timeout_minutes must be a positive whole number, got {minutes!r}")
        gates[stage] = {
            "required": gate.get("required", True),
            "auto_approve": gate.get("auto_approve", False),
            "timeout_minutes": minutes,
        }
    runners = pipeline.get("runners") or {}
    if not isinstance(runners, dict):
        errors.append("'pipeline: runners:' must map stage names to dotted paths")
        runners = {}
    for stage, path in runners.items():
        if stage not in stages:
            errors.append(f"runner for unknown stage {stage!r}")
        elif not isinstance(path, str) or not _DOTTED.match(path):
            errors.append(f"runners.{stage} must be a dotted path like package.module.function, got {path!r}")
    errors.extend(f"runners.{stage}: {problem}" for stage, problem in runner_problems(runners).items())
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
