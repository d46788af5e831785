"""A worker as an approved suggestion changes it (``loop.adjustments``): its cadence
through ``Worker.set_cadence``, its switch through ``Worker.set_enabled``, the model
methods the admin and the API use, each with its ledger entry. And what the fleet
suggests about its workers (``worker_findings``, pure), written by the routing analysis
as pending suggestions for a person."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Avg, Count, Q
from django.utils import timezone

from orchestration.fleet.choices import FAILED_RUN_STATUSES, RunStatus, SkipReason
from orchestration.fleet.models import Worker
from orchestration.fleet.specs import SpecError
from orchestration.loop.adjustments import AdjustmentError, register_source, register_target

# The window of the numbers kept before a change and after it.
METRICS_WINDOW = timedelta(hours=24)


class Workers:
    fields = ("cadence", "enabled")

    def _get(self, name: str) -> Worker:
        worker = Worker.objects.filter(name=name).first()
        if worker is None:
            raise LookupError(f"worker {name} does not exist")
        return worker

    def read(self, name: str) -> dict[str, Any]:
        worker = self._get(name)
        return {
            "cadence": {"interval_seconds": worker.interval_seconds or None, "cron": worker.cron or ""},
            "enabled": worker.enabled,
        }

    def write(self, name: str, field: str, value: Any, *, actor: str, reason: str) -> None:
        worker = self._get(name)
        if field == "enabled":
            worker.set_enabled(bool(value), actor=actor)
        elif field == "cadence" and isinstance(value, dict):
            try:
                worker.set_cadence(
                    interval_seconds=value.get("interval_seconds"),
                    cron=value.get("cron") or "",
                    actor=actor,
                    reason=reason,
                )
            except SpecError as exc:
                raise AdjustmentError(f"worker {name} refused that cadence: {exc}") from None
        else:
            raise AdjustmentError(f"a worker's {field} is not changed by suggestions")

    def metrics(self, name: str) -> dict[str, Any]:
        worker = self._get(name)
        since = timezone.now() - METRICS_WINDOW
        runs = worker.runs.filter(completed_at__gte=since).exclude(status=RunStatus.SKIPPED)
        counts = runs.aggregate(
            runs=Count("id"),
            failed=Count("id", filter=Q(status__in=FAILED_RUN_STATUSES)),
            avg_ms=Avg("duration_ms"),
        )
        total = counts["runs"]
        return {
            "runs_24h": total,
            "success_rate": round((total - counts["failed"]) / total, 4) if total else None,
            "avg_ms": round(counts["avg_ms"], 1) if counts["avg_ms"] is not None else None,
            "last_score": worker.last_score,
        }


register_target("worker", Workers())


# --- findings ---------------------------------------------------------------------------------
MIN_EVIDENCE = 10  # runs in the window before the fleet says anything about a worker
OVERLAP_SHARE = 0.5  # half its due times skipped because the previous run still holds the lock


@dataclass(frozen=True)
class WorkerWindow:
    name: str
    enabled: bool
    interval_seconds: int | None
    finished: int
    succeeded: int
    skipped_lock_held: int


def worker_findings(rows: list[WorkerWindow], window_hours: float) -> list[dict[str, Any]]:
    """A worker that never succeeds may be switched off; one whose runs outlast its
    interval may run half as often. Suggestions only: a person decides."""
    findings = []
    for row in rows:
        subject = f"worker:{row.name}"
        if row.enabled and row.finished >= MIN_EVIDENCE and row.succeeded == 0:
            findings.append(
                {
                    "kind": "failing_worker",
                    "subject": subject,
                    "title": f"{row.name} failed all {row.finished} runs",
                    "description": f"No run of {row.name} succeeded in the last {window_hours:g} h. Consider "
                    "disabling it until its target is fixed (applying this disables it; revert enables it).",
                    "action": "disable_worker",
                    "priority": "high",
                    "evidence": {"worker": row.name, "runs": row.finished, "window_hours": window_hours},
                }
            )
        due = row.finished + row.skipped_lock_held
        if row.interval_seconds and due >= MIN_EVIDENCE and row.skipped_lock_held >= OVERLAP_SHARE * due:
            slower = int(math.ceil(row.interval_seconds * 2 / 60) * 60)
            findings.append(
                {
                    "kind": "overlapping_runs",
                    "subject": subject,
                    "title": f"{row.name}'s runs outlast its interval",
                    "description": f"{row.skipped_lock_held} of {due} due times were skipped because the previous "
                    f"run still held the lock. Consider running every {slower} s instead of {row.interval_seconds} s.",
                    "action": "set_cadence",
                    "priority": "medium",
                    "evidence": {
                        "worker": row.name,
                        "interval_seconds": slower,
                        "was_interval_seconds": row.interval_seconds,
                        "skipped_lock_held": row.skipped_lock_held,
                        "due": due,
                        "window_hours": window_hours,
                    },
                }
            )
    return findings


def find(window_hours: float) -> list[dict[str, Any]]:
    """The window's runs per worker in one grouped query, then the pure findings."""
    since = timezone.now() - timedelta(hours=window_hours)
    rows = (
        Worker.objects.filter(runs__completed_at__gte=since)
        .values("name", "enabled", "interval_seconds")
        .annotate(
            finished=Count("runs", filter=Q(runs__status__in=(RunStatus.SUCCEEDED, *FAILED_RUN_STATUSES))),
            succeeded=Count("runs", filter=Q(runs__status=RunStatus.SUCCEEDED)),
            skipped_lock_held=Count(
                "runs", filter=Q(runs__status=RunStatus.SKIPPED, runs__skipped_reason=SkipReason.LOCK_HELD)
            ),
        )
    )
    return worker_findings([WorkerWindow(**row) for row in rows], window_hours)


register_source(find)
