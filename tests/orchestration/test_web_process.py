"""A web process lowers its CPU priority by WEB_NICE when its application loads, so
the checks and cycles sharing its machine go first (orchestrator_site/web_process.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOW = "import os, orchestrator_site.wsgi; print(os.nice(0))"


def _niceness_after_loading(tmp_path: Path, web_nice: str | None) -> int:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}", "LOG_LEVEL": "CRITICAL"}
    env.pop("WEB_NICE", None)
    if web_nice is not None:
        env["WEB_NICE"] = web_nice
    out = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("web_nice", "added"), [(None, 5), ("12", 12), ("0", 0)])
def test_the_web_tier_yields_the_cpu_by_web_nice(tmp_path, web_nice, added):
    assert _niceness_after_loading(tmp_path, web_nice) == os.nice(0) + added
