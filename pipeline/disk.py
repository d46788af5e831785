"""The job's files: RUNS_DIR/<job_id>/{state.json, events.jsonl, artifacts} and one
RUNS_DIR/state.jsonl line per transition.

Lines are appended with one ``write`` on an O_APPEND descriptor, so several processes
appending at once never interleave inside a line. state.json is replaced atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

from orchestrator_site.private import private_dir


def runs_root() -> Path:
    # Artifacts and state are the install's own: runs/ is created 0700.
    return private_dir(Path(settings.RUNS_DIR))


def run_dir(job_id: int) -> Path:
    path = runs_root() / str(job_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def append_line(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, default=str, sort_keys=True)
    os.replace(tmp, path)


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
