"""Start web + django-q2 cluster + control loop together; Ctrl-C stops all three.

Each child runs in its own session, so the terminal's Ctrl-C reaches only this
supervisor, which then sends SIGTERM to each child's main pid. (SIGINT/SIGTERM to a
whole qcluster process group can hang it; its main pid alone stops it cleanly.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand

GRACE_SECONDS = 10


class Command(BaseCommand):
    help = "Run the web server, the django-q2 cluster and the control loop (Ctrl-C stops all)."

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
        procs: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(signum=None, frame=None):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for name, argv in children.items():
            procs[name] = subprocess.Popen(argv, start_new_session=True)
            self.stdout.write(f"started {name} (pid {procs[name].pid})")
        self.stdout.write(self.style.SUCCESS(f"Orchestrator running at http://{host}:{port}/ — Ctrl-C stops it"))
        exit_code = 0
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with {proc.returncode}; stopping the others")
                        exit_code = proc.returncode or 1
                        stopping = True
                        break
                time.sleep(0.2)
        finally:
            self._shutdown(procs)
        if exit_code:
            sys.exit(exit_code)

    def _shutdown(self, procs: dict[str, subprocess.Popen]) -> None:
        self.stdout.write("stopping…")
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in {GRACE_SECONDS}s; killing it")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.stdout.write("stopped")
