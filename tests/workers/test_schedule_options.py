"""Catch-up, jitter, pause on failure, backfill, next runs and the output schema, through
the scheduler, the API, the console and the admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from django.utils import timezone

from orchestration.core.models import Anomaly, Job, LedgerEntry
from orchestration.fleet import cadence
from orchestration.fleet.firing import fire_due
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import execute_run, request_run
from orchestration.fleet.sync import sync_schedule
from tests.workers.conftest import target


def test_after_downtime_due_times_inside_the_window_run_once_each_oldest_first(make_worker, broker_only):
    worker = make_worker(interval_seconds=300, catch_up_seconds=720)
    with time_machine.travel(datetime(2026, 3, 10, 9, 58, tzinfo=UTC), tick=False):
        sync_schedule(worker, restart=True)  # as enabling it then would
        assert worker.next_due_at == datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
    # Down from 09:58 to 10:32.
    with time_machine.travel(datetime(2026, 3, 10, 10, 32, tzinfo=UTC), tick=False):
        fired = fire_due()
    assert fired == {
        "collector": ["2026-03-10T10:20:00+00:00", "2026-03-10T10:25:00+00:00", "2026-03-10T10:30:00+00:00"]
    }
    runs = WorkerRun.objects.filter(worker=worker).order_by("id")
    assert [r.due_at.minute for r in runs] == [20, 25, 30]  # queued oldest first
    worker.refresh_from_db()
    assert worker.missed_runs == 4 and worker.next_due_at == datetime(2026, 3, 10, 10, 35, tzinfo=UTC)
    missed = LedgerEntry.objects.get(event_type="worker.runs_missed")
    assert missed.data["missed"] == 4 and "catch-up window (720 s)" in missed.message


def test_jitter_delays_each_due_time_by_its_own_hash(make_worker, broker_only):
    worker = make_worker(interval_seconds=300, jitter_seconds=40)
    due = worker.next_due_at
    with time_machine.travel(due + timedelta(seconds=1), tick=False):
        fire_due()
    run = WorkerRun.objects.get(worker=worker, due_at=due)
    expected = cadence.jitter("collector", due, 40)
    assert Job.objects.get(pk=run.job_id).not_before == (due + timedelta(seconds=expected) if expected else None)


def test_a_worker_pauses_after_n_failures_and_a_person_resumes_it(make_worker, staff_client, user_client):
    worker = make_worker(target=target("boom"), pause_after_failures=2)
    for _ in range(2):
        execute_run(request_run(worker).pk)
    worker.refresh_from_db()
    assert worker.paused and worker.consecutive_failures == 2 and "2 consecutive failures" in worker.paused_reason
    assert LedgerEntry.objects.filter(event_type="worker.paused").count() == 1
    anomaly = Anomaly.objects.get(code="HIGH_FAILURE_RATE", subject="worker:collector", resolved_at__isnull=True)
    assert anomaly.details["paused"] is True and anomaly.details["consecutive_failures"] == 2
    # Paused: the scheduler passes it by, a scheduled run already queued is skipped and says why,
    # a person's trigger still runs.
    Worker.objects.filter(pk=worker.pk).update(next_due_at=timezone.now() - timedelta(seconds=5))
    assert "collector" not in fire_due()  # (a built-in worker may fall due meanwhile)
    queued = request_run(worker, trigger="schedule")
    assert execute_run(queued.pk)["reason"] == "paused"
    assert staff_client.get("/api/v1/workers/collector/next-runs").json() == {"runs": []}
    body = staff_client.get("/api/v1/workers/collector/").json()
    assert body["paused"] is True and body["next_run_at"] is None and body["consecutive_failures"] == 2

    assert user_client.post("/api/v1/workers/collector/resume").status_code == 403
    resumed = staff_client.post("/api/v1/workers/collector/resume")
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    worker.refresh_from_db()
    assert worker.consecutive_failures == 0 and worker.next_due_at > timezone.now()
    assert LedgerEntry.objects.get(event_type="worker.resumed").actor == "ops"
    assert len(staff_client.get("/api/v1/workers/collector/next-runs").json()["runs"]) == 5


def test_the_console_and_the_admin_show_next_runs_and_resume(make_worker, staff_session, admin_client):
    worker = make_worker(interval_seconds=None, cron="0 9 * * *", timezone="Europe/Paris")
    page = staff_session.get("/workers/collector/").content.decode()
    assert page.count("<time datetime=") >= 5 and "Resume" not in page
    Worker.objects.filter(pk=worker.pk).update(paused=True, paused_reason="3 consecutive failures")
    page = staff_session.get("/workers/collector/").content.decode()
    assert "3 consecutive failures" in page and 'action="/workers/collector/resume"' in page
    assert staff_session.post("/workers/collector/resume").status_code == 302
    assert not Worker.objects.get(pk=worker.pk).paused
    change = admin_client.get(f"/admin/orchestration/worker/{worker.pk}/change/").content.decode()
    assert change.count("<li>") >= 5 and "Europe/Paris" in change and "backfill" in change


def test_backfill_through_the_api_queues_each_due_time_once(make_worker, staff_client, broker_only):
    make_worker(interval_seconds=900)
    start = (timezone.now() - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    body = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    response = staff_client.post("/api/v1/workers/collector/backfill", body, format="json")
    assert response.status_code == 202 and response.json() == {"queued": 5}  # :00 to :00 inclusive
    runs = WorkerRun.objects.filter(worker__name="collector", trigger="backfill")
    assert sorted(r.due_at for r in runs) == [start + timedelta(minutes=15 * i) for i in range(5)]
    again = staff_client.post("/api/v1/workers/collector/backfill", body, format="json")
    assert again.json() == {"queued": 0}
    assert LedgerEntry.objects.filter(event_type="worker.backfilled", actor="ops").count() == 2


def test_backfill_refuses_bad_ranges_naming_the_field(make_worker, staff_client, anon_client):
    make_worker(interval_seconds=300)
    now = timezone.now()
    url = "/api/v1/workers/collector/backfill"
    assert anon_client.post(url, {}, format="json").status_code == 401
    missing = staff_client.post(url, {"start": now.isoformat()}, format="json")
    assert missing.status_code == 400 and "end" in missing.json()
    backwards = {"start": now.isoformat(), "end": (now - timedelta(hours=1)).isoformat()}
    assert "end" in staff_client.post(url, backwards, format="json").json()
    future = {"start": now.isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    assert "future" in str(staff_client.post(url, future, format="json").json()["end"])
    huge = {"start": (now - timedelta(days=30)).isoformat(), "end": now.isoformat()}
    assert "more than 1000" in str(staff_client.post(url, huge, format="json").json()["end"])
    assert not WorkerRun.objects.exists()


def test_schedule_fields_through_the_api_and_their_400s(staff_client):
    new = {
        "name": "paris",
        "category": "reporting",
        "cron": "30 2 * * *",
        "timezone": "Europe/Paris",
        "overlap": "buffer_one",
        "catch_up_seconds": 3600,
        "jitter_seconds": 30,
        "pause_after_failures": 3,
        "output_schema": {"type": "object", "required": ["items_total"]},
        "target": {"type": "http", "method": "POST", "url": "{base_url}/internal/report"},
    }
    created = staff_client.post("/api/v1/workers/", new, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["cadence"] == "cron 30 2 * * * (Europe/Paris)" and body["overlap"] == "buffer_one"
    runs = staff_client.get("/api/v1/workers/paris/next-runs").json()["runs"]
    assert len(runs) == 5 and all(datetime.fromisoformat(r).minute == 30 for r in runs)
    for field, value in (
        ("timezone", "Mars/Olympus"),
        ("overlap", "sometimes"),
        ("jitter_seconds", -1),
        ("output_schema", {"type": "nonsense"}),
    ):
        response = staff_client.patch("/api/v1/workers/paris/", {field: value}, format="json")
        assert response.status_code == 400 and field in response.json(), (field, response.json())
    clock = staff_client.patch(
        "/api/v1/workers/paris/", {"execution_model": "time_triggered", "jitter_seconds": 0}, format="json"
    )
    assert clock.status_code == 200
    interval = staff_client.patch("/api/v1/workers/paris/", {"cron": "", "interval_seconds": 600}, format="json")
    assert interval.status_code == 400 and "clock times" in str(interval.json()["interval_seconds"])


def test_an_output_that_breaks_the_schema_raises_data_corruption(make_worker):
    schema = {
        "type": "object",
        "properties": {"items_total": {"type": "integer", "minimum": 0}},
        "required": ["items_total"],
    }
    worker = make_worker(target=target("ok", items_total=-3), output_schema=schema)
    run = request_run(worker)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.metrics["data_valid"] is False and "items_total" in run.metrics["schema_errors"][0]
    anomaly = Anomaly.objects.get(code="DATA_CORRUPTION", subject="worker:collector")
    assert anomaly.severity == "critical"
    assert run.score.data_quality_score == 0
    good = make_worker("good", target=target("ok", items_total=3), output_schema=schema)
    execute_run(request_run(good).pk)
    assert not Anomaly.objects.filter(code="DATA_CORRUPTION", subject="worker:good").exists()


def test_a_zone_stored_around_validation_shows_no_runs_instead_of_failing(make_worker, staff_client):
    worker = make_worker(interval_seconds=None, cron="*/5 * * * *")
    Worker.objects.filter(pk=worker.pk).update(timezone="Mars/Olympus", next_due_at=timezone.now())
    assert staff_client.get("/api/v1/workers/collector/next-runs").status_code == 200
    assert "collector" not in fire_due(timezone.now() + timedelta(seconds=1))  # logged; the others go on
    assert Worker.objects.get(pk=worker.pk).next_due_at is not None  # left as it was, for a person to fix


def test_backfill_from_the_admin_queues_the_range_and_refuses_a_bad_one(make_worker, admin_client, broker_only):
    worker = make_worker(interval_seconds=1800)
    url = f"/admin/orchestration/worker/{worker.pk}/backfill/"
    assert "Queue the backfill" in admin_client.get(url).content.decode()
    start = (timezone.now() - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    bad = admin_client.post(url, {"start": start.strftime("%Y-%m-%d %H:%M"), "end": "2001-01-01 00:00"})
    assert bad.status_code == 200 and "must not be before start" in bad.content.decode()
    end = start + timedelta(hours=1)
    done = admin_client.post(url, {"start": start.strftime("%Y-%m-%d %H:%M"), "end": end.strftime("%Y-%m-%d %H:%M")})
    assert done.status_code == 302
    assert sorted(WorkerRun.objects.filter(worker=worker, trigger="backfill").values_list("due_at", flat=True)) == [
        start,
        start + timedelta(minutes=30),
        end,
    ]
    assert LedgerEntry.objects.get(event_type="worker.backfilled").actor == "admin"
