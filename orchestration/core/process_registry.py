"""Every web process, cluster node and loop runner says it is alive.

A daemon thread per process writes the process's row in ``OrchestratorProcess`` once
at start and then beats it (one UPDATE) every ``PROCESS_HEARTBEAT_SECONDS``. A beat
that fails (the database restarting) is logged once and retried at the next interval;
it never stops the process. Where each role starts it:

- web: ``orchestrator_site/wsgi.py`` and ``asgi.py`` (runserver loads the same module);
- loop: ``manage.py run_orchestrator``;
- cluster: the main ``qcluster`` process, once its sentinel is up (``install_cluster_heartbeat``),
  so a node is one row however many workers it has, under the pid its supervisor knows.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import psutil
from django.conf import settings
from django.db import close_old_connections, connection

from orchestration.core.choices import ProcessRole
from orchestration.core.models import OrchestratorProcess
from orchestration.core.supervisor import Restart

log = logging.getLogger("orchestration.processes")

# Rows of long-gone processes are deleted at registration and then about once an hour.
PRUNE_EVERY_SECONDS = 3600.0


def this_host() -> str:
    return socket.gethostname()


def process_started_at(pid: int) -> datetime:
    """When the process began, as the kernel says: the same reading for the process
    itself and for its supervisor."""
    try:
        return datetime.fromtimestamp(psutil.Process(pid).create_time(), tz=UTC)
    except psutil.Error:
        return datetime.now(tz=UTC)


class Heartbeat:
    def __init__(self, role: str, *, interval: float | None = None):
        self.role = role
        self.pid = os.getpid()
        self.host = this_host()
        self.started_at = process_started_at(self.pid)
        self.interval = interval or settings.PROCESS_HEARTBEAT_SECONDS
        self.pk: int | None = None
        self.failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"process-heartbeat-{role}", daemon=True)
        self._beats_since_prune = 0

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self, *, forget: bool = False, timeout: float = 2.0) -> None:
        """Stop beating; ``forget`` deletes the row (a clean stop leaves none behind)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if forget:
            try:
                OrchestratorProcess.forget(self.host, [self.pid])
            except Exception:
                log.warning("could not remove the row of %s %s:%s", self.role, self.host, self.pid, exc_info=True)

    def beat_once(self) -> None:
        if self.pk is None or not OrchestratorProcess.beat(self.pk):
            self.pk = OrchestratorProcess.register(self.role, self.host, self.pid, self.started_at)
            self._beats_since_prune = 0
            OrchestratorProcess.prune()
        elif self._beats_since_prune * self.interval >= PRUNE_EVERY_SECONDS:
            self._beats_since_prune = 0
            OrchestratorProcess.prune()
        self._beats_since_prune += 1

    def _run(self) -> None:
        try:
            while True:
                try:
                    close_old_connections()
                    self.beat_once()
                except Exception as exc:
                    self._failed(exc)
                else:
                    if self.failing:
                        log.info("process heartbeat of %s %s written again", self.role, self.pid)
                    self.failing = False
                if self._stop.wait(self.interval):
                    break
        finally:
            connection.close()  # this thread's own connection

    def _failed(self, exc: Exception) -> None:
        if not self.failing:
            log.warning(
                "process heartbeat of %s %s failed (%s); retrying every %gs", self.role, self.pid, exc, self.interval
            )
        self.failing = True
        try:
            connection.close()  # never reuse a broken connection
        except Exception:
            pass


_current: Heartbeat | None = None
_lock = threading.Lock()


def start_heartbeat(role: str) -> Heartbeat:
    """Start this process's heartbeat (once per process)."""
    global _current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = Heartbeat(role).start()
        return _current


def current_heartbeat() -> Heartbeat | None:
    return _current if _current is not None and _current.pid == os.getpid() else None


def install_cluster_heartbeat() -> None:
    """Make the main qcluster process beat as a cluster node once its sentinel runs,
    and remove its row when it has stopped cleanly."""
    from django_q.cluster import Cluster

    original_start, original_handler = Cluster.start, Cluster.sig_handler
    if getattr(original_start, "_process_heartbeat", False):
        return

    def start(self):
        pid = original_start(self)
        # After the sentinel is forked: no thread or connection of ours is copied into it.
        start_heartbeat(ProcessRole.CLUSTER)
        return pid

    def sig_handler(self, signum, frame):
        beat = current_heartbeat()
        if beat is not None:
            beat.stop()
        try:
            return original_handler(self, signum, frame)
        finally:
            if beat is not None:
                beat.stop(forget=True)

    start._process_heartbeat = True  # type: ignore[attr-defined]
    Cluster.start = start
    Cluster.sig_handler = sig_handler


class RestartRecorder:
    """Writes a supervisor's restarts into the registry from a thread of its own, in
    order, so a slow or unreachable database never holds up supervision. A write that
    fails is retried (the database is often why the child died)."""

    def __init__(self) -> None:
        self.host = this_host()
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="restart-recorder", daemon=True)
        self._thread.start()

    def restarted(self, restart: Restart) -> None:
        self._queue.put(
            partial(
                OrchestratorProcess.record_restart,
                role=restart.role,
                host=self.host,
                pid=restart.pid,
                started_at=process_started_at(restart.pid),
                restarts=restart.restarts,
                last_exit_code=restart.last_exit_code,
                replaces=restart.replaces,
            )
        )

    def forget(self, pids: list[int]) -> None:
        if pids:
            self._queue.put(partial(OrchestratorProcess.forget, self.host, pids))

    def close(self, timeout: float = 3.0) -> None:
        """Finish what is queued, waiting at most ``timeout`` (a database that is down
        must not keep the supervisor from exiting)."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while (task := self._queue.get()) is not None:
                delay = 0.5
                while True:
                    try:
                        close_old_connections()
                        task()
                        break
                    except Exception as exc:
                        log.warning("could not record in the process registry (%s); retrying in %gs", exc, delay)
                        connection.close()
                        time.sleep(delay)
                        delay = min(delay * 2, 10.0)
        finally:
            connection.close()
