"""A worker as an approved suggestion changes it (``loop.adjustments``): its cadence
through ``Worker.set_cadence``, its switch through ``Worker.set_enabled``, the model
methods the admin and the API use, each with its ledger entry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Avg, Count, Q
from django.utils import timezone

from orchestration.fleet.choices import FAILED_RUN_STATUSES, RunStatus
from orchestration.fleet.models import Worker
from orchestration.fleet.specs import SpecError
from orchestration.loop.adjustments import AdjustmentError, register_target

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
