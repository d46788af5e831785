"""Maintenance windows: the API, the admin, and no alerts while one is on (checks,
breakers and uptime go on), against a real local server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from health.models import HealthCheck, MaintenanceWindow, Service, ServiceAlert
from health.sweep import check_services
from orchestration.core.models import Anomaly, LedgerEntry
from tests.health.servers import Behaviour

pytestmark = pytest.mark.django_db

BASE = "/api/v1/maintenance/"


def make(server, name: str, **fields) -> Service:
    return Service.objects.create(
        name=name, base_url=server.base_url, health_path=f"/{name}", timeout_seconds=1.0, **fields
    )


def window(name: str = "upgrade", minutes: int = 60, **fields) -> MaintenanceWindow:
    now = timezone.now()
    services = fields.pop("services", None)
    w = MaintenanceWindow(
        name=name, starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(minutes=minutes), **fields
    )
    w.save_by(actor="ann", services=services)
    return w


# --- alerts held back, checks go on ---------------------------------------------------
def test_no_alert_under_maintenance_while_checks_and_uptime_go_on(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    db = make(server, "db", tags=["eu"])
    server.behaviour["/db"] = Behaviour.ERROR
    window(tags=["eu"])
    check_services()
    check_services()
    db.refresh_from_db()
    assert db.total_checks == 2 and db.successful_checks == 0 and HealthCheck.objects.filter(service=db).count() == 2
    assert not ServiceAlert.objects.exists() and not Anomaly.objects.filter(code="SERVICE_DOWN").exists()


def test_when_the_window_ends_a_service_still_down_alerts(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    make(server, "db")
    server.behaviour["/db"] = Behaviour.ERROR
    w = window(all_services=True)
    check_services()
    assert not ServiceAlert.objects.exists()
    MaintenanceWindow.objects.filter(pk=w.pk).update(ends_at=timezone.now())
    check_services()
    assert ServiceAlert.objects.filter(service__name="db", resolved_at__isnull=True).count() == 1
    assert Anomaly.objects.filter(code="SERVICE_DOWN", subject="service:db", resolved_at__isnull=True).exists()


def test_an_alert_open_before_the_window_stays_and_still_resolves(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    db = make(server, "db")
    server.behaviour["/db"] = Behaviour.ERROR
    check_services()
    assert ServiceAlert.objects.filter(resolved_at__isnull=True).count() == 1
    window(services=[db])
    server.behaviour["/db"] = Behaviour.OK
    check_services()
    assert ServiceAlert.objects.get().resolved_at is not None
    assert not Anomaly.objects.filter(code="SERVICE_DOWN", resolved_at__isnull=True).exists()


def test_a_window_over_one_service_leaves_the_others_alerting(server, settings):
    settings.HEALTH_ALERT_AFTER_FAILURES = 1
    db = make(server, "db")
    make(server, "web")
    server.behaviour.update({"/db": Behaviour.ERROR, "/web": Behaviour.ERROR})
    window(services=[db])
    check_services()
    assert list(ServiceAlert.objects.values_list("service__name", flat=True)) == ["web"]


# --- the API -------------------------------------------------------------------------------
def test_a_window_is_written_read_and_deleted_with_its_actor(staff_client, server):
    make(server, "db")
    now = timezone.now()
    body = {
        "name": "weekly",
        "starts_at": (now - timedelta(days=1)).isoformat(),
        "recurrence": {"cron": "0 2 * * sun", "duration_minutes": 90},
        "services": ["db"],
        "tags": ["eu"],
    }
    created = staff_client.post(BASE, body, format="json")
    assert created.status_code == 201, created.json()
    data = created.json()
    assert data["recurrence"] == {"cron": "0 2 * * sun", "duration_minutes": 90, "timezone": "UTC"}
    assert data["services"] == ["db"] and data["ends_at"] is None and data["next"]["starts_at"]
    entry = LedgerEntry.objects.get(event_type="maintenance.created")
    assert entry.actor == "ops" and entry.data["services"] == ["db"]
    changed = staff_client.patch(BASE + f"{data['id']}/", {"all_services": True}, format="json")
    assert changed.status_code == 200 and changed.json()["all_services"] is True
    assert staff_client.delete(BASE + f"{data['id']}/").status_code == 204
    assert not MaintenanceWindow.objects.exists()
    assert LedgerEntry.objects.filter(event_type="maintenance.deleted", actor="ops").exists()


def test_active_lists_only_the_windows_on_now(staff_client):
    window("now-on", all_services=True)
    later = MaintenanceWindow(
        name="later", starts_at=timezone.now() + timedelta(days=1), ends_at=timezone.now() + timedelta(days=2)
    )
    later.save_by(actor="ann", services=None)
    listed = staff_client.get(BASE + "active").json()
    assert [w["name"] for w in listed] == ["now-on"] and listed[0]["active"] is True
    assert listed[0]["current"]["ends_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"starts_at": "2026-01-01T00:00:00Z", "all_services": True}, "ends_at"),
        ({"starts_at": "2026-01-02T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z", "all_services": True}, "ends_at"),
        ({"starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-02T00:00:00Z"}, "services"),
        (
            {
                "starts_at": "2026-01-01T00:00:00Z",
                "recurrence": {"cron": "sundays", "duration_minutes": 5},
                "tags": ["a"],
            },
            "recurrence",
        ),
        ({"starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-02T00:00:00Z", "services": ["nope"]}, "services"),
        ({"starts_at": "soon", "ends_at": "2026-01-02T00:00:00Z", "all_services": True}, "starts_at"),
    ],
)
def test_bad_windows_are_a_400_naming_the_field_and_write_nothing(staff_client, body, field):
    response = staff_client.post(BASE, {"name": "bad", **body}, format="json")
    assert response.status_code == 400 and field in response.json(), response.json()
    assert (
        not MaintenanceWindow.objects.exists()
        and not LedgerEntry.objects.filter(event_type__startswith="maintenance").exists()
    )


def test_windows_need_credentials_and_staff_to_write(anon_client, user_client):
    assert anon_client.get(BASE).status_code == 401
    assert user_client.get(BASE).status_code == 200
    body = {"name": "x", "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-02T00:00:00Z", "all_services": True}
    assert user_client.post(BASE, body, format="json").status_code == 403


# --- the admin -------------------------------------------------------------------------
def test_the_admin_saves_through_the_model_with_its_actor(admin_client, server):
    db = make(server, "db")
    now = timezone.now()
    form = {
        "name": "by-admin",
        "description": "",
        "starts_at_0": (now - timedelta(minutes=5)).strftime("%Y-%m-%d"),
        "starts_at_1": (now - timedelta(minutes=5)).strftime("%H:%M:%S"),
        "ends_at_0": (now + timedelta(hours=1)).strftime("%Y-%m-%d"),
        "ends_at_1": (now + timedelta(hours=1)).strftime("%H:%M:%S"),
        "recurrence": "null",
        "services": [db.pk],
        "tags": "[]",
    }
    response = admin_client.post("/admin/health/maintenancewindow/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    saved = MaintenanceWindow.objects.get(name="by-admin")
    assert [s.name for s in saved.services.all()] == ["db"] and saved.created_by == "admin"
    entry = LedgerEntry.objects.get(event_type="maintenance.created")
    assert entry.actor == "admin" and entry.data["services"] == ["db"]
    page = admin_client.get("/admin/health/maintenancewindow/")
    assert b"under maintenance" in page.content


def _weekly_form(**fields) -> dict:
    now = timezone.now()
    form = {
        "name": "weekly",
        "description": "",
        "starts_at_0": now.strftime("%Y-%m-%d"),
        "starts_at_1": now.strftime("%H:%M:%S"),
        "ends_at_0": "",
        "ends_at_1": "",
        "recurrence": "null",
        "weekly_days": ["mon", "fri"],
        "weekly_start": "02:30",
        "weekly_duration_minutes": "90",
        "weekly_timezone": "Europe/Paris",
        "tags": '["db"]',
    }
    form.update(fields)
    return {k: v for k, v in form.items() if v is not None}


def test_the_admin_weekly_fields_write_the_recurrence_with_the_actor(admin_client):
    response = admin_client.post("/admin/health/maintenancewindow/add/", _weekly_form())
    assert response.status_code == 302, response.content.decode()[:3000]
    saved = MaintenanceWindow.objects.get(name="weekly")
    expected = {"cron": "30 2 * * mon,fri", "duration_minutes": 90, "timezone": "Europe/Paris"}
    assert saved.recurrence == expected and saved.ends_at is None
    entry = LedgerEntry.objects.get(event_type="maintenance.created")
    assert entry.actor == "admin" and entry.data["recurrence"] == expected
    # The edit page shows the parts again (and not the cron), and saving them changed keeps one truth.
    page = admin_client.get(f"/admin/health/maintenancewindow/{saved.pk}/change/")
    shown = page.context["adminform"].form.initial
    assert shown["weekly_days"] == ["mon", "fri"] and shown["weekly_duration_minutes"] == 90
    assert shown["weekly_timezone"] == "Europe/Paris" and shown["recurrence"] is None
    assert 'name="weekly_start" value="02:30"' in page.content.decode()
    changed = _weekly_form(weekly_days=["sun"], weekly_start="23:00", weekly_timezone="")
    response = admin_client.post(f"/admin/health/maintenancewindow/{saved.pk}/change/", changed)
    assert response.status_code == 302, response.content.decode()[:3000]
    saved.refresh_from_db()
    assert saved.recurrence == {"cron": "0 23 * * sun", "duration_minutes": 90, "timezone": "UTC"}
    assert LedgerEntry.objects.get(event_type="maintenance.updated").actor == "admin"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"weekly_days": None}, "weekly_days"),
        ({"weekly_start": ""}, "weekly_start"),
        ({"weekly_start": "2 o'clock"}, "weekly_start"),
        ({"weekly_duration_minutes": "0"}, "weekly_duration_minutes"),
        ({"weekly_duration_minutes": ""}, "weekly_duration_minutes"),
        ({"weekly_timezone": "Mars/Olympus"}, "weekly_timezone"),
        ({"weekly_days": ["mon", "someday"]}, "weekly_days"),
        ({"recurrence": '{"cron": "0 1 * * *", "duration_minutes": 5}'}, "recurrence"),
    ],
)
def test_the_admin_weekly_fields_name_the_field_at_fault_and_write_nothing(admin_client, fields, field):
    response = admin_client.post("/admin/health/maintenancewindow/add/", _weekly_form(**fields))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors, response.context["adminform"].form.errors
    assert not MaintenanceWindow.objects.exists() and not LedgerEntry.objects.filter(event_type__startswith="maint")
