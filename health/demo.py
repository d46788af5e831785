"""Demo services: this server's own /demo/health/ endpoints, wired with dependencies so
the breaker and the dependency-aware alert can be watched in the admin."""

from __future__ import annotations

from django.conf import settings

from health.models import Service
from orchestration.core.demo import DEMO_PREFIX, register_demo
from orchestration.core.models import Anomaly

# name, endpoint, depends_on, extra fields
DEMO_SERVICES = [
    ("demo-database", "healthy", [], {"category": "storage", "capabilities": ["storage"]}),
    ("demo-api", "healthy", ["demo-database"], {"category": "backend", "capabilities": ["research", "analysis"]}),
    (
        "demo-search",
        "flaky",
        [],
        {"category": "backend", "capabilities": ["search"], "failure_threshold": 3, "open_timeout_seconds": 30},
    ),
    ("demo-web", "flaky", ["demo-api", "demo-search"], {"category": "frontend", "capabilities": ["render"]}),
    (
        "demo-reports",
        "slow",
        ["demo-database"],
        {"category": "reporting", "timeout_seconds": 1.0, "capabilities": ["reporting"]},
    ),
]


class HealthDemo:
    def load(self) -> str:

        base = settings.HEALTH_DEMO_BASE_URL
        created = 0
        for name, endpoint, _deps, extra in DEMO_SERVICES:
            defaults = {
                "base_url": base,
                "health_path": f"/demo/health/{endpoint}",
                "check_interval_seconds": 15,
                "description": f"{DEMO_PREFIX}: answers {endpoint}",
                **extra,
            }
            _, made = Service.objects.get_or_create(name=name, defaults=defaults)
            created += made
        for name, _endpoint, deps, _extra in DEMO_SERVICES:
            Service.objects.get(name=name).depends_on.add(*Service.objects.filter(name__in=deps))
        return f"{created} service(s) against {base}/demo/health/" if created else "already loaded"

    def remove(self) -> int:

        services = Service.objects.filter(name__startswith=f"{DEMO_PREFIX}-").delete()[0]
        return services + Anomaly.objects.filter(subject__startswith=f"service:{DEMO_PREFIX}-").delete()[0]


register_demo("services", HealthDemo())
