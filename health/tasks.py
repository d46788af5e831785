"""Entry points for the cadence: the loop runner's tick hook (the sweep) and the
django-q2 tasks it and the fleet's check-history-retention worker run."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from health.models import HealthCheck, Service, ServiceDay
from health.sweep import check_services, claim_due
from orchestration.core.runnables import runnable
from orchestration.core.schedules import delete_schedule

DAYS_KEPT = 100  # status pages show 90 days of ServiceDay rows
log = logging.getLogger("health")


@runnable
def check_service_ids(ids: list[int]) -> dict[str, Any]:
    """Check services claimed by the tick hook (runs on a django-q2 worker; queued by
    path, so it must be declared runnable like every schedule target)."""
    # No join to the breakers: the sweep reads them fresh itself.
    services = list(Service.objects.enabled().filter(pk__in=ids).only(*Service.SWEEP_FIELDS))
    return check_services(services).as_dict()


def health_tick() -> int:
    """The sweep's only trigger, a loop runner hook run every tick: each service has its
    own interval (down to a second), finer than any schedule's minute. Claims the due
    services and hands them to the cluster, so a slow sweep never holds up the loop.
    Returns how many were claimed."""
    from django_q.tasks import async_task

    due = claim_due()
    if due:
        async_task("health.tasks.check_service_ids", [s.pk for s in due], task_name="health.sweep", group="health")
    return len(due)


@runnable
def prune_checks(days: int | None = None, keep: int | None = None, batch: int = 5000) -> dict[str, int]:
    """Bounded history: drop checks older than the retention period, and beyond the
    newest ``keep`` of each service. In batches, so writers are never blocked long."""
    days = days or settings.HEALTH_CHECK_RETENTION_DAYS
    keep = keep or settings.HEALTH_CHECK_MAX_PER_SERVICE
    deleted = {"by_age": 0, "over_cap": 0}
    cutoff = timezone.now() - timedelta(days=days)
    while True:
        ids = list(HealthCheck.objects.filter(checked_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            break
        deleted["by_age"] += HealthCheck.objects.filter(pk__in=ids).delete()[0]
    over = (
        HealthCheck.objects.order_by()
        .values("service_id")
        .annotate(n=Count("id"))
        .filter(n__gt=keep)
        .values_list("service_id", flat=True)
    )
    for service_id in list(over):
        # The newest ``keep`` checks stay: everything ordered after the keep-th newest goes.
        pivot = HealthCheck.objects.filter(service_id=service_id).order_by("-checked_at", "-id")[keep - 1]
        older = HealthCheck.objects.filter(
            Q(checked_at__lt=pivot.checked_at) | Q(checked_at=pivot.checked_at, id__lt=pivot.pk),
            service_id=service_id,
        )
        while True:
            ids = list(older.values_list("pk", flat=True)[:batch])
            if not ids:
                break
            deleted["over_cap"] += HealthCheck.objects.filter(pk__in=ids).delete()[0]
    # The status pages' day counts: 90 days are shown, a few more kept.
    deleted["days"] = ServiceDay.objects.filter(day__lt=(timezone.now() - timedelta(days=DAYS_KEPT)).date()).delete()[0]
    if any(deleted.values()):
        log.info("pruned health checks: %s", deleted)
    return deleted


# Schedules that once triggered work now owned by one trigger each (the sweep: the
# tick hook above; check retention: the fleet's check-history-retention worker).
RETIRED_SCHEDULES = ("health.sweep", "health.check_retention")


def retire_schedules(**kwargs: Any) -> None:

    for name in RETIRED_SCHEDULES:
        delete_schedule(name)
