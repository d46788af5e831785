"""Static files without DEBUG, error pages in the site's style."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_static_files_are_served_when_debug_is_off(client, settings):
    settings.DEBUG = False
    for path, kind in [("/static/console/console.css", "text/css"), ("/static/console/console.js", "javascript")]:
        response = client.get(path)
        assert response.status_code == 200, path
        assert kind in response["Content-Type"]
        assert b"".join(response.streaming_content)
    # the admin's own assets too, so /admin/ looks right under `make run`
    assert client.get("/static/admin/css/base.css").status_code == 200
    missing = client.get("/static/console/nope.css")
    assert missing.status_code == 404


def test_the_dashboard_links_its_local_assets_only(staff_browser):
    html = staff_browser.get("/").content.decode()
    assert '/static/console/console.css"' in html and '/static/console/console.js"' in html
    assert "http://" not in html.split("<body")[0] and "https://" not in html


def test_a_403_page_in_the_sites_style(viewer_browser):
    response = viewer_browser.post("/console/loop/run-once")
    assert response.status_code == 403
    html = response.content.decode()
    assert "Not allowed" in html and "permission to control the loop" in html and "console.css" in html


def test_api_paths_keep_json_errors(staff_client):
    response = staff_client.get("/api/v1/jobs/999999/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_unknown_api_urls_answer_json_not_html(staff_client):
    response = staff_client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["detail"]


def test_a_crash_renders_the_500_page(settings, staff_user, monkeypatch):
    from orchestration.console import data

    def boom(now):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(data, "queue_panel", boom)
    client = Client(raise_request_exception=False)
    client.force_login(staff_user)
    response = client.get("/")
    assert response.status_code == 500
    html = response.content.decode()
    assert "Something went wrong" in html and "console.css" in html
    assert "simulated failure" not in html  # no internals shown to visitors
    live = client.get("/?live=1")
    assert live.status_code == 500 and live["Content-Type"] == "application/json"
