"""What every web process does once its application is loaded (wsgi.py, asgi.py;
runserver loads wsgi.py too)."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings


def started() -> None:
    # Checks and cycles first: on a machine shared with the cluster and the loop runner,
    # the web tier yields the CPU to them, so a busy console slows its own pages rather
    # than the checks behind them (WEB_NICE; per process, forked workers included).
    if settings.WEB_NICE:
        os.nice(settings.WEB_NICE)
        _nice_own_session(settings.WEB_NICE)
    # This web process joins the process registry (GET /api/v1/processes/).
    from orchestration.core.choices import ProcessRole
    from orchestration.core.process_registry import start_heartbeat

    start_heartbeat(ProcessRole.WEB)


def _nice_own_session(niceness: int) -> None:
    """Linux shares the CPU between sessions first (autogroups), whatever the nice of
    their processes: a web tier started as a session of its own (``make run`` starts
    each process so; gunicorn under a supervisor, its master the leader) lowers its
    session's share too. A session that holds other processes (a shell that started
    them all) is left alone: there the processes' own nice applies."""
    leader = os.getsid(0)
    if leader not in (os.getpid(), os.getppid()):
        return
    try:
        Path("/proc/self/autogroup").write_text(str(niceness))
    except OSError:  # no autogroups (another OS, or cgroups decide), or not allowed
        pass
