"""The Workers section of API.md: auth, CRUD by name, trigger/enable/disable, runs,
score reports, anomalies and the fleet status."""

from __future__ import annotations

from orchestration.core.models import LedgerEntry
from orchestration.fleet.models import Worker, WorkerRun
from orchestration.fleet.runner import execute_run, request_run
from tests.workers.conftest import target

NEW = {
    "name": "youtube",
    "category": "collection",
    "interval_seconds": 1800,
    "timeout_seconds": 300,
    "expected_duration_seconds": 60,
    "freshness_seconds": 3600,
    "target": {"type": "http", "method": "POST", "url": "{base_url}/internal/youtube"},
}


def test_it_requires_login_and_staff_for_writes(anon_client, user_client, make_worker):
    make_worker()
    assert anon_client.get("/api/v1/workers/").status_code == 401
    assert anon_client.get("/api/v1/workers/status").status_code == 401
    assert user_client.get("/api/v1/workers/").status_code == 200
    assert user_client.get("/api/v1/anomalies/").status_code == 200
    assert user_client.post("/api/v1/workers/", NEW, format="json").status_code == 403
    assert user_client.post("/api/v1/workers/collector/trigger").status_code == 403
    assert anon_client.post("/api/v1/workers/collector/trigger").status_code == 401


def test_it_creates_reads_updates_and_deletes_workers_by_name(staff_client):
    response = staff_client.post("/api/v1/workers/", NEW, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "youtube" and body["cadence"] == "every 30 min" and body["next_run_at"]
    assert body["breaker_state"] in ("closed", "unknown")
    assert staff_client.get("/api/v1/workers/youtube/").json()["target"]["method"] == "POST"
    patched = staff_client.patch(
        "/api/v1/workers/youtube/", {"cron": "0 5 * * *", "interval_seconds": None}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["cadence"] == "cron 0 5 * * * (UTC)"
    assert LedgerEntry.objects.filter(event_type="worker.updated", actor="ops").exists()
    assert staff_client.delete("/api/v1/workers/youtube/").status_code == 204
    assert staff_client.get("/api/v1/workers/youtube/").status_code == 404


def test_bad_input_is_a_400_that_says_what_is_wrong(staff_client, make_worker):
    make_worker("a", depends_on=[])
    make_worker("b", depends_on=["a"])
    cases = [
        ({**NEW, "target": {"type": "ftp"}}, "target"),
        ({**NEW, "target": {"type": "http", "url": "nope"}}, "target"),
        ({**NEW, "interval_seconds": 30}, "interval_seconds"),
        ({**NEW, "interval_seconds": None, "cron": "every day"}, "cron"),
        # Valid syntax, but 30 February never comes: its schedule could not be built.
        ({**NEW, "interval_seconds": None, "cron": "0 0 30 2 *"}, "cron"),
        ({**NEW, "depends_on": ["ghost"]}, "depends_on"),
        ({**NEW, "category": "poetry"}, "category"),
        ({**NEW, "name": "status"}, "name"),
        ({**NEW, "interval_seconds": None}, "interval_seconds"),
        # Longer than the cluster lets a task run (Q_TIMEOUT, 4 h by default).
        ({**NEW, "timeout_seconds": 7200}, "timeout_seconds"),
        ({**NEW, "timeout_seconds": 600, "max_timeout_seconds": 14400}, "max_timeout_seconds"),
        ({**NEW, "timeout_seconds": 600, "max_timeout_seconds": 300}, "max_timeout_seconds"),
    ]
    for payload, field in cases:
        response = staff_client.post("/api/v1/workers/", payload, format="json")
        assert response.status_code == 400, payload
        assert field in response.json(), (field, response.json())
        assert not Worker.objects.filter(name=payload["name"]).exists(), payload
    # A cycle through an update is refused with the path in the message.
    response = staff_client.patch("/api/v1/workers/a/", {"depends_on": ["b"]}, format="json")
    assert response.status_code == 400 and "cycle" in str(response.json()["depends_on"])
    assert Worker.objects.get(name="a").depends_on == []
    # An upstream that others need cannot be deleted.
    response = staff_client.delete("/api/v1/workers/a/")
    assert response.status_code == 409 and "Required by b" in response.json()["detail"]


def test_trigger_enable_disable_and_runs(staff_client, make_worker):
    make_worker(target=target("ok", items_total=3))
    response = staff_client.post("/api/v1/workers/collector/trigger")
    assert response.status_code == 202
    run_id = response.json()["run_id"]
    assert WorkerRun.objects.get(pk=run_id).actor == "ops"
    execute_run(run_id)
    runs = staff_client.get("/api/v1/workers/collector/runs/").json()
    assert runs["count"] == 1
    row = runs["results"][0]
    for field in (
        "execution_id",
        "started_at",
        "completed_at",
        "success",
        "duration_ms",
        "metrics",
        "error",
        "skipped_reason",
    ):
        assert field in row
    assert row["success"] is True and row["metrics"] == {"items_total": 3}

    assert staff_client.post("/api/v1/workers/collector/disable").json()["enabled"] is False
    conflict = staff_client.post("/api/v1/workers/collector/trigger")
    assert conflict.status_code == 409 and "disabled" in conflict.json()["detail"]
    assert staff_client.post("/api/v1/workers/collector/enable").json()["enabled"] is True
    assert staff_client.post("/api/v1/workers/ghost/trigger").status_code == 404


def test_score_reports_and_anomalies_are_listed_newest_first_with_filters(staff_client, make_worker):
    good = make_worker("good", target=target("ok", cache_misses=1))
    bad = make_worker("bad", target=target("boom"))
    for worker in (good, bad, good):
        execute_run(request_run(worker).pk)
    reports = staff_client.get("/api/v1/score-reports/?worker=good").json()
    assert reports["count"] == 2
    first = reports["results"][0]
    for field in (
        "worker",
        "execution_id",
        "success",
        "duration_ms",
        "reliability_score",
        "performance_score",
        "data_quality_score",
        "resource_score",
        "overall_score",
        "anomalies",
        "recommendations",
        "metrics",
    ):
        assert field in first
    assert first["worker"] == "good" and "CACHE_MISS" in first["anomalies"]
    assert staff_client.get("/api/v1/score-reports/?worker=bad").json()["results"][0]["overall_score"] < 50

    open_medium = staff_client.get("/api/v1/anomalies/?severity=medium&open=true").json()
    assert [a["code"] for a in open_medium["results"]] == ["CACHE_MISS"]
    row = open_medium["results"][0]
    for field in ("code", "severity", "subject", "details", "detected_at", "resolved_at", "recovery"):
        assert field in row
    assert staff_client.get("/api/v1/anomalies/?open=false").json()["count"] == 0
    assert staff_client.get("/api/v1/anomalies/?severity=bogus").status_code == 400


def test_fleet_status_summarises_every_worker(user_client, make_worker):
    execute_run(request_run(make_worker(target=target("ok"))).pk)
    body = user_client.get("/api/v1/workers/status").json()
    assert body["summary"]["total"] == Worker.objects.count()
    line = body["workers"]["collector"]
    assert line["last_status"] == "succeeded" and line["last_score"] == 100 and line["next_run_at"]
    assert line["breaker_state"] == "closed" and line["runs_last_hour"] == 1
