"""What every web process does once its application is loaded (wsgi.py, asgi.py;
runserver loads wsgi.py too)."""

from __future__ import annotations

import os

from django.conf import settings


def started() -> None:
    # Checks and cycles first: on a machine shared with the cluster and the loop runner,
    # the web tier yields the CPU to them, so a busy console slows its own pages rather
    # than the checks behind them (WEB_NICE; per process, forked workers included).
    if settings.WEB_NICE:
        os.nice(settings.WEB_NICE)
    # This web process joins the process registry (GET /api/v1/processes/).
    from orchestration.core.choices import ProcessRole
    from orchestration.core.process_registry import start_heartbeat

    start_heartbeat(ProcessRole.WEB)
