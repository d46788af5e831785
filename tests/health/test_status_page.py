"""Public status pages: only groups marked public, no sign-in, nothing private; daily
uptime bars from the sweep's day counts; incidents and maintenance."""

from __future__ import annotations

from datetime import UTC, date, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from health import status_page as pure
from health.models import MaintenanceWindow, Service, ServiceAlert, ServiceDay, StatusPage
from health.sweep import check_services
from orchestration.core.models import LedgerEntry
from tests.health.servers import Behaviour


def make(server, name: str, **fields) -> Service:
    return Service.objects.create(
        name=name, base_url=server.base_url, health_path=f"/{name}", timeout_seconds=1.0, **fields
    )


def page(slug: str = "public", *, public: bool = True, services=(), tags=()) -> StatusPage:
    p = StatusPage(slug=slug, title=slug.title(), public=public, tags=list(tags))
    p.save_by(actor="ann", services=list(services))
    return p


# --- pure -------------------------------------------------------------------------------
def test_bars_cover_ninety_days_oldest_first_coloured_by_the_share_of_good_checks():
    today = date(2026, 3, 31)
    days = {today: (100, 100), today - timedelta(days=1): (100, 97), today - timedelta(days=2): (10, 1)}
    shown = pure.bars(days, today)
    assert len(shown) == 90 and shown[-1].day == today and shown[0].day == today - timedelta(days=89)
    assert [b.colour for b in shown[-3:]] == ["unhealthy", "degraded", "healthy"]
    assert shown[0].uptime is None and shown[0].colour == "unknown" and "no checks" in shown[0].label
    assert "97.00% of 100 checks" in shown[-2].label
    assert pure.period_uptime(days) == round(100 * 198 / 210, 3)


def test_the_public_state_and_the_headline():
    assert pure.public_state("unhealthy", under_maintenance=True) == "maintenance"
    assert pure.public_state("circuit_open", under_maintenance=False) == "down"
    assert pure.overall_state(["operational", "maintenance"]) == "maintenance"
    assert pure.overall_state(["operational", "down", "maintenance"]) == "down"
    assert pure.overall_state([]) == "no data"


# --- pages ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_public_page_shows_states_bars_and_incidents_without_sign_in(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    api = make(server, "api")
    make(server, "db", tags=["storage"])
    make(server, "secret-internal")
    server.behaviour["/db"] = Behaviour.ERROR
    check_services()
    check_services()
    page("acme", services=[api], tags=["storage"])
    anonymous = Client()
    html = anonymous.get("/status/acme/")
    assert html.status_code == 200
    text = html.content.decode()
    assert "api" in text and "db" in text and "secret-internal" not in text
    assert "<script" not in text and server.base_url not in text  # no JS needed, no address shown
    body = anonymous.get("/status/acme/?format=json").json()
    states = {s["name"]: s["state"] for s in body["services"]}
    assert states == {"api": "operational", "db": "down"} and body["state"] == "down"
    db_row = next(s for s in body["services"] if s["name"] == "db")
    assert db_row["uptime_90d"] == 0.0 and db_row["bars"][-1]["checks"] == 2 and len(db_row["bars"]) == 90
    (incident,) = body["incidents"]
    assert incident["service"] == "db" and incident["resolved_at"] is None
    assert "HTTP 500" not in str(body) and ServiceAlert.objects.get().error_message  # the error stays private


@pytest.mark.django_db
def test_only_pages_marked_public_exist_for_the_public():
    page("open")
    page("internal", public=False)
    anonymous = Client()
    assert anonymous.get("/status/internal/").status_code == 404
    assert anonymous.get("/status/internal/?format=json").status_code == 404
    assert [p["slug"] for p in anonymous.get("/status/?format=json").json()["pages"]] == ["open"]
    assert b"Internal" not in anonymous.get("/status/").content


@pytest.mark.django_db
def test_maintenance_is_shown_on_the_page_and_the_state_says_so(server):
    db = make(server, "db")
    server.behaviour["/db"] = Behaviour.ERROR
    check_services()
    now = timezone.now()
    MaintenanceWindow(name="disk swap", starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1)).save_by(
        actor="ann", services=[db]
    )
    nightly = MaintenanceWindow(
        name="nightly", starts_at=now, recurrence={"cron": "0 3 * * *", "duration_minutes": 30}, all_services=True
    )
    nightly.save_by(actor="ann")
    page("p", services=[db])
    body = Client().get("/status/p/?format=json").json()
    assert body["services"][0]["state"] == "maintenance"
    shown = {m["name"]: m for m in body["maintenance"]}
    assert shown["disk swap"]["active"] is True and shown["disk swap"]["services"] == ["db"]
    assert shown["nightly"]["services"] == ["db"]  # (on or planned, by the time of day)


@pytest.mark.django_db
def test_every_sweep_adds_its_checks_to_the_day(server):
    api = make(server, "api")
    check_services()
    server.behaviour["/api"] = Behaviour.ERROR
    check_services()
    day = ServiceDay.objects.get(service=api)
    assert (day.day, day.checks, day.successes) == (timezone.now().astimezone(UTC).date(), 2, 1)


@pytest.mark.django_db
def test_the_admin_writes_a_page_with_its_actor(admin_client, server):
    api = make(server, "api")
    response = admin_client.post(
        "/admin/health/statuspage/add/",
        {"title": "Acme", "slug": "acme", "description": "", "public": "on", "services": [api.pk], "tags": "[]"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    saved = StatusPage.objects.get(slug="acme")
    assert saved.public and [s.name for s in saved.services.all()] == ["api"]
    assert LedgerEntry.objects.get(event_type="status_page.created").actor == "admin"
