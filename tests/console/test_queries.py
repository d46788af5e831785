"""Console pages cost the same number of queries with ten rows or thousands."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from orchestration.core.models import Anomaly, Job, LedgerEntry
from orchestration.core.models.ledger import ledger_entry
from tests.console.conftest import add_checks, add_run, make_service, make_worker

pytestmark = pytest.mark.django_db


def queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


def grow(world) -> None:
    now = timezone.now()
    Job.objects.bulk_create(
        Job(kind="noop", payload={}, lane=f"lane-{i % 5}", status=("pending", "failed", "completed")[i % 3])
        for i in range(3000)
    )
    LedgerEntry.objects.bulk_create(
        ledger_entry("orchestrator.cycle_idle", "idle", data={"health_score": 60 + i % 40}) for i in range(2000)
    )
    for i in range(60):
        make_service(f"svc-{i}")
        worker = make_worker(f"w-{i}")
        add_run(worker, success=True, duration_ms=10 + i, score=90)
        Anomaly.objects.create(
            code="SLOW_EXECUTION", severity="low", subject=f"worker:w-{i}", worker=worker, detected_at=now
        )
    add_checks(world["api"], [100 + i % 50 for i in range(500)])
    for i in range(100):
        world["worker"].runs.create(status="succeeded", success=True, duration_ms=i, completed_at=now - timedelta(i))


PAGES = [
    "/",
    "/?live=1",
    "/services/",
    "/services/api/",
    "/workers/",
    "/workers/collector/",
    "/pipelines/",
    "/pipelines/{job}/",
    "/console/summary",
]


def test_page_queries_do_not_grow_with_the_data(staff_browser, world):
    urls = [page.format(job=world["job"].pk) for page in PAGES]
    small = {url: queries(staff_browser, url) for url in urls}
    grow(world)
    large = {url: queries(staff_browser, url) for url in urls}
    assert large == small, f"queries with little data {small}, with much more {large}"
