"""The fault suite's servers: the throwaway PostgreSQL and Redis that
``.ci/scale_services.sh`` started (it exports where they live), restarted and stopped
under running processes."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from tests.support.processes import wait_for


@dataclass
class ScaleServers:
    pgdata: Path
    pg_bin: Path
    pg_as: list[str]
    pg_port: int
    redis_port: int
    work: Path

    # --- PostgreSQL ----------------------------------------------------------------
    def pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        argv = [*self.pg_as, str(self.pg_bin / "pg_ctl"), "-D", str(self.pgdata), *args]
        return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)

    def restart_postgresql(self, down_seconds: float = 0.0) -> None:
        """``pg_ctl -m fast restart``: every connection is cut, and the server refuses
        new ones until it is back. Returns once it accepts them again. With
        ``down_seconds`` the server stays stopped that long first (a restart can take
        less than a second here, too short for a process that looks once a second)."""
        if not down_seconds:
            self.pg_ctl("-m", "fast", "-w", "-l", str(self.work / "pg.log"), "restart")
            return
        # The server's own options (port, socket folder, settings), as a restart reuses them.
        argv = shlex.split((self.pgdata / "postmaster.opts").read_text())[1:]
        options = [arg for i, arg in enumerate(argv) if arg != "-D" and (i == 0 or argv[i - 1] != "-D")]
        self.pg_ctl("-m", "fast", "-w", "stop")
        time.sleep(down_seconds)
        self.pg_ctl("-w", "-l", str(self.work / "pg.log"), "-o", shlex.join(options), "start")

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    # --- Redis ---------------------------------------------------------------------
    def redis_cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["redis-cli", "-p", str(self.redis_port), *args], capture_output=True, text=True, timeout=10
        )

    def redis_up(self) -> bool:
        return self.redis_cli("ping").stdout.strip() == "PONG"

    def stop_redis(self) -> None:
        self.redis_cli("shutdown", "nosave")
        wait_for(lambda: not self.redis_up(), timeout=10, message="Redis to stop")

    def start_redis(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--pidfile",
                str(self.work / "redis.pid"),
                "--logfile",
                str(self.work / "redis.log"),
            ],
            check=True,
            timeout=10,
        )
        wait_for(self.redis_up, timeout=10, message="Redis to start")


@pytest.fixture
def scale() -> ScaleServers:
    """The scale profile's servers; the test is skipped on the embedded profile."""
    if connection.vendor != "postgresql":
        pytest.skip("fault suite: runs on the scale profile only (.ci/scale_profile.sh: PostgreSQL + Redis)")
    missing = [name for name in ("PGDATA", "PG_BIN", "PG_PORT", "REDIS_PORT", "SCALE_WORK") if not os.environ.get(name)]
    if missing:
        # On PostgreSQL this suite must run, not skip: say how to give it its servers.
        pytest.fail(f"fault suite: {', '.join(missing)} not set; run it through .ci/scale_profile.sh")
    return ScaleServers(
        pgdata=Path(os.environ["PGDATA"]),
        pg_bin=Path(os.environ["PG_BIN"]),
        pg_as=shlex.split(os.environ.get("PG_AS", "")),
        pg_port=int(os.environ["PG_PORT"]),
        redis_port=int(os.environ["REDIS_PORT"]),
        work=Path(os.environ["SCALE_WORK"]),
    )


def retrying(read, timeout: float = 30):
    """A read by the test itself, through the same outage its processes ride out."""
    from django.db import InterfaceError, OperationalError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except (OperationalError, InterfaceError):
            connection.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


class Writers:
    """Clients POSTing jobs over HTTP, each with its own Idempotency-Key, retried with
    the same key until answered 201/200 (as a careful client does through an outage)."""

    def __init__(self, base: str, token: str, *, name: str, threads: int = 8) -> None:
        import requests

        self.base, self.token, self.name, self.threads = base, token, name, threads
        self.ids: dict[int, int] = {}  # item → job id
        self.statuses: list[int] = []  # every answer's status (0: no answer)
        self.replayed = 0
        self._lock = threading.Lock()
        self._requests = requests

    def post(self, item: int, payload: dict | None = None, *, retry_for: float = 120) -> int:
        session = self._requests.Session()
        session.headers["Authorization"] = f"Bearer {self.token}"
        body = {"kind": "mark", "payload": {"name": self.name, "item": item, **(payload or {})}}
        deadline = time.monotonic() + retry_for
        while True:
            try:
                response = session.post(
                    f"{self.base}/api/v1/jobs/",
                    json=body,
                    headers={"Idempotency-Key": f"{self.name}-{item}"},
                    timeout=15,
                )
                status = response.status_code
            except self._requests.RequestException:
                response, status = None, 0
            with self._lock:
                self.statuses.append(status)
            if response is not None and status in (200, 201):
                with self._lock:
                    self.ids[item] = response.json()["id"]
                    self.replayed += response.headers.get("Idempotent-Replayed") == "true"
                return self.ids[item]
            if time.monotonic() >= deadline:
                raise AssertionError(f"job {item} never accepted; last answer {status}")
            time.sleep(0.2)

    def post_all(self, items: range, payload: dict | None = None, *, pace: float = 0.0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        def one(item: int) -> int:
            if pace:
                time.sleep(pace)
            return self.post(item, payload)

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(one, items))
