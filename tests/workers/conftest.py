from __future__ import annotations

import pytest

from orchestration.fleet.models import Worker

T = "tests.workers.targets."


@pytest.fixture(autouse=True)
def _fleet_settings(settings):
    settings.FLEET_ALERT_WEBHOOK_URL = ""
    settings.FLEET_ALERT_EMAILS = []


@pytest.fixture
def make_worker(db):
    def make(name: str = "collector", **fields) -> Worker:
        defaults = {
            "category": "collection",
            "interval_seconds": 300,
            "timeout_seconds": 30,
            "expected_duration_seconds": 5,
            "target": {"type": "python", "path": T + "ok"},
        }
        return Worker.objects.create(name=name, **{**defaults, **fields})

    return make


def target(name: str, **kwargs) -> dict:
    return {"type": "python", "path": T + name, **({"kwargs": kwargs} if kwargs else {})}
