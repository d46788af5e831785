"""What the control loop sees of service health: the snapshot's ``services`` section.

What it costs the health score is data: the deductions of ``health.default_rules``
(rows a person can read and switch, seeded switched off so the score is the documented
formula until someone asks for more)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, FilteredRelation, Q

from health import status as pure
from health.choices import BreakerState, ServiceHealth
from health.models import Service
from orchestration.loop.monitor import snapshot_section


@snapshot_section("services", queries=1)
def services_section(now: datetime) -> dict[str, Any]:
    """One aggregate query whatever the number of services."""
    on = Q(enabled=True)
    # Open alerts come in through a filtered join (at most one open alert per service,
    # so the join never multiplies rows). Aliases carry an n_ prefix because an
    # aggregate may not shadow a field name.
    raw = (
        Service.objects.order_by()
        .annotate(open_alert=FilteredRelation("alerts", condition=Q(alerts__resolved_at__isnull=True)))
        .aggregate(
            n_total=Count("id"),
            n_enabled=Count("id", filter=on),
            n_healthy=Count("id", filter=on & Q(health=ServiceHealth.HEALTHY)),
            n_unhealthy=Count("id", filter=on & Q(health=ServiceHealth.UNHEALTHY)),
            n_unknown=Count("id", filter=on & Q(health=ServiceHealth.UNKNOWN)),
            n_circuit_open=Count("id", filter=on & Q(health=ServiceHealth.CIRCUIT_OPEN)),
            n_breakers_open=Count("id", filter=on & Q(circuit__state=BreakerState.OPEN)),
            n_breakers_half_open=Count("id", filter=on & Q(circuit__state=BreakerState.HALF_OPEN)),
            n_due=Count("id", filter=on & (Q(next_check_at__isnull=True) | Q(next_check_at__lte=now))),
            n_open_alerts=Count("open_alert"),
        )
    )
    counts = {key[2:]: value for key, value in raw.items()}
    n = counts["enabled"]
    healthy = counts["healthy"]
    overall = pure.overall_health([pure.HEALTHY] * healthy + [pure.UNHEALTHY] * (n - healthy))
    return {
        **counts,
        "breakers_closed": n - counts["breakers_open"] - counts["breakers_half_open"],
        "overall_health": overall,
        "down": counts["unhealthy"] + counts["circuit_open"],
        "all_unhealthy": 1 if n and not healthy and n > counts["unknown"] else 0,
    }
