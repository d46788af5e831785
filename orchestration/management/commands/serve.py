"""Start web + django-q2 cluster + control loop together and keep them running.

A child that dies is restarted with backoff (see orchestration/core/supervisor.py) and the
restart is recorded in the process registry (GET /api/v1/processes/, /metrics). Only
this command's own SIGTERM/SIGINT (Ctrl-C) stops everything, within seconds.
"""

from __future__ import annotations

import os
import signal
import sys

from django.core.management.base import BaseCommand

from orchestration.core.process_registry import RestartRecorder
from orchestration.core.supervisor import Supervisor


class Command(BaseCommand):
    help = "Run the web server, the django-q2 cluster and the control loop; restart any that dies (Ctrl-C stops all)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-loop", action="store_true", help="Do not start the dedicated loop runner.")

    def handle(self, *args, port: int, host: str, no_loop: bool, **options):
        manage = [sys.executable, os.path.abspath(sys.argv[0])]
        children = {
            "web": [*manage, "runserver", f"{host}:{port}", "--noreload"],
            "cluster": [*manage, "qcluster"],
        }
        if not no_loop:
            children["loop"] = [*manage, "run_orchestrator"]
        recorder = RestartRecorder()
        supervisor = Supervisor(children, say=self.stdout.write, warn=self.stderr.write, on_restart=recorder.restarted)
        signal.signal(signal.SIGINT, supervisor.stop)
        signal.signal(signal.SIGTERM, supervisor.stop)
        supervisor.start()
        self.stdout.write(self.style.SUCCESS(f"Orchestrator running at http://{host}:{port}/ — Ctrl-C stops it"))
        stopped = supervisor.run()
        # Stopped on purpose: no row of them should look like a process that died.
        recorder.forget(stopped)
        recorder.close()
