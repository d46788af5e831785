"""The fleet file: YAML that declares workers; loading is idempotent and all-or-nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction

from orchestration.core.choices import Priority
from orchestration.core.models.ledger import record
from orchestration.fleet import specs
from orchestration.fleet.choices import ExecutionModel, WorkerCategory
from orchestration.fleet.models import Worker

FIELDS = {
    "name": None,
    "description": "",
    "category": None,
    "execution_model": ExecutionModel.SCHEDULED,
    "interval_seconds": None,
    "cron": "",
    "timeout_seconds": 300,
    "max_timeout_seconds": None,
    "expected_duration_seconds": None,
    "freshness_seconds": None,
    "depends_on": [],
    "optional_depends_on": [],
    "run_after_upstream": False,
    "target": None,
    "enabled": True,
    "priority": Priority.NORMAL,
    "timezone": "UTC",
    "overlap": "skip",
    "catch_up_seconds": 60,
    "jitter_seconds": 0,
    "pause_after_failures": 0,
    "output_schema": None,
}
# Top-level keys other files of this kind carry, refused with where they belong instead
# of being dropped without a word.
ELSEWHERE = {
    "services": "services are registered in service health (/api/v1/services/ or the admin), not in the fleet file",
    "base_url": "the base URL of '{base_url}' targets is the FLEET_BASE_URL setting (environment), not the file",
}
REQUIRED = ("name", "category", "target")


class FleetFileError(ValueError):
    pass


@dataclass
class Plan:
    create: list[dict[str, Any]] = field(default_factory=list)
    update: list[tuple[str, dict[str, tuple[Any, Any]]]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"+ create {spec['name']}" for spec in self.create]
        for name, changes in self.update:
            out.append(f"~ update {name}")
            out += [f"    {k}: {old!r} → {new!r}" for k, (old, new) in changes.items()]
        out += [f"= unchanged {name}" for name in self.unchanged]
        return out


def _int(value: Any, where: str, key: str, *, allow_none: bool = True, minimum: int = 0):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise FleetFileError(f"{where}: {key} must be a number >= {minimum}")
    return value


def parse(text: str, source: str = "fleet file") -> list[dict[str, Any]]:
    """Validated worker specs with defaults filled in, or FleetFileError saying what is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetFileError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("workers"), list) or not data["workers"]:
        raise FleetFileError(f"{source} must be a mapping with a non-empty 'workers' list")
    for key in sorted(set(data) & set(ELSEWHERE)):
        raise FleetFileError(f"{source}: '{key}:' is not loaded from here: {ELSEWHERE[key]}; remove it")
    unknown_top = set(data) - {"workers"}
    if unknown_top:
        raise FleetFileError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown_top))}")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, raw in enumerate(data["workers"], 1):
        where = f"{source}, worker #{index}"
        if not isinstance(raw, dict):
            raise FleetFileError(f"{where}: must be a mapping")
        where = f"{source}, worker {raw.get('name', f'#{index}')!r}"
        unknown = set(raw) - set(FIELDS)
        if unknown:
            raise FleetFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        missing = [k for k in REQUIRED if not raw.get(k)]
        if missing:
            raise FleetFileError(f"{where}: missing {', '.join(missing)}")
        spec = {**{k: (list(v) if isinstance(v, list) else v) for k, v in FIELDS.items()}, **raw}
        name = spec["name"]
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 80:
            raise FleetFileError(f"{where}: name must be a slug (letters, digits, - and _)")
        if name in seen:
            raise FleetFileError(f"{where}: declared twice")
        seen.add(name)
        if spec["category"] not in WorkerCategory.values:
            raise FleetFileError(f"{where}: category must be one of {', '.join(WorkerCategory.values)}")
        if spec["execution_model"] not in ExecutionModel.values:
            raise FleetFileError(f"{where}: execution_model must be one of {', '.join(ExecutionModel.values)}")
        if spec["priority"] not in Priority.values:
            raise FleetFileError(f"{where}: priority must be one of {', '.join(Priority.values)}")
        for key in ("interval_seconds", "max_timeout_seconds", "freshness_seconds", "expected_duration_seconds"):
            _int(spec[key], where, key)
        _int(spec["timeout_seconds"], where, "timeout_seconds", allow_none=False, minimum=1)
        spec["cron"] = spec["cron"] or ""
        try:
            spec["target"] = specs.validate_target(spec["target"])
            specs.validate_cadence(
                spec["interval_seconds"],
                spec["cron"],
                spec["execution_model"],
                spec["timezone"],
                spec["jitter_seconds"],
            )
            specs.validate_schedule_options(
                spec["overlap"],
                spec["catch_up_seconds"],
                spec["jitter_seconds"],
                spec["pause_after_failures"],
                spec["output_schema"],
            )
            specs.validate_timeouts(spec["timeout_seconds"], spec["max_timeout_seconds"], settings.Q_CLUSTER["timeout"])
            spec["depends_on"] = specs.validate_names(spec["depends_on"], "depends_on")
            spec["optional_depends_on"] = specs.validate_names(spec["optional_depends_on"], "optional_depends_on")
        except specs.SpecError as exc:
            raise FleetFileError(f"{where}: {exc}") from None
        out.append(spec)
    return out


def plan(worker_specs: list[dict[str, Any]]) -> Plan:
    """What loading would change; also checks the whole graph (file + existing workers)."""
    existing = {w.name: w for w in Worker.objects.all()}
    edges = {n: list(w.depends_on or []) + list(w.optional_depends_on or []) for n, w in existing.items()}
    for spec in worker_specs:
        edges[spec["name"]] = spec["depends_on"] + spec["optional_depends_on"]
    known = set(edges)
    for spec in worker_specs:
        try:
            specs.validate_graph(spec["name"], edges[spec["name"]], edges, known)
        except specs.SpecError as exc:
            raise FleetFileError(f"worker {spec['name']!r}: {exc}") from None
    result = Plan()
    for spec in worker_specs:
        current = existing.get(spec["name"])
        if current is None:
            result.create.append(spec)
            continue
        changes = {k: (getattr(current, k), v) for k, v in spec.items() if k != "name" and getattr(current, k) != v}
        if changes:
            result.update.append((spec["name"], changes))
        else:
            result.unchanged.append(spec["name"])
    return result


def load(path: str | Path, *, dry_run: bool = False, actor: str = "load_fleet") -> Plan:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FleetFileError(f"cannot read {path}: {exc.strerror}") from None
    worker_specs = parse(text, str(path))
    with transaction.atomic():
        result = plan(worker_specs)
        if dry_run:
            return result
        for spec in result.create:
            Worker.objects.create(**spec)
        by_name = {s["name"]: s for s in worker_specs}
        for name, changes in result.update:
            worker = Worker.objects.get(name=name)
            for key in changes:
                setattr(worker, key, by_name[name][key])
            worker.save()
        if result.create or result.update:
            record(
                "worker.fleet_loaded",
                f"Fleet file {path.name}: {len(result.create)} created, {len(result.update)} updated, "
                f"{len(result.unchanged)} unchanged",
                data={
                    "file": str(path),
                    "created": [s["name"] for s in result.create],
                    "updated": [n for n, _ in result.update],
                },
                actor=actor,
            )
    return result
