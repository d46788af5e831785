"""Run one command as a stage does: an argv list (never a shell), its own process
group, a deadline, and output kept to a size.

Pure: no Django, no database. The ``command`` stage runner (pipeline/runner_kinds.py)
calls ``run``; the tests call it on real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: How long a process group has to leave after SIGTERM before SIGKILL.
TERM_GRACE_SECONDS = 2.0
TAIL_BYTES = 2048


class _Capped:
    """Drains a pipe to its end, keeping the first ``limit`` bytes and the last
    TAIL_BYTES; the rest is counted and dropped, so a chatty process neither blocks on
    a full pipe nor fills memory."""

    def __init__(self, stream, limit: int):
        self.stream, self.limit = stream, limit
        self.head = bytearray()
        self.tail = b""
        self.total = 0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            while chunk := self.stream.read1(65536):
                self.total += len(chunk)
                room = self.limit - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                self.tail = (self.tail + chunk)[-TAIL_BYTES:]
        except (OSError, ValueError):
            pass  # the pipe was closed under us after the deadline

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head)


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: killed (deadline or told to stop)
    stdout: bytes
    stderr: bytes
    stdout_bytes: int  # what the process wrote, before the cap
    stderr_bytes: int
    stderr_tail: str
    timed_out: bool
    stopped: bool
    seconds: float

    @property
    def truncated(self) -> bool:
        return self.stdout_bytes > len(self.stdout) or self.stderr_bytes > len(self.stderr)


def kill_group(proc: subprocess.Popen, grace: float = TERM_GRACE_SECONDS) -> None:
    """SIGTERM the whole group, SIGKILL what is left after ``grace``: a command's
    children (a shell script's, a build's) end with it."""
    for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: dict[str, str],
    output_limit: int,
    should_stop: Callable[[], bool] = lambda: False,
    poll: float = 0.1,
) -> Outcome:
    """Start ``argv`` in ``cwd`` and wait for it, at most ``timeout`` seconds or until
    ``should_stop()``; then the process group is killed. FileNotFoundError and
    PermissionError (argv[0] cannot be started) reach the caller."""
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so the kill reaches its children
    )
    out, err = _Capped(proc.stdout, output_limit), _Capped(proc.stderr, output_limit)
    timed_out = stopped = False
    while proc.poll() is None:
        if time.monotonic() - started >= timeout:
            timed_out = True
        elif should_stop():
            stopped = True
        if timed_out or stopped:
            kill_group(proc)
            proc.wait()
            break
        time.sleep(poll)
    # Children left behind would hold the pipes open and outlive the stage.
    kill_group(proc, grace=0.0)
    for reader in (out, err):
        reader.thread.join(timeout=2.0)
        if not reader.thread.is_alive():  # one that escaped the group (setsid) may hold it open
            reader.stream.close()
    return Outcome(
        returncode=None if timed_out or stopped else proc.returncode,
        stdout=bytes(out.head),
        stderr=bytes(err.head),
        stdout_bytes=out.total,
        stderr_bytes=err.total,
        stderr_tail=err.tail.decode(errors="replace"),
        timed_out=timed_out,
        stopped=stopped,
        seconds=round(time.monotonic() - started, 3),
    )
