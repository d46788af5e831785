"""Demo data registry. Everything demo is labelled (``demo`` in its name, reference or
channel) so ``load_demo --remove`` finds it again."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol

from django.utils import timezone

from orchestration.core.jobs.queue import enqueue
from orchestration.core.models import Campaign, Job

DEMO_PREFIX = "demo"


class DemoLoader(Protocol):
    def load(self) -> str: ...

    def remove(self) -> int: ...


_LOADERS: dict[str, DemoLoader] = {}


def register_demo(name: str, loader: DemoLoader) -> None:
    _LOADERS[name] = loader


def loaders() -> list[tuple[str, DemoLoader]]:
    return list(_LOADERS.items())


class QueueDemo:
    """A demo campaign and a handful of jobs so the queue and the rules have material."""

    def load(self) -> str:

        campaign, _ = Campaign.objects.get_or_create(
            name="demo-spring-launch", defaults={"channel": "youtube", "budget": 250}
        )
        if Job.objects.filter(reference__startswith=f"{DEMO_PREFIX}:").exists():
            return "already loaded"
        now = timezone.now()
        specs = [
            ("noop", {}, "normal", {"score": 91, "channel": "youtube", "campaign": campaign}),
            ("noop", {}, "high", {"score": 85, "channel": "instagram"}),
            ("sleep", {"seconds": 2}, "normal", {"score": 55, "channel": "tiktok"}),
            ("noop", {}, "low", {"score": 32, "channel": "tiktok", "not_before": now + timedelta(minutes=30)}),
            ("fail", {"message": "demo failure: upstream API unreachable"}, "normal", {"max_attempts": 2}),
        ]
        for index, (kind, payload, priority, extra) in enumerate(specs):
            enqueue(kind, payload, priority=priority, reference=f"{DEMO_PREFIX}:queue:{index}", **extra)
        return f"{len(specs)} jobs and 1 campaign"

    def remove(self) -> int:

        jobs = Job.objects.filter(reference__startswith=f"{DEMO_PREFIX}:").delete()[0]
        return jobs + Campaign.objects.filter(name__startswith=f"{DEMO_PREFIX}-").delete()[0]


register_demo("queue", QueueDemo())
