"""The body of a public status page, read from the database with a fixed number of
queries (members, their days, incidents, maintenance), decided by ``health.status_page``."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from health import maintenance as windows_pure
from health import status_page as pure
from health.models import MaintenanceWindow, ServiceAlert, ServiceDay, StatusPage
from health.report import display_health

INCIDENTS_SHOWN = 20


def page_body(page: StatusPage) -> dict[str, Any]:
    now = timezone.now()
    today = now.astimezone(UTC).date()
    members = list(page.members())
    ids = [s.pk for s in members]
    since = today - timedelta(days=pure.DAYS - 1)
    days: dict[int, dict] = {}
    for sid, day, checks, ok in ServiceDay.objects.filter(service_id__in=ids, day__gte=since).values_list(
        "service_id", "day", "checks", "successes"
    ):
        days.setdefault(sid, {})[day] = (checks, ok)
    quiet = MaintenanceWindow.quiet_services({s.name: s.tags or [] for s in members}, now) if members else set()
    services = []
    for s in members:
        state = pure.public_state(display_health(s), under_maintenance=s.name in quiet)
        history = days.get(s.pk, {})
        services.append(
            {
                "name": s.name,
                "state": state,
                "colour": pure.STATE_COLOUR[state],
                "uptime_90d": pure.period_uptime(history),
                "bars": [
                    {
                        "day": b.day.isoformat(),
                        "uptime": b.uptime,
                        "checks": b.checks,
                        "colour": b.colour,
                        "label": b.label,
                    }
                    for b in pure.bars(history, today)
                ],
            }
        )
    names = {s.name for s in members}
    # Incidents: when a service on the page was down, and when it came back; no error text.
    incidents = [
        {
            "service": a.service.name,
            "started_at": a.opened_at.isoformat(),
            "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
            "affected": [n for n in a.affected if n in names],
        }
        for a in ServiceAlert.objects.filter(service_id__in=ids, opened_at__gte=now - timedelta(days=pure.DAYS))
        .select_related("service")
        .order_by("-opened_at")[:INCIDENTS_SHOWN]
    ]
    maintenance = []
    tags_of = {s.name: s.tags or [] for s in members}
    windows = MaintenanceWindow.objects.filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now)).prefetch_related(
        "services"
    )
    for w in windows[:200]:
        spec = w.spec()
        covered = sorted(n for n, tags in tags_of.items() if windows_pure.covers(spec, n, tags))
        current = windows_pure.current_occurrence(spec, now)
        span = current or windows_pure.next_occurrence(spec, now)
        if covered and span and (current or span[0] <= now + timedelta(days=14)):
            maintenance.append(
                {
                    "name": w.name,
                    "description": w.description,
                    "active": current is not None,
                    "starts_at": span[0].isoformat(),
                    "ends_at": span[1].isoformat(),
                    "services": covered,
                }
            )
    return {
        "slug": page.slug,
        "title": page.title,
        "description": page.description,
        "generated_at": now.isoformat(),
        "state": pure.overall_state([s["state"] for s in services]),
        "services": services,
        "incidents": incidents,
        "maintenance": maintenance,
    }
