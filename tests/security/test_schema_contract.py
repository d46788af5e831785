"""The schema is the contract: what it calls an integer, a boolean or an object is
refused (400 naming the parameter) when it is not one, and errors are JSON whatever the
success answer's type. Each of these was accepted, or answered otherwise, before."""

from __future__ import annotations

import pytest

LISTS = ["/api/v1/jobs/", "/api/v1/workers/", "/api/v1/services/", "/api/v1/ledger/", "/api/v1/lanes/"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"limit": "abc"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "true"}, "offset"),
        ({"offset": ["1", "x"]}, "offset"),
    ],
)
def test_non_integer_limit_and_offset_are_refused(path, query, name, user_client, world):
    response = user_client.get(path, query)
    assert response.status_code == 400 and name in response.json(), (path, query, response.content)


def test_integer_limit_and_offset_still_page(user_client, world):
    body = user_client.get("/api/v1/ledger/", {"limit": "2", "offset": "1"}).json()
    assert len(body["results"]) <= 2 and "count" in body
    assert user_client.get("/api/v1/ledger/", {"limit": "5000"}).status_code == 200  # cut to the ceiling


@pytest.mark.parametrize(
    ("path", "name"),
    [("/api/v1/services/", "enabled"), ("/api/v1/workers/", "builtin"), ("/api/v1/anomalies/", "open")],
)
def test_boolean_filters_take_true_or_false_only(path, name, user_client, world):
    assert user_client.get(path, {name: "true"}).status_code == 200
    assert user_client.get(path, {name: "0"}).status_code == 200
    response = user_client.get(path, {name: "maybe"})
    assert response.status_code == 400 and name in response.json()


@pytest.mark.parametrize("path", ["/orchestrator/enable", "/orchestrator/run-once", "/api/v1/suggestions/analyze"])
def test_an_array_body_where_an_object_is_expected_is_refused(path, staff_client, world):
    for body in ([], [1], "x"):
        response = staff_client.post(path, body, format="json")
        assert response.status_code == 400, (path, body, response.content)


def test_an_error_of_an_event_stream_is_json(staff_client, world):
    response = staff_client.get("/api/v1/pipeline/jobs/999999/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 404 and response["Content-Type"].startswith("application/json")
    assert "detail" in response.json()
    job = world.pipeline_job.pk
    bad = staff_client.get(f"/api/v1/pipeline/jobs/{job}/events/", {"after": "²"}, HTTP_ACCEPT="text/event-stream")
    assert bad.status_code == 400 and bad["Content-Type"].startswith("application/json")


def test_the_schema_documents_what_the_views_take(staff_client, world):
    schema = staff_client.get("/api/schema/", {"format": "json"}).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            body = operation.get("requestBody")
            if body:
                assert list(body["content"]) == ["application/json"], (method, path)
    # A worker's runs take no filter of the worker list (they were listed and ignored).
    runs = schema["paths"]["/api/v1/workers/{name}/runs/"]["get"]
    assert {p["name"] for p in runs.get("parameters", []) if p["in"] == "query"} <= {"limit", "offset", "cursor"}
    jobs = schema["paths"]["/api/v1/jobs/"]["get"]["parameters"]
    limit = next(p for p in jobs if p["name"] == "limit")
    assert limit["schema"]["type"] == "integer" and limit["schema"]["minimum"] == 1


def test_actions_filter_by_rule_id_as_the_schema_says(user_client, world):
    assert user_client.get("/api/v1/actions/", {"rule": "999999"}).json()["count"] == 0
    assert user_client.get("/api/v1/actions/", {"rule": str(world.rule.pk)}).status_code == 200
    for bad in ("1.5", "x", str(2**64)):
        response = user_client.get("/api/v1/actions/", {"rule": bad})
        assert response.status_code == 400 and "rule" in response.json()


def test_unknown_kinds_and_action_types_are_named(staff_client, world):
    response = staff_client.post("/api/v1/jobs/", {"kind": "nope"}, format="json")
    assert response.status_code == 400 and "Unknown job kind" in str(response.json()["kind"])
    rule = {
        "name": "r-x",
        "conditions": [{"field": "jobs.pending", "operator": ">", "value": 1}],
        "action_type": "nope",
    }
    response = staff_client.post("/api/v1/rules/", rule, format="json")
    assert response.status_code == 400 and "Unknown action type" in str(response.json()["action_type"])


def test_an_empty_choice_filter_is_refused_naming_it(user_client, world):
    for name in ("status", "priority"):
        response = user_client.get("/api/v1/jobs/", {name: ""})
        assert response.status_code == 400 and name in response.json(), (name, response.content)
    assert user_client.get("/api/v1/jobs/", {"priority": "high"}).status_code == 200
