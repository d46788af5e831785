"""The dedicated control-loop runner. SIGTERM/SIGINT finish the current tick, then exit."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand
from django.db import DatabaseError

from orchestration.core.choices import ProcessRole
from orchestration.core.process_registry import start_heartbeat
from orchestration.loop.models import LoopState
from orchestration.loop.runner import LoopRunner


class Command(BaseCommand):
    help = "Run the control loop until stopped (cycles at the interval stored in the loop state)."

    def add_arguments(self, parser):
        parser.add_argument("--max-seconds", type=float, default=None, help="Stop after this long (tests, demos).")

    def handle(self, *args, max_seconds=None, **options):
        runner = LoopRunner(dedicated=True)

        def shutdown(signum, frame):
            runner.shutdown.set()

        signal.signal(signal.SIGTERM, shutdown)
        signal.signal(signal.SIGINT, shutdown)
        heartbeat = start_heartbeat(ProcessRole.LOOP)
        state = LoopState.get()
        self.stdout.write(
            f"Orchestrator loop started as {runner.owner} — every {state.interval_seconds:g}s "
            f"({'enabled' if state.enabled else 'disabled: enable it in the admin or POST /orchestrator/enable'})"
        )
        cycles = runner.run(max_seconds=max_seconds)
        try:
            LoopState.objects.filter(pk=LoopState.SINGLETON_ID, runner_owner=runner.owner).update(runner_seen_at=None)
        except DatabaseError as exc:  # stopping during an outage: the mark simply ages out
            self.stderr.write(f"could not clear the runner mark: {exc}")
        heartbeat.stop(forget=True)
        self.stdout.write(f"Orchestrator loop stopped after {cycles} cycle(s)")
