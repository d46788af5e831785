"""Flat at a million rows: big lists page by key with a bounded count, every default
order and filter reads an index, the admin never counts or scans a whole big table,
the snapshot reads only live and recent jobs, and retention keeps counts in rollups.

The tables here are small: what is checked is the plan and the SQL, not the time
(bench/scale_rows.py measures that at 1M jobs and 5M ledger rows)."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from health.models import HealthCheck, Service
from orchestration.core.choices import JobStatus
from orchestration.core.models import Anomaly, Job, JobRollup, LedgerEntry
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.loop.maintenance import prune_jobs
from orchestration.loop.monitor import jobs_section
from orchestrator_site.api import pagination
from orchestrator_site.api.filters import event_type_prefix, prefix_upper_bound, startswith_by_index
from orchestrator_site.api.pagination import decode_cursor, encode_cursor, keyset_filter

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


def make_jobs(n: int, *, ties: bool = True) -> list[int]:
    """``n`` jobs, several sharing a created_at (ties must neither repeat nor skip)."""
    now = timezone.now()
    Job.objects.bulk_create(
        Job(
            kind="noop",
            lane="default" if i % 3 else "fast",
            created_at=now - timedelta(seconds=(i // 4 if ties else i)),
        )
        for i in range(n)
    )
    return list(Job.objects.order_by("-created_at", "-id").values_list("id", flat=True))


def walk(client, url: str, params: dict | None = None) -> tuple[list[int], list[dict]]:
    ids, pages = [], []
    body = client.get(url, params or {}).json()
    while True:
        pages.append(body)
        ids += [row["id"] for row in body["results"]]
        if not body["next"]:
            return ids, pages
        body = client.get(body["next"]).json()


# --- pure parts ------------------------------------------------------------------------------
def test_a_cursor_round_trips_and_garbage_is_refused():
    now = timezone.now()
    assert decode_cursor(encode_cursor([now, 12], reverse=True)) == ([now.isoformat(), 12], True)
    for bad in ("", "!!!", "e30", encode_cursor([1], reverse=False)[:-3] + "###"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_the_keyset_condition_leads_with_a_bound_on_the_first_key():
    q = keyset_filter(["-created_at", "-id"], ["T", 7], reverse=False)
    assert str(q) == str(keyset_filter(["-created_at", "-id"], ["T", 7], reverse=False))  # deterministic
    text = str(q)
    assert "created_at__lte" in text and "created_at__lt'" in text and "id__lt" in text
    back = str(keyset_filter(["-created_at", "-id"], ["T", 7], reverse=True))
    assert "created_at__gte" in back and "id__gt" in back


@pytest.mark.parametrize(
    ("prefix", "upper"), [("orchestrator.", "orchestrator/"), ("a", "b"), ("x\U0010ffff", "y"), ("\U0010ffff", None)]
)
def test_a_prefix_becomes_a_range(prefix, upper):
    assert prefix_upper_bound(prefix) == upper


# --- the pagination contract -----------------------------------------------------------------
def test_jobs_page_by_cursor_through_ties_without_repeats_or_gaps(staff_client):
    expected = make_jobs(130)
    ids, pages = walk(staff_client, "/api/v1/jobs/", {"limit": 50})
    assert ids == expected
    assert [len(p["results"]) for p in pages] == [50, 50, 30]
    assert all(p["count"] == 130 and p["count_exact"] is True for p in pages)
    assert "cursor=" in pages[0]["next"] and pages[0]["previous"] is None
    # previous from the second page is the first page again
    second = staff_client.get(pages[0]["next"]).json()
    back = staff_client.get(second["previous"]).json()
    assert [r["id"] for r in back["results"]] == expected[:50] and back["previous"] is None


def test_a_filter_and_the_limit_ride_along_the_cursor(staff_client):
    make_jobs(40)
    fast = list(Job.objects.filter(lane="fast").order_by("-created_at", "-id").values_list("id", flat=True))
    ids, pages = walk(staff_client, "/api/v1/jobs/", {"lane": "fast", "limit": 5})
    assert ids == fast and pages[0]["count"] == len(fast)
    query = parse_qs(urlsplit(pages[0]["next"]).query)
    assert query["lane"] == ["fast"] and query["limit"] == ["5"]


def test_a_shallow_offset_still_works_and_continues_by_cursor(staff_client):
    expected = make_jobs(60)
    body = staff_client.get("/api/v1/jobs/", {"limit": 10, "offset": 20}).json()
    assert [r["id"] for r in body["results"]] == expected[20:30]
    assert body["previous"] and "offset" not in body["next"]
    assert [r["id"] for r in staff_client.get(body["next"]).json()["results"]] == expected[30:40]


def test_an_offset_deeper_than_ten_thousand_is_refused_naming_the_cursor(staff_client):
    response = staff_client.get("/api/v1/ledger/", {"offset": 10_001})
    assert response.status_code == 400
    assert "cursor" in response.json()["detail"] and "offset" not in response.json()["cursor"]
    assert staff_client.get("/api/v1/ledger/", {"offset": 10_000}).status_code == 200
    assert staff_client.get("/api/v1/jobs/", {"cursor": "not-a-cursor"}).status_code == 400


def test_above_the_exact_limit_the_count_is_an_estimate(staff_client, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 50)
    make_jobs(120)
    body = staff_client.get("/api/v1/jobs/").json()
    assert body["count_exact"] is False and body["count"] > 50
    if connection.vendor == "sqlite":
        assert body["count"] == 120  # the id span of a table without gaps
    filtered = staff_client.get("/api/v1/jobs/", {"lane": "fast"}).json()  # 40 rows: exact again
    assert filtered == {**filtered, "count": 40, "count_exact": True}


@pytest.mark.parametrize(
    "path",
    ["/api/v1/jobs/", "/api/v1/ledger/", "/api/v1/anomalies/", "/api/v1/workers/w/runs/", "/api/v1/services/s/checks/"],
)
def test_every_big_list_pages_by_cursor(staff_client, path):
    now = timezone.now()
    worker = Worker.objects.create(name="w", category="collection", target={"type": "python", "path": "x.y"})
    service = Service.objects.create(name="s", base_url="http://127.0.0.1:9")
    make_jobs(7)
    LedgerEntry.objects.bulk_create(LedgerEntry(event_type="job.x", created_at=now) for _ in range(7))
    Anomaly.objects.bulk_create(Anomaly(code="X", subject=f"s{i}", severity="low") for i in range(7))
    WorkerRun.objects.bulk_create(WorkerRun(worker=worker, queued_at=now) for _ in range(7))
    HealthCheck.objects.bulk_create(HealthCheck(service=service, checked_at=now, success=True) for _ in range(7))
    ids, pages = walk(staff_client, path, {"limit": 3})
    assert len(ids) == len(set(ids)) == pages[0]["count"] >= 7
    assert len(pages) >= 3 and "cursor=" in pages[0]["next"] and pages[0]["count_exact"] is True


def test_the_event_type_prefix_is_exact_and_case_sensitive(staff_client):
    for event_type in (
        "orchestrator.cycle_idle",
        "orchestrator.cycle_started",
        "orchestratorx",
        "Orchestrator.y",
        "job.x",
    ):
        LedgerEntry.objects.create(event_type=event_type)
    got = staff_client.get("/api/v1/ledger/", {"event_type": "orchestrator."}).json()
    assert sorted(r["event_type"] for r in got["results"]) == ["orchestrator.cycle_idle", "orchestrator.cycle_started"]


# --- index use -------------------------------------------------------------------------------
def plan(queryset) -> str:
    """The plan of ``queryset``; PostgreSQL is told to avoid a sequential scan and a
    sort, as it would at a million rows (on a tiny table both are cheaper)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")
        try:
            return queryset.explain()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_seqscan")
                cursor.execute("RESET enable_sort")
    return queryset.explain()


def first_page(queryset):
    return queryset.order_by(*queryset.model._meta.ordering)[:51]


@pytest.mark.parametrize(
    ("name", "queryset", "index"),
    [
        ("jobs", lambda: first_page(Job.objects.all()), "job_created_idx"),
        (
            "jobs after a cursor",
            lambda: first_page(
                Job.objects.filter(keyset_filter(["-created_at", "-id"], [timezone.now(), 10**6], reverse=False))
            ),
            "job_created_idx",
        ),
        ("ledger", lambda: first_page(LedgerEntry.objects.all()), "ledger_created_idx"),
        (
            "ledger by event_type namespace",
            lambda: first_page(event_type_prefix(LedgerEntry.objects.all(), "orchestrator.")),
            "ledger_group_idx",
        ),
        (
            "ledger by a shorter prefix",
            lambda: startswith_by_index(LedgerEntry.objects.order_by(), "event_type", "orch"),
            "ledger_event_prefix_idx",
        ),
        ("ledger by subject", lambda: first_page(LedgerEntry.objects.filter(subject="job:1")), "ledger_subject_idx"),
        ("ledger by actor", lambda: first_page(LedgerEntry.objects.filter(actor="ops")), "ledger_actor_idx"),
        ("jobs by priority", lambda: first_page(Job.objects.filter(priority="high")), "job_priority_created_idx"),
        ("jobs by channel", lambda: first_page(Job.objects.filter(channel="tv")), "job_channel_created_idx"),
        ("anomalies", lambda: first_page(Anomaly.objects.all()), "anomaly_detected_idx"),
        ("runs of a worker", lambda: first_page(WorkerRun.objects.filter(worker_id=1)), "workerrun_worker_idx"),
        (
            "checks of a service",
            lambda: first_page(HealthCheck.objects.filter(service_id=1)),
            "healthcheck_service_idx",
        ),
        (
            "finished in the window",
            lambda: Job.objects.order_by().filter(
                status__in=("completed", "failed", "canceled"), finished_at__gte=timezone.now()
            ),
            "job_finished_idx",
        ),
        (
            "live jobs",
            lambda: Job.objects.order_by().filter(status__in=("pending", "retry", "processing")).values("lane"),
            ("job_live_idx", "job_finished_idx"),  # both led by status, both holding lane
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_the_default_orders_and_filters_read_an_index(name, queryset, index):
    got = plan(queryset())
    assert any(i in got for i in ((index,) if isinstance(index, str) else index)), f"{name}: {got}"
    # A full sort of the matches is refused; PostgreSQL's incremental sort of rows that
    # tie on an index-ordered created_at (a handful per page) is not a sort of the table.
    assert not re.search(r"USE TEMP B-TREE FOR ORDER BY|(^|->)\s*Sort\s+\(cost", got, re.M), f"{name} sorts: {got}"


# --- the admin -------------------------------------------------------------------------------
BIG = ("orchestration_job", "orchestration_ledgerentry")


@pytest.mark.parametrize(
    "url",
    [
        "/admin/orchestration/job/",
        "/admin/orchestration/job/?status__exact=completed&lane=default&kind=noop&q=noop",
        "/admin/orchestration/job/?q=42&channel=tv&priority__exact=high",
        "/admin/orchestration/ledgerentry/",
        "/admin/orchestration/ledgerentry/?event_type=orchestrator.&actor=system&severity__exact=info&q=job:1",
    ],
)
def test_admin_changelists_never_count_or_scan_a_whole_big_table(admin_client, url):
    make_jobs(30)
    LedgerEntry.objects.bulk_create(LedgerEntry(event_type="orchestrator.cycle_idle") for _ in range(30))
    admin_client.get(url)  # the filters' small tables, warmed
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(url)
    assert response.status_code == 200
    big = [q["sql"] for q in ctx.captured_queries if any(t in q["sql"] for t in BIG)]
    assert big, "the page reads its table"
    for sql in big:
        assert "DISTINCT" not in sql.upper(), sql
        if "COUNT(" in sql.upper():
            assert re.search(r"LIMIT 10001\b", sql), f"an unbounded count: {sql}"
    assert "date_hierarchy" not in response.content.decode() and "xfull" not in response.content.decode()


# --- the snapshot reads live and recent jobs only --------------------------------------------
def test_finished_jobs_count_within_the_window_only(settings):
    now = timezone.now()
    settings.JOB_FINISHED_WINDOW_HOURS = 24
    Job.objects.bulk_create(
        [
            Job(kind="noop", status=JobStatus.COMPLETED, finished_at=now - timedelta(hours=2)),
            Job(kind="noop", status=JobStatus.COMPLETED, finished_at=now - timedelta(days=3)),
            Job(kind="noop", status=JobStatus.FAILED, finished_at=now - timedelta(minutes=5)),
            Job(kind="noop", status=JobStatus.PENDING, created_at=now - timedelta(days=9)),
        ]
    )
    section = jobs_section(now)
    assert (section["completed"], section["failed"], section["pending"], section["total"]) == (1, 1, 1, 3)
    assert section["finished_window_hours"] == 24


# --- retention -------------------------------------------------------------------------------
def test_retention_deletes_old_finished_jobs_in_batches_and_keeps_their_counts(settings):
    now = timezone.now()
    settings.JOB_RETENTION_DAYS = 30
    old, recent = now - timedelta(days=40), now - timedelta(days=10)
    Job.objects.bulk_create(
        [
            *(Job(kind="noop", lane="a", status=JobStatus.COMPLETED, finished_at=old) for _ in range(4)),
            Job(kind="noop", lane="b", status=JobStatus.COMPLETED, finished_at=old),
            *(Job(kind="render", lane="a", status=JobStatus.FAILED, finished_at=old) for _ in range(2)),
            Job(kind="noop", lane="a", status=JobStatus.COMPLETED, finished_at=recent),
            Job(kind="noop", lane="a", status=JobStatus.PENDING, created_at=old),  # live: never deleted
        ]
    )
    with CaptureQueriesContext(connection) as ctx:
        result = prune_jobs(batch=3)
    assert result == {"jobs": 7, "batches": 3}
    deletes = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith('DELETE FROM "orchestration_job"')]
    assert len(deletes) == 3
    assert Job.objects.count() == 2
    rollups = {(r.status, r.lane, r.kind): (r.day, r.count) for r in JobRollup.objects.all()}
    assert rollups == {
        ("completed", "a", "noop"): (old.date(), 4),
        ("completed", "b", "noop"): (old.date(), 1),
        ("failed", "a", "render"): (old.date(), 2),
    }
    # Again: nothing left to delete, the rollups unchanged; later deletions add up.
    assert prune_jobs(batch=3) == {"jobs": 0, "batches": 0}
    Job.objects.create(kind="noop", lane="a", status=JobStatus.COMPLETED, finished_at=old)
    prune_jobs()
    assert JobRollup.objects.get(status="completed", lane="a", kind="noop").count == 5


def test_the_builtin_retention_worker_runs(settings):
    from orchestration.fleet.runner import execute_run, request_run

    Job.objects.create(kind="noop", status=JobStatus.CANCELED, finished_at=timezone.now() - timedelta(days=90))
    run = request_run(Worker.objects.get(name="job-retention"))
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert run.metrics["deleted_jobs"] == 1 and JobRollup.objects.get(status="canceled").count == 1


def test_the_estimate_of_a_filtered_list_samples_the_newest_rows():
    from orchestrator_site.api.pagination import estimated_count

    make_jobs(90)  # every third in lane "fast"
    got = estimated_count(Job.objects.filter(lane="fast"))
    if connection.vendor == "sqlite":
        assert got == 30  # the sample holds the whole table here
        with CaptureQueriesContext(connection) as ctx:
            estimated_count(Job.objects.filter(lane="fast"))
        assert "CROSS JOIN" in ctx.captured_queries[-1]["sql"]  # walked by id, not by the lane index
    else:
        assert got > 0  # the planner's estimate
    if connection.vendor == "sqlite":
        assert estimated_count(Job.objects.filter(lane="none")) == 0
