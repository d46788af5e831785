"""Start real project processes (qcluster, loop runner, web) against the test database.

The test must use ``transactional_db`` so what it writes is committed where the
subprocess can see it. Processes are stopped through their main pid (SIGTERM), which
is how a qcluster stops cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env.update(
        DJANGO_SETTINGS_MODULE="orchestrator_site.settings",
        Q_SYNC="false",
        RUNS_DIR=str(settings.RUNS_DIR),
        PYTHONUNBUFFERED="1",
        # As in the test process (tests/conftest.py): outbound calls reach loopback only.
        OUTBOUND_ALLOWED_NETWORKS="127.0.0.0/8,::1/128",
        ORCHESTRATOR_INTERVAL_SECONDS=str(extra.pop("ORCHESTRATOR_INTERVAL_SECONDS", "0.5")),
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self, timeout: float = 15) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self._log.close()
        return self.popen.returncode

    def dump_stacks(self) -> None:
        """Ask the process for its threads' stacks (manage.py answers SIGUSR1 with them),
        so the log of a failed test shows where a stuck process was."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGUSR1)
            time.sleep(0.3)

    def descendants(self) -> set[int]:
        """The pids of this process and all its children (a qcluster's sentinel, pusher
        and workers)."""
        import psutil

        try:
            main = psutil.Process(self.popen.pid)
            return {self.popen.pid, *(child.pid for child in main.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def kill_group(self) -> None:
        """SIGKILL the whole process group: the node dies with all its children."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


@contextmanager
def running(*specs: tuple[str, list[str]], log_dir: Path, **env: str) -> Iterator[list[Proc]]:
    """Start processes; on exit stop them and, if the block failed, print their logs."""
    procs = [Proc(name, argv, subprocess_env(**env), log_dir) for name, argv in specs]
    failed = True
    try:
        yield procs
        failed = False
    finally:
        if failed:
            for proc in procs:
                proc.dump_stacks()
        for proc in procs:
            proc.stop()
        if failed:
            for proc in procs:
                print(f"----- {proc.name} log -----\n{proc.output()[-8000:]}")


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 30,
    interval: float = 0.1,
    message: str = "",
    alive: list[Proc] | tuple[Proc, ...] = (),
):
    """Poll ``predicate`` until it is true; fail at once if a process of ``alive`` died
    meanwhile (a test must not wait out its timeout on a dead process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in alive:
            if proc.popen.poll() is not None:
                raise AssertionError(
                    f"{proc.name} exited with {proc.popen.returncode} while waiting for {message or predicate}:\n"
                    f"{proc.output()[-4000:]}"
                )
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
