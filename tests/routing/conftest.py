"""Routing fixtures: real local services on 127.0.0.1 registered as ``Service`` rows."""

from __future__ import annotations

import pytest

from health.models import Service
from tests.support.http_services import FakeService


@pytest.fixture
def services(request):
    started: list[FakeService] = []

    def make(name: str, behaviour: str = "fast", caps=("email_campaign",), **fields) -> tuple[Service, FakeService]:
        fake = FakeService(behaviour, delay=fields.pop("delay", 0.0))
        started.append(fake)
        service = Service.objects.create(name=name, base_url=fake.url, capabilities=list(caps), **fields)
        return service, fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def generous_budget(settings):
    """For tests about something else than the retry budget: with few, sequential tasks
    the budget's floor (three retries per window) would otherwise decide the outcome."""
    settings.ROUTING_RETRY_BUDGET = {"min_retries": 1000}
