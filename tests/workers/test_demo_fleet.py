"""Seed 004's fleet out of the box: the demo loads the 14 workers against this server's
own demo endpoints (a real server on 127.0.0.1), and their runs produce score reports
and anomalies with no outside system."""

from __future__ import annotations

import pytest

from orchestration.core.models import Anomaly
from orchestration.fleet.demo import WorkersDemo
from orchestration.fleet.demo_targets import demo_metrics
from orchestration.fleet.models import ScoreReport, Worker, WorkerRun
from orchestration.fleet.runner import execute_run, request_run


def test_the_demo_metrics_vary_by_run_and_carry_what_the_rules_read():
    assert (
        demo_metrics("youtube-trending", 0)[1]["quota_remaining_pct"]
        < 20
        < demo_metrics("youtube-trending", 1)[1]["quota_remaining_pct"]
    )
    assert demo_metrics("twitch-streams", 0)[1]["items_failed"] == 1
    assert demo_metrics("clip-radar", 0)[1]["cache_misses"] == 3
    assert demo_metrics("analytics-flush", 0)[0] == 503 and demo_metrics("analytics-flush", 1)[0] == 200
    assert demo_metrics("generation", 0)[0] == 202
    assert demo_metrics("nobody", 0) == (404, {})


@pytest.mark.django_db(transaction=True)
def test_the_demo_runs_seed_004s_fleet_against_this_server(live_server, settings, broker_only, client):
    settings.FLEET_DEMO_BASE_URL = live_server.url
    assert client.post("/demo/workers/playbook").status_code == 404  # closed until the demo has that worker
    demo = WorkersDemo()
    assert "14 demo workers" in demo.load()
    fleet = {w.name: w for w in Worker.objects.filter(name__startswith="demo-")}
    assert len(fleet) == 14
    assert fleet["demo-clip-radar"].interval_seconds == 300 and fleet["demo-clip-radar"].timeout_seconds == 240
    assert fleet["demo-creator-intel"].depends_on == ["demo-youtube-trending"]
    assert fleet["demo-intel-aggregation-hourly"].execution_model == "time_triggered"
    assert fleet["demo-generation"].category == "generation" and fleet["demo-generation"].next_due_at is None
    assert all(w.target["url"].startswith(f"{live_server.url}/demo/workers/") for w in fleet.values())
    assert WorkerRun.objects.filter(worker__name__startswith="demo-", status="queued").count() == 14

    # What the cluster would do: run what is queued, three rounds.
    for round_ in range(3):
        if round_:
            for worker in fleet.values():
                request_run(worker, actor="demo")
        for run_id in WorkerRun.objects.filter(status="queued").order_by("id").values_list("pk", flat=True):
            execute_run(run_id)
    succeeded = WorkerRun.objects.filter(worker__name__startswith="demo-", status="succeeded")
    assert succeeded.count() >= 20
    assert ScoreReport.objects.filter(worker__name__startswith="demo-").count() >= 20
    codes = set(Anomaly.objects.filter(subject__startswith="worker:demo-").values_list("code", flat=True))
    assert {"API_QUOTA_LOW", "PARTIAL_SUCCESS", "CACHE_MISS", "DATA_CORRUPTION"} <= codes, codes
    assert WorkerRun.objects.filter(worker__name="demo-analytics-flush", status="failed").exists()

    assert demo.load() == "already loaded"
    assert demo.remove() > 0
    assert not Worker.objects.filter(name__startswith="demo-").exists()
