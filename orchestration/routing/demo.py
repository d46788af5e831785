"""Demo routed-task history, so a first visit shows routing that has learned something.

The demo services (health/demo.py) answer health checks but have no ``/process``
endpoint, so instead of routing real tasks this records a few hours of outcomes
through the routing memory (``executor.remember``), exactly as executed tasks do,
then runs the self-improvement analysis once. Everything is labelled: outcomes carry
context "demo", stats and suggestions name ``demo-`` services; ``load_demo --remove``
takes them away.
"""

from __future__ import annotations

import random
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from orchestration.core.demo import DEMO_PREFIX, register_demo
from orchestration.routing import improvement
from orchestration.routing.executor import remember
from orchestration.routing.models import RouteStat, Suggestion, TaskOutcome

# task type, service, success rate, typical ms
DEMO_ROUTES = [
    ("research", f"{DEMO_PREFIX}-api", 0.97, 180),
    ("analysis", f"{DEMO_PREFIX}-api", 0.93, 420),
    ("search", f"{DEMO_PREFIX}-search", 0.72, 90),
    ("render", f"{DEMO_PREFIX}-web", 0.88, 650),
    ("reporting", f"{DEMO_PREFIX}-reports", 0.55, 1900),
]
OUTCOMES_PER_ROUTE = 24


class RoutingDemo:
    def load(self) -> str:

        if TaskOutcome.objects.filter(context=DEMO_PREFIX).exists():
            return "already loaded"
        rng = random.Random(7)  # the same history on every machine
        now = timezone.now()
        made = 0
        for task_type, service, rate, typical_ms in DEMO_ROUTES:
            for index in range(OUTCOMES_PER_ROUTE):
                ok = rng.random() < rate
                outcome = remember(
                    task_type=task_type,
                    service=service,
                    success=ok,
                    execution_ms=round(typical_ms * rng.uniform(0.6, 1.6), 1) if ok else None,
                    priority=rng.choice(["normal", "normal", "high", "low"]),
                    strategy="best",
                    status_code=200 if ok else rng.choice([500, 502, 503]),
                    error="" if ok else "demo: upstream error",
                    context=DEMO_PREFIX,
                )
                # Spread the history over the last six hours.
                when = now - timedelta(minutes=6 * 60 * (OUTCOMES_PER_ROUTE - index) / OUTCOMES_PER_ROUTE)
                TaskOutcome.objects.filter(pk=outcome.pk).update(created_at=when)
                made += 1
        analysis = improvement.analyze(24, actor=DEMO_PREFIX)
        return f"{made} routed-task outcomes over 6 h; {len(analysis['created'])} suggestion(s) to review"

    def remove(self) -> int:

        demo_service = f"{DEMO_PREFIX}-"
        removed = TaskOutcome.objects.filter(
            Q(context=DEMO_PREFIX) | Q(service_name__startswith=demo_service)
        ).delete()[0]
        removed += RouteStat.objects.filter(service_name__startswith=demo_service).delete()[0]
        return removed + Suggestion.objects.filter(subject__contains=demo_service).delete()[0]


register_demo("routing", RoutingDemo())
