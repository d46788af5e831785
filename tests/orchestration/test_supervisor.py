"""The supervisor behind `manage.py serve`, with plain child processes (no Django in them)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

from orchestration.core.supervision import BackoffPolicy
from orchestration.core.supervisor import Restart, Supervisor, describe_exit
from tests.support.processes import wait_for

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# Starts a grandchild in its own process group, as qcluster starts its sentinel.
PARENT = [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]
FAST = BackoffPolicy(initial=0.2, cap=0.8, reset_after=60)


@contextmanager
def supervising(children: dict[str, list[str]], **kwargs) -> Iterator[tuple[Supervisor, list[Restart], list[str]]]:
    restarts: list[Restart] = []
    lines: list[str] = []
    supervisor = Supervisor(
        children, policy=FAST, say=lines.append, warn=lines.append, on_restart=restarts.append, **kwargs
    )
    supervisor.start()
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    try:
        yield supervisor, restarts, lines
    finally:
        supervisor.stop()
        thread.join(15)
    assert not thread.is_alive()


def test_a_killed_child_comes_back_and_the_others_never_stop():
    with supervising({"a": SLEEPER, "b": SLEEPER}) as (supervisor, restarts, lines):
        a, b = supervisor.children["a"].pid, supervisor.children["b"].pid
        os.kill(a, signal.SIGKILL)
        wait_for(lambda: restarts, timeout=5, message="a restart")
        assert restarts == [Restart("a", supervisor.children["a"].pid, 1, -9, a)]
        assert supervisor.children["a"].pid != a and supervisor.children["b"].pid == b
        assert psutil.pid_exists(b)
        assert any(f"a (pid {a}) was killed by SIGKILL (exit code -9)" in line for line in lines)
        assert any(line.startswith(f"restarted a (pid {restarts[0].pid})") for line in lines)
        pids = [a_child.pid for a_child in supervisor.children.values()]
    for pid in pids:  # the supervisor's own stop ends every child
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert lines[-1] == "stopped"


def test_what_a_dead_child_left_in_its_group_is_ended_before_it_starts_again():
    with supervising({"node": PARENT}) as (supervisor, restarts, _lines):
        main = psutil.Process(supervisor.children["node"].pid)
        wait_for(lambda: main.children(), timeout=5, message="the grandchild")
        orphan = main.children()[0]
        main.kill()
        wait_for(lambda: restarts, timeout=8, message="a restart")
        assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE


def test_a_child_that_keeps_failing_is_restarted_ever_more_slowly():
    with supervising({"bad": [sys.executable, "-c", "raise SystemExit(3)"]}) as (_supervisor, restarts, lines):
        wait_for(lambda: len(restarts) >= 4, timeout=10, message="four restarts")
    assert all(r.last_exit_code == 3 for r in restarts)
    delays = [line.rsplit("restarting it in ", 1)[1] for line in lines if "restarting it in" in line]
    assert delays[:4] == ["0.2s", "0.4s", "0.8s", "0.8s"]


def test_exit_descriptions():
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-15) == "was killed by SIGTERM (exit code -15)"
    assert describe_exit(None) == "could not be started"
