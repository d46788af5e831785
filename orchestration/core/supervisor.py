"""Keep a set of child processes running, as systemd, supervisord or Kubernetes would.

A child that dies (whatever its exit code: every child is meant to run as long as the
supervisor does) is restarted after a backoff (1 s, doubling up to 30 s; back to 1 s
once it has run for a healthy minute). What it left behind in its process group (a
qcluster's sentinel and workers outlive a killed main process) gets SIGTERM, then
SIGKILL, before the new one starts, like systemd's KillMode=control-group: two
clusters never run side by side. Only ``stop`` (the supervisor's own SIGTERM/SIGINT)
stops everything.

Each child leads its own session, so a terminal's Ctrl-C reaches only the supervisor,
which then sends SIGTERM to each child's main pid (SIGINT/SIGTERM to a whole qcluster
process group can hang it; its main pid alone stops it cleanly).

No database here: ``on_restart`` hears of each restart (``serve`` records it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orchestration.core.supervision import SUPERVISOR_POLICY, Backoff, BackoffPolicy

POLL_SECONDS = 0.2
# How long what a dead child left in its process group gets between SIGTERM and SIGKILL.
GROUP_GRACE_SECONDS = 5.0
# How long children get to stop after the supervisor's SIGTERM.
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Restart:
    role: str
    pid: int
    restarts: int
    last_exit_code: int | None
    replaces: int | None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "could not be started"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"was killed by signal {-code} (exit code {code})"
    return f"exited with code {code}"


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Child:
    def __init__(self, name: str, argv: list[str], policy: BackoffPolicy):
        self.name = name
        self.argv = argv
        self.backoff = Backoff(policy)
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.restarts = 0
        self.last_exit_code: int | None = None
        # While dead: when to start it again, and what is left of its process group.
        self.restart_at: float | None = None
        self.dead_pid: int | None = None
        self.kill_group_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Supervisor:
    def __init__(
        self,
        children: dict[str, list[str]],
        *,
        policy: BackoffPolicy = SUPERVISOR_POLICY,
        say: Callable[[str], object] = print,
        warn: Callable[[str], object] = print,
        on_restart: Callable[[Restart], object] | None = None,
        group_grace: float = GROUP_GRACE_SECONDS,
        stop_grace: float = STOP_GRACE_SECONDS,
    ):
        self.children = {name: Child(name, argv, policy) for name, argv in children.items()}
        self.say, self.warn = say, warn
        self.on_restart = on_restart
        self.group_grace, self.stop_grace = group_grace, stop_grace
        self.stopping = threading.Event()

    # --- running -------------------------------------------------------------------
    def start(self) -> None:
        for child in self.children.values():
            self._spawn(child)
            if child.proc is not None:
                self.say(f"started {child.name} (pid {child.pid})")

    def run(self) -> list[int]:
        """Supervise until ``stop()``; then stop every child. Returns the pids stopped."""
        try:
            while not self.stopping.is_set():
                self.poll()
                self.stopping.wait(POLL_SECONDS)
        finally:
            stopped = self.shutdown()
        return stopped

    def stop(self, signum: int | None = None, frame: object = None) -> None:
        self.stopping.set()

    def poll(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for child in self.children.values():
            if child.proc is not None:
                if child.proc.poll() is not None:
                    self._died(child, now)
            else:
                self._waiting(child, now)

    def _died(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code, pid = child.proc.returncode, child.proc.pid
        ran_for = now - child.started
        delay = child.backoff.failed(ran_for)
        child.proc, child.dead_pid, child.last_exit_code = None, pid, code
        child.restart_at = now + delay
        self.warn(f"{child.name} (pid {pid}) {describe_exit(code)} after {ran_for:.1f}s; restarting it in {delay:g}s")
        if group_alive(pid):
            # Its sentinel, workers or other children are orphans now: end them first.
            signal_group(pid, signal.SIGTERM)
            child.kill_group_at = now + self.group_grace

    def _waiting(self, child: Child, now: float) -> None:
        if child.dead_pid is not None and group_alive(child.dead_pid):
            if child.kill_group_at is not None and now >= child.kill_group_at:
                self.warn(f"what {child.name} (pid {child.dead_pid}) left behind ignored SIGTERM; killing it")
                signal_group(child.dead_pid, signal.SIGKILL)
                child.kill_group_at = None
            return  # never two of a child side by side
        if child.restart_at is None or now < child.restart_at:
            return
        replaces = child.dead_pid
        self._spawn(child)
        if child.proc is None:
            return
        child.restarts += 1
        child.dead_pid = child.restart_at = child.kill_group_at = None
        self.warn(
            f"restarted {child.name} (pid {child.pid}): restart {child.restarts}, "
            f"the previous run {describe_exit(child.last_exit_code)}"
        )
        if self.on_restart is not None:
            self.on_restart(Restart(child.name, child.pid, child.restarts, child.last_exit_code, replaces))

    def _spawn(self, child: Child) -> None:
        try:
            child.proc = subprocess.Popen(child.argv, start_new_session=True)
        except OSError as exc:
            child.proc, child.last_exit_code = None, None
            delay = child.backoff.failed(None)
            child.restart_at = time.monotonic() + delay
            self.warn(f"could not start {child.name} ({exc}); trying again in {delay:g}s")
            return
        child.started = time.monotonic()

    # --- stopping ------------------------------------------------------------------
    def shutdown(self) -> list[int]:
        """SIGTERM to each child's main pid; SIGKILL to the group of any that outstay
        the grace period. Returns the pids that were running."""
        self.say("stopping…")
        running = [c for c in self.children.values() if c.proc is not None]
        for child in running:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for child in running:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.warn(f"{child.name} did not stop in {self.stop_grace:g}s; killing it")
                signal_group(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
        for child in self.children.values():
            if child.dead_pid is not None:  # leftovers of one that died while we waited
                signal_group(child.dead_pid, signal.SIGKILL)
        self.say("stopped")
        return [c.proc.pid for c in running]
