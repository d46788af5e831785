"""Console pages: who may see them, what they show, and their live JSON."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

PAGES = [
    "/",
    "/services/",
    "/services/api/",
    "/workers/",
    "/workers/collector/",
    "/pipelines/",
    "/pipelines/{job}/",
    "/processes/",
]


def _pending() -> int:
    from orchestration.core.models import Job

    return Job.objects.filter(status="pending").count()


def _url(template: str, world) -> str:
    return template.format(job=world["job"].pk)


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_visitors_are_sent_to_the_login_page(client, world, page):
    response = client.get(_url(page, world))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.mark.parametrize("page", PAGES)
def test_anonymous_live_polls_get_a_401_json(client, world, page):
    response = client.get(_url(page, world) + "?live=1")
    assert response.status_code == 401
    assert "credentials" in response.json()["detail"]


@pytest.mark.parametrize("page", PAGES)
def test_signed_in_viewers_see_every_page(viewer_browser, world, page):
    response = viewer_browser.get(_url(page, world))
    assert response.status_code == 200


def test_the_login_page_signs_people_in_and_back_to_where_they_were(client, plain_user):
    page = client.get("/login/?next=/workers/x/")
    assert page.status_code == 200 and b'name="password"' in page.content
    bad = client.post("/login/", {"username": "viewer", "password": "wrong", "next": "/"})
    assert bad.status_code == 200
    assert b"Please enter a correct username and password" in bad.content
    good = client.post("/login/", {"username": "viewer", "password": "pw-viewer-123", "next": "/"})
    assert good.status_code == 302 and good["Location"] == "/"
    assert client.get("/").status_code == 200
    out = client.post("/logout/")
    assert out.status_code == 302 and client.get("/").status_code == 302


def test_the_dashboard_shows_every_panel(staff_browser, world):
    html = staff_browser.get("/").content.decode()
    for heading in ["System health", "Job queue", "Services", "Workers", "Open anomalies", "Waiting for approval"]:
        assert heading in html
    assert f'data-metric="jobs.pending">{_pending()}<' in html
    assert 'data-service="db"' in html and "circuit open" in html
    assert 'data-worker="collector"' in html
    assert f'data-gate-job="{world["job"].pk}"' in html
    assert 'data-metric="anomalies.high">1<' in html
    assert 'data-metric="cycle_count">2<' in html
    assert '<svg class="chart"' in html  # the health history chart
    assert 'data-action="run-once"' in html and 'data-action="approve"' in html


def test_viewers_see_no_buttons_they_could_not_use(viewer_browser, world):
    html = viewer_browser.get("/").content.decode()
    assert 'data-action="run-once"' not in html
    assert 'data-action="approve"' not in html
    assert "approve gate” permission" in html


def test_approvers_get_gate_buttons_but_no_loop_controls(approver_browser, world):
    html = approver_browser.get("/").content.decode()
    assert 'data-action="approve"' in html
    assert 'data-action="run-once"' not in html


def test_live_json_returns_every_panel_and_the_numbers(staff_browser, world):
    body = staff_browser.get("/?live=1").json()
    assert set(body["panels"]) == {
        "health",
        "queue",
        "services",
        "workers",
        "anomalies",
        "gates",
        "routing",
        "activity",
    }
    assert body["summary"]["jobs"]["pending"] == _pending() >= 3
    assert body["summary"]["gates_waiting"] == 1
    assert body["summary"]["cycle_count"] == 2
    assert f'data-metric="jobs.pending">{_pending()}<' in body["panels"]["queue"]


def test_live_json_follows_the_database(staff_browser, world, settings):
    from datetime import timedelta

    # Not shared between requests (tests/console/test_copies.py covers the copies).
    settings.CONSOLE_COPY_MAX_AGE_SECONDS = 0

    from django.utils import timezone

    from orchestration.core.jobs.queue import enqueue

    before = staff_browser.get("/?live=1").json()["summary"]["jobs"]["pending"]
    enqueue("noop", {}, not_before=timezone.now() + timedelta(hours=1))
    after = staff_browser.get("/?live=1").json()
    assert after["summary"]["jobs"]["pending"] == before + 1
    assert f'data-metric="jobs.pending">{before + 1}<' in after["panels"]["queue"]


def test_the_summary_endpoint_takes_a_session_or_a_token(staff_browser, user_client, anon_client, world):
    assert anon_client.get("/console/summary").status_code == 401
    assert user_client.get("/console/summary").status_code == 200  # Bearer token
    body = staff_browser.get("/console/summary").json()
    assert body["jobs"]["pending"] == _pending() >= 3
    assert body["open_anomalies"]["high"] == 1
    assert body["gates_waiting"] == 1
    assert body["health_status"] in ("healthy", "degraded", "critical")


def test_the_service_page_shows_checks_chart_and_breaker_transitions(staff_browser, world):
    from orchestration.core.models.ledger import record

    record("health.circuit_opened", "Circuit service:db opened after 5 consecutive failures", subject="service:db")
    html = staff_browser.get("/services/db/").content.decode()
    assert "Check history" in html and "HTTP 503" in html
    assert "Circuit service:db opened after 5 consecutive failures" in html
    api = staff_browser.get("/services/api/").content.decode()
    assert 'class="chart-line"' in api and 'class="chart-fail"' in api  # response times and the failed check
    assert '<a href="/services/db/">db</a>' in api  # dependency link


def test_the_worker_page_shows_runs_scores_and_anomalies(staff_browser, world):
    html = staff_browser.get("/workers/collector/").content.decode()
    assert "Score trend" in html and 'class="chart-line"' in html
    assert html.count('class="badge b-run-') >= 2
    assert "HIGH_FAILURE_RATE" in html
    assert "boom" in html


def test_the_pipeline_page_shows_stages_gates_events_and_artifacts(staff_browser, world):
    job = world["job"]
    html = staff_browser.get(f"/pipelines/{job.pk}/").content.decode()
    assert "stage-waiting" in html and "stage-done" in html
    assert "Gate: script" in html
    assert 'data-action="approve"' in html
    assert job.artifacts.exists() and job.artifacts.first().path in html
    assert "Paused at gate" in html


@pytest.mark.parametrize("url", ["/services/nope/", "/workers/nope/", "/pipelines/999999/", "/no/such/page"])
def test_unknown_objects_get_the_sites_404_page(staff_browser, world, url):
    response = staff_browser.get(url)
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html and "Back to the dashboard" in html
    assert "console.css" in html


def test_jobs_on_the_move_are_listed_with_their_progress(staff_browser, world):
    from pipeline import engine

    engine.reject(world["job"], "script", actor="ops", notes="shorter please")
    html = staff_browser.get("/").content.decode()
    assert f'data-pipeline-job="{world["job"].pk}"' in html
    assert "Paused" in html and "2/9" in html


def test_the_health_history_is_a_per_minute_average_with_gaps(db, time_machine):
    from datetime import UTC, datetime, timedelta

    from orchestration.console.data import HISTORY_MINUTES, health_history
    from orchestration.core.models.ledger import record

    start = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    time_machine.move_to(start)
    record("orchestrator.cycle_idle", "", data={"health_score": 100})
    record("orchestrator.cycle_completed", "", data={"health_score": 60})
    record("orchestrator.action_executed", "", data={"health_score": 0})  # not a cycle: ignored
    time_machine.move_to(start + timedelta(minutes=2))
    record("orchestrator.cycle_idle", "", data={"health_score": 45})
    values, since = health_history(start + timedelta(minutes=2, seconds=5))
    assert len(values) == HISTORY_MINUTES
    assert since == datetime(2026, 1, 1, 11, 3, tzinfo=UTC)
    assert values[-3:] == [80.0, None, 45.0]
    assert values[:-3] == [None] * (HISTORY_MINUTES - 3)


def test_the_pipelines_list_filters_by_status(staff_browser, world):
    job = world["job"]
    html = staff_browser.get("/pipelines/?status=needs_approval").content.decode()
    assert f'data-pipeline-job="{job.pk}"' in html
    assert f'data-pipeline-job="{job.pk}"' not in staff_browser.get("/pipelines/?status=completed").content.decode()
    bad = staff_browser.get("/pipelines/?status=sleeping")
    assert bad.status_code == 400 and "There is no status &#x27;sleeping&#x27;" in bad.content.decode()
    live = staff_browser.get("/pipelines/?live=1&status=needs_approval").json()
    assert f'data-pipeline-job="{job.pk}"' in live["panels"]["pipelines"]


def test_the_dashboard_lists_services_out_of_routed_traffic_with_their_reasons(viewer_browser, world):
    from datetime import timedelta

    from django.utils import timezone

    from orchestration.routing.models import OutlierState

    now = timezone.now()
    html = viewer_browser.get("/").content.decode()
    assert 'data-metric="routing.ejections">0<' in html and "Every capable service takes routed traffic." in html
    for _ in range(5):
        OutlierState.observe("api", "render", False, capable=3, what="http://x/process answered 500", now=now)
    OutlierState.observe("db", "render", False, capable=3, retry_after=30, now=now)
    # An older ejection whose time is up: it waits for its probe.
    for _ in range(5):
        OutlierState.observe("api", "report", False, capable=3, now=now - timedelta(minutes=2))
    html = viewer_browser.get("/").content.decode()
    assert 'data-metric="routing.ejections">3<' in html and 'href="/api/v1/routing/ejections"' in html
    api = OutlierState.objects.get(service_name="api", task_type="render")
    row = html.split('data-ejection="api/render"')[1].split("</tr>")[0]
    assert "ejected</span>" in row and "5 consecutive failures (last: http://x/process answered 500)" in row
    assert f"{api.ejected_at:%Y-%m-%d %H:%M:%S}" in row and f"{api.until:%Y-%m-%d %H:%M:%S}" in row
    assert '<td class="num">1</td>' in row
    cooling = html.split('data-ejection="db/render"')[1].split("</tr>")[0]
    assert "cooling down</span>" in cooling and "retry_after" in cooling and '<td class="num">0</td>' in cooling
    probing = html.split('data-ejection="api/report"')[1].split("</tr>")[0]
    assert "waiting for its probe</span>" in probing
