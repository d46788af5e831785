"""The routed-task part of the demo: labelled, idempotent, removable; shown on the dashboard."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from orchestration.core.demo import loaders
from orchestration.routing.models import RouteStat, TaskOutcome

pytestmark = pytest.mark.django_db


def test_the_routing_demo_loads_once_and_is_removed_with_the_rest(staff_browser):
    demo = dict(loaders())["routing"]
    message = demo.load()
    assert "routed-task outcomes" in message
    outcomes = TaskOutcome.objects.filter(context="demo").count()
    assert outcomes == 5 * 24
    assert demo.load() == "already loaded" and TaskOutcome.objects.count() == outcomes
    assert RouteStat.objects.filter(service_name="demo-api", task_type="research").get().count == 24
    html = staff_browser.get("/").content.decode()
    assert "Task routing" in html and '<a href="/services/demo-api/">demo-api</a>' in html

    call_command("load_demo", "--remove", verbosity=0)
    assert not TaskOutcome.objects.exists() and not RouteStat.objects.exists()
    assert "No routed tasks yet" in staff_browser.get("/").content.decode()
