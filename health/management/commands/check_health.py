"""Check services now and print their health as a table (or JSON)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from health.models import Service
from health.report import status_report
from health.sweep import check_services


class Command(BaseCommand):
    help = "Check every enabled service now (concurrently) and print a table; --json for JSON."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", help="Only these services (default: all enabled).")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the /health/status body as JSON."
        )
        parser.add_argument("--no-check", action="store_true", help="Print the last known state without checking.")

    def handle(self, *args, names: list[str], as_json: bool, no_check: bool, **options):
        services = list(Service.objects.enabled().select_related("circuit"))
        if names:
            known = {s.name for s in services}
            unknown = sorted(set(names) - known)
            if unknown:
                raise CommandError(f"No enabled service named {', '.join(unknown)}")
            services = [s for s in services if s.name in names]
        if not no_check and services:
            if not as_json:
                self.stderr.write(f"Checking {len(services)} service(s)…")
            sweep = check_services(services, actor="check_health")
            if not as_json:
                self.stderr.write(
                    f"Done in {sweep.duration_ms:.0f} ms: {len(sweep.failed)} failed, "
                    f"{len(sweep.skipped_circuit_open)} skipped (circuit open)."
                )
        report = status_report()
        if names:
            report["services"] = {k: v for k, v in report["services"].items() if k in names}
        if as_json:
            self.stdout.write(_json_dumps(report))
            return
        self.stdout.write(_table(report))


def _json_dumps(report) -> str:
    return json.dumps(report, indent=2, default=str)


def _table(report) -> str:
    headers = ["SERVICE", "HEALTH", "BREAKER", "UPTIME", "CHECKS", "FAILS", "RESPONSE", "LAST CHECK", "ERROR"]
    rows = []
    for name, s in sorted(report["services"].items()):
        uptime = "-" if s["uptime_percentage"] is None else f"{s['uptime_percentage']:.2f}%"
        response = "-" if s["response_time_ms"] is None else f"{s['response_time_ms']:.0f} ms"
        rows.append(
            [
                name,
                s["health"],
                s["circuit_breaker_state"],
                uptime,
                f"{s['successful_checks']}/{s['total_checks']}",
                str(s["consecutive_failures"]),
                response,
                (s["last_check"] or "-")[:19],
                (s["error_message"] or "")[:60],
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if not rows:
        lines.append("(no enabled services)")
    lines.append(f"overall: {report['overall_health']}")
    return "\n".join(lines)
