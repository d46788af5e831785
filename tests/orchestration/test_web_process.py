"""A web process lowers its CPU priority by WEB_NICE when its application loads, so
the checks and cycles sharing its machine go first (orchestrator_site/web_process.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AUTOGROUP = Path("/proc/self/autogroup")


def _load(tmp_path: Path, web_nice: str | None, show: str, *, own_session: bool = False) -> str:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'web.sqlite3'}", "LOG_LEVEL": "CRITICAL"}
    env.pop("WEB_NICE", None)
    if web_nice is not None:
        env["WEB_NICE"] = web_nice
    out = subprocess.run(
        [sys.executable, "-c", f"import os, orchestrator_site.wsgi; {show}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        start_new_session=own_session,
    )
    lines = out.stdout.strip().splitlines()
    # A process in the boot session's autogroup (a container whose tree never called
    # setsid) reads /proc/self/autogroup as empty: the kernel shows only autogroups of
    # their own.
    return lines[-1] if lines else ""


def _niceness_after_loading(tmp_path: Path, web_nice: str | None) -> int:
    return int(_load(tmp_path, web_nice, "print(os.nice(0))"))


@pytest.mark.parametrize(("web_nice", "added"), [(None, 5), ("12", 12), ("0", 0)])
def test_the_web_tier_yields_the_cpu_by_web_nice(tmp_path, web_nice, added):
    assert _niceness_after_loading(tmp_path, web_nice) == os.nice(0) + added


@pytest.mark.skipif(not AUTOGROUP.exists(), reason="this kernel shares the CPU without autogroups")
def test_a_web_tier_in_a_session_of_its_own_lowers_the_sessions_share(tmp_path):
    """Between sessions Linux shares the CPU per session (autogroup), whatever the nice of
    their processes; a web process leading its session sets the session's nice too."""
    show = "print(open('/proc/self/autogroup').read().strip())"
    assert _load(tmp_path, "7", show, own_session=True).endswith("nice 7")
    # Within a session it shares with others (the cluster, the loop), it leaves it alone:
    # it reads its session's autogroup as this process does (empty in the boot session's).
    assert _load(tmp_path, "7", show) == AUTOGROUP.read_text().strip()
