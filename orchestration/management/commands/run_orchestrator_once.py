from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from orchestration.loop.cycle import CycleBusy, run_cycle
from orchestration.loop.health_score import explain


class Command(BaseCommand):
    help = "Run one control-loop cycle now and print what it saw, decided and did."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="Print the whole result as JSON.")
        parser.add_argument("--dry-run", action="store_true", help="Decide and record, execute nothing.")

    def handle(self, *args, json: bool = False, dry_run: bool = False, **options):
        try:
            result = run_cycle(dry_run=dry_run, manual=True, actor="cli")
        except CycleBusy as exc:
            raise CommandError(str(exc)) from None
        if json:
            self.stdout.write(_json_dumps(result))
            return
        snap, system = result["snapshot"], result["snapshot"]["system"]
        jobs = snap["jobs"]
        self.stdout.write(
            f"Cycle {result['cycle']}{' (dry run)' if result['dry_run'] else ''} — {result['duration_ms']} ms"
        )
        deductions = system.get("deductions", [])
        self.stdout.write(
            f"Health: {system['health_score']}/100 ({system['status']})"
            + (" = 100 " + " ".join(f"- {d['points']}" for d in deductions) if deductions else ", nothing deducted")
        )
        for line in explain(system):
            self.stdout.write(f"  {line}")
        self.stdout.write(f"Queue's own score: {system['queue_health_score']}/100 (what the emergency rebalance reads)")
        self.stdout.write(
            "Jobs: "
            + ", ".join(f"{k} {jobs[k]}" for k in ("pending", "processing", "retry", "failed", "completed"))
            + f"; oldest pending {jobs['oldest_pending_minutes']} min"
        )
        self.stdout.write(f"Decision: {result['decision']['summary']}")
        outcomes = result["execution"]["results"]  # same order as the actions; empty on a dry run
        for i, action in enumerate(result["decision"]["actions"]):
            outcome = outcomes[i] if i < len(outcomes) else None
            mark = "planned" if outcome is None else ("ok" if outcome["success"] else f"FAILED: {outcome['error']}")
            self.stdout.write(f"  [{action['priority']:>2}] {action['type']}: {action['reason']} → {mark}")
        execution = result["execution"]
        self.stdout.write(f"Execution: {execution['succeeded']} succeeded, {execution['failed']} failed")


def _json_dumps(value) -> str:
    return json.dumps(value, indent=2, default=str)
