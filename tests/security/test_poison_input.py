"""Poison input gets a clear 4xx in JSON, and nothing is written (API.md "Errors and
limits"): bodies over API_MAX_BODY_BYTES, JSON nested deeper than API_MAX_JSON_DEPTH,
lone surrogates anywhere in a body."""

from __future__ import annotations

import json

import pytest
from django.core.cache import cache

from orchestration.core.models import Job, LedgerEntry
from orchestration.routing.models import TaskContext
from orchestrator_site.api.throttles import WriteRateThrottle

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("broker_only")]


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


def post(client, path: str, text: str):
    return client.post(path, text, content_type="application/json")


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return response.json()


def nothing_written() -> bool:
    return not Job.objects.exists() and not LedgerEntry.objects.exists()


def test_a_body_over_the_limit_is_a_413_in_json(staff_client):
    """10 MB answered Django's HTML 400 page."""
    text = json.dumps({"kind": "noop", "payload": {"blob": "x" * (10 * 1024 * 1024)}})
    body = assert_json_error(post(staff_client, "/api/v1/jobs/", text), 413)
    assert "at most 2621440" in body["detail"]
    assert nothing_written()


def test_the_body_limit_is_a_setting(staff_client, settings):
    settings.API_MAX_BODY_BYTES = 2048
    small = json.dumps({"kind": "noop", "payload": {"blob": "x" * 1000}})
    assert post(staff_client, "/api/v1/jobs/", small).status_code == 201
    large = json.dumps({"kind": "noop", "payload": {"blob": "x" * 3000}})
    assert_json_error(post(staff_client, "/api/v1/jobs/", large), 413)


def test_json_nested_10000_deep_is_a_400_naming_the_field(staff_client):
    """The parser recursed into a 500."""
    text = '{"kind": "noop", "payload": ' + nested(10_000) + "}"
    body = assert_json_error(post(staff_client, "/api/v1/jobs/", text), 400)
    assert list(body) == ["payload"] and "deeper than 64 levels" in body["payload"][0]
    assert body["payload"][0].startswith("payload.a.a.a")
    assert nothing_written()


def test_a_body_that_is_only_deep_nesting_is_a_400(staff_client):
    body = assert_json_error(post(staff_client, "/api/v1/jobs/", "[" * 10_000 + "]" * 10_000), 400)
    assert "deeper than 64 levels" in body["detail"]


def test_a_payload_nested_500_deep_is_refused_and_not_stored(staff_client):
    """It answered 500, was stored and run, and then every read of it answered 500."""
    text = '{"kind": "noop", "payload": ' + nested(500) + "}"
    body = assert_json_error(post(staff_client, "/api/v1/jobs/", text), 400)
    assert "payload" in body
    assert nothing_written()
    assert staff_client.get("/api/v1/jobs/").status_code == 200


def test_the_depth_limit_is_a_setting(staff_client, settings):
    settings.API_MAX_JSON_DEPTH = 5
    assert post(staff_client, "/api/v1/jobs/", '{"kind": "noop", "payload": ' + nested(3) + "}").status_code == 201
    body = assert_json_error(post(staff_client, "/api/v1/jobs/", '{"kind":"noop","payload":' + nested(5) + "}"), 400)
    assert "deeper than 5 levels" in body["payload"][0]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"kind": "noop", "payload": {"note": "a\\ud800b"}}', "payload"),
        ('{"kind": "noop", "payload": {"list": [1, {"x": "\\udfff"}]}}', "payload"),
        ('{"kind": "noop", "payload": {"\\ud800": 1}}', "payload"),
        ('{"kind": "no\\udc00op"}', "kind"),
        ('{"kind": "noop", "reference": "\\ud83d"}', "reference"),
    ],
)
def test_a_lone_surrogate_anywhere_is_a_400_naming_the_field(staff_client, text, field):
    """It answered 500 and, on SQLite, was stored with pages that answered 500."""
    body = assert_json_error(post(staff_client, "/api/v1/jobs/", text), 400)
    assert list(body) == [field] and "lone surrogate" in body[field][0]
    assert nothing_written()


def test_a_surrogate_pair_is_ordinary_text(staff_client):
    response = post(staff_client, "/api/v1/jobs/", '{"kind": "noop", "payload": {"note": "\\ud83d\\ude00"}}')
    assert response.status_code == 201
    assert response.json()["payload"] == {"note": "\U0001f600"}


def test_other_endpoints_refuse_poison_too(staff_client):
    response = post(staff_client, "/api/v1/routing/contexts/", '{"name": "c", "data": {"k": "\\ud800"}}')
    assert "data" in assert_json_error(response, 400)
    response = post(staff_client, "/api/v1/routing/contexts/", '{"name": "c", "data": ' + nested(200) + "}")
    assert "data" in assert_json_error(response, 400)
    assert not TaskContext.objects.exists()


def test_every_error_on_the_api_is_json(staff_client, monkeypatch):
    assert_json_error(staff_client.get("/api/v1/no-such-thing/"), 404)
    assert_json_error(staff_client.get("/api/v1/jobs/987654/"), 404)
    assert_json_error(staff_client.put("/api/v1/jobs/", {}, format="json"), 405)
    assert_json_error(post(staff_client, "/api/v1/jobs/", "{not json"), 400)
    monkeypatch.setattr(WriteRateThrottle, "THROTTLE_RATES", {"writes": "1/min"})
    cache.clear()
    try:
        assert post(staff_client, "/api/v1/jobs/", '{"kind": "noop"}').status_code == 201
        assert "throttled" in assert_json_error(post(staff_client, "/api/v1/jobs/", '{"kind": "noop"}'), 429)["detail"]
    finally:
        cache.clear()


def test_what_django_refuses_before_a_view_is_json_on_the_api(staff_client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    form = "&".join(f"f{i}=1" for i in range(50))
    response = staff_client.post("/api/v1/jobs/", form, content_type="application/x-www-form-urlencoded")
    assert_json_error(response, 400)


@pytest.mark.parametrize(
    ("payload", "message"),
    [(nested(10_000), "deeper than 64 levels"), ('{"note": "\\ud800"}', "lone surrogates")],
)
def test_the_admin_refuses_poison_next_to_the_field(django_user_model, payload, message):
    """The admin's JSON fields parsed 10,000 levels into a 500."""
    from django.test import Client

    root = django_user_model.objects.create_superuser("root-poison", password="pw-root-123")
    browser = Client()
    browser.force_login(root)
    form = {"kind": "noop", "payload": payload, "priority": "normal", "lane": "default", "max_attempts": 3}
    page = browser.post("/admin/orchestration/job/add/", {**form, "backoff": "exponential"})
    assert page.status_code == 200 and message in page.content.decode()
    assert nothing_written()
