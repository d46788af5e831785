"""Regressions of what the fuzzing run (tests/e2e/test_api_fuzz.py) found: each test
sends the request that broke the contract and checks the answer with the same
schemathesis checks (no server error, status code documented, body matches the
documented schema)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from orchestration.core.models import Anomaly
from orchestration.fleet.models import Worker
from tests.security.contract import Contract

pytestmark = pytest.mark.django_db


# --- errors are documented ------------------------------------------------------------
def test_every_operation_documents_the_errors_it_can_answer(contract: Contract):
    """Only success answers were documented, so every 400/401/403/404/409/429 the API
    gives (as its contract says it does) was "undocumented"."""
    raw = contract.schema.raw_schema
    public = {"/health", "/api/v1/healthz"}
    for path, item in raw["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            codes = set(operation["responses"])
            label = f"{method.upper()} {path}"
            if path in public:
                assert "401" not in codes, label
                continue
            assert "401" in codes, label
            if method != "get":
                assert {"400", "403", "409", "429"} <= codes, label
            if "{" in path:
                assert "404" in codes, label
            for code in codes - {"200", "201", "202", "204"}:
                content = operation["responses"][code]["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/Error"}, label


def test_unknown_id_is_a_documented_404(contract: Contract, world):
    response = contract.call("POST", "/api/v1/jobs/{id}/cancel/", path_parameters={"id": 987654})
    assert response.status_code == 404


def test_state_conflict_is_a_documented_409_with_a_detail(contract: Contract, world):
    contract.call("POST", "/api/v1/jobs/{id}/cancel/", path_parameters={"id": world.job.pk})
    response = contract.call("POST", "/api/v1/jobs/{id}/cancel/", path_parameters={"id": world.job.pk})
    assert response.status_code == 409 and response.json()["detail"]


# --- pagination ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/v1/rules/", "/api/v1/ledger/", "/api/v1/pipeline/definitions/"])
def test_a_huge_limit_is_cut_not_an_error(contract: Contract, world, path):
    """?limit=40838533362165405974528 reached the database: SQLite answered "datatype
    mismatch" (turned into a 409 "conflicts with existing data"), PostgreSQL
    "bigint out of range" (a 500)."""
    response = contract.call("GET", path, query={"limit": 40838533362165405974528})
    assert response.status_code == 200
    assert response.json()["count"] >= 1 and response.json()["results"]
    assert "limit=1000" in (response.json()["next"] or "limit=1000")


def test_a_huge_offset_is_an_empty_page(contract: Contract, world):
    response = contract.call("GET", "/api/v1/rules/", query={"offset": 2**70, "limit": 2**70})
    assert response.status_code == 200 and response.json()["results"] == []


# --- response shapes ----------------------------------------------------------------------
def test_pipeline_events_are_a_plain_list_or_a_page_as_asked(contract: Contract, world):
    """The schema said a paginated object ({count, results}) where the answer was a
    list; now it documents both: the list without paging parameters, the cursor page
    with them."""
    job = {"id": world.pipeline_job.pk}
    events = contract.call("GET", "/api/v1/pipeline/jobs/{id}/events/", path_parameters=job).json()
    assert isinstance(events, list) and events[0]["type"] == "job_started"
    page = contract.call("GET", "/api/v1/pipeline/jobs/{id}/events/", path_parameters=job, query={"limit": 1}).json()
    assert [e["id"] for e in page["results"]] == [events[0]["id"]] and page["next"]
    parameters = contract.schema.raw_schema["paths"]["/api/v1/pipeline/jobs/{id}/events/"]["get"]["parameters"]
    assert {"cursor", "limit", "offset"} <= {p["name"] for p in parameters}


def test_pipeline_artifacts_are_a_plain_list(contract: Contract, world):
    response = contract.call(
        "GET", "/api/v1/pipeline/jobs/{id}/artifacts/", path_parameters={"id": world.pipeline_job.pk}
    )
    assert isinstance(response.json(), list) and response.json()


def test_service_check_answers_with_its_status_line(contract: Contract, world):
    """Documented as the service record (base_url, …); it answers the status line and
    what the sweep did."""
    response = contract.call("POST", "/api/v1/services/{name}/check/", path_parameters={"name": world.service.name})
    body = response.json()
    assert body["name"] == "billing" and body["health"] == "unhealthy" and "sweep" in body


def test_a_worker_that_never_ran_reads_back(contract: Contract, world):
    """A new worker has last_status "" (not in the documented enum) and no next run
    yet (null where a string was documented)."""
    Worker.objects.create(name="idle", category="reporting", execution_model="on_demand", target=world.worker.target)
    detail = contract.call("GET", "/api/v1/workers/{name}/", path_parameters={"name": "idle"}).json()
    assert detail["last_status"] == "" and detail["next_run_at"] is None
    contract.call("GET", "/api/v1/workers/")
    Worker.objects.filter(name="idle").update(last_status="succeeded", last_run_at=timezone.now())
    assert contract.call("GET", "/api/v1/workers/{name}/", path_parameters={"name": "idle"}).json()["last_status"]


def test_an_anomaly_about_no_single_worker_reads_back(contract: Contract, world):
    """A system anomaly (a queue overflow) has no worker: null, where the schema
    documented a worker name only."""
    Anomaly.objects.create(code="QUEUE_OVERFLOW", severity="high", subject="queue:default")
    rows = contract.call("GET", "/api/v1/anomalies/").json()["results"]
    assert {row["worker"] for row in rows} == {None}
    contract.call("GET", "/api/v1/anomalies/{id}/", path_parameters={"id": rows[0]["id"]})


def test_format_sse_streams_the_events(contract: Contract, world, settings):
    """?format=sse picked the stream renderer, but the view looked only at the Accept
    header and sent the JSON list as one "error" event."""
    settings.PIPELINE_SSE_MAX_SECONDS = 1
    job = {"id": world.pipeline_job.pk}
    response = contract.call("GET", "/api/v1/pipeline/jobs/{id}/events/", path_parameters=job, query={"format": "sse"})
    text = response.content.decode()
    assert response.headers["content-type"][0].startswith("text/event-stream")
    assert "event: job_started" in text and "event: gate_pause" in text
    assert "event: error" not in text and text.rstrip().endswith('"reconnect": true}')


def test_patching_a_definition_keeps_what_it_does_not_name(contract: Contract, world):
    """PATCH {"description": …} was validated as if stages and timeouts were missing:
    400 "stage_timeouts must map each stage to minutes" (the fuzzer's "positive data
    rejected" warning pointed at it)."""
    name = {"name": world.definition.name}
    before = contract.call("GET", "/api/v1/pipeline/definitions/{name}/", path_parameters=name).json()
    response = contract.call(
        "PATCH", "/api/v1/pipeline/definitions/{name}/", path_parameters=name, body={"description": "patched"}
    )
    assert response.status_code == 200, response.content
    after = response.json()
    assert after["description"] == "patched"
    assert {k: after[k] for k in ("stages", "gates", "stage_timeouts")} == {
        k: before[k] for k in ("stages", "gates", "stage_timeouts")
    }
    broken = contract.call(
        "PATCH", "/api/v1/pipeline/definitions/{name}/", path_parameters=name, body={"stage_timeouts": {"outline": 0}}
    )
    assert broken.status_code == 400 and "definition" in broken.json()


def test_since_with_any_utc_offset_is_compared_in_utc(contract: Contract, world):
    """?since=0288-02-23T12:26:55+23:36 (a valid ISO offset) was a 500 on PostgreSQL,
    which refuses offsets past ±15:59; since=0001-01-01T00:00:00+23:00 (before year 1
    in UTC) was a 500 on SQLite."""
    entry = world.entry
    at = entry.created_at.astimezone(dt.timezone(dt.timedelta(hours=23, minutes=36)))
    found = contract.call("GET", "/api/v1/ledger/", query={"since": at.isoformat(), "limit": 1000}).json()
    assert entry.pk in {row["id"] for row in found["results"]}
    later = (at + dt.timedelta(seconds=1)).isoformat()
    after = contract.call("GET", "/api/v1/ledger/", query={"since": later, "event_type": "tests."}).json()
    assert after["count"] == 0
    early = contract.call("GET", "/api/v1/ledger/", query={"since": "0288-02-23T12:26:55.619034+23:36"})
    assert early.status_code == 200 and early.json()["count"] >= 1
    too_early = contract.call("GET", "/api/v1/ledger/", query={"since": "0001-01-01T00:00:00+23:00"})
    assert too_early.status_code == 400 and "since" in too_early.json()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/jobs/", {"kind": "noop", "payload": {"note": "a\x00b"}}),
        ("POST", "/api/v1/routing/contexts/", {"name": "nul", "data": {"k\x00": 1}}),
        ("POST", "/api/v1/lanes/", {"name": "nul", "concurrency_limit": 1, "description": "a\x00b"}),
    ],
)
def test_a_nul_character_in_a_body_is_a_400(contract: Contract, world, method, path, body):
    """PostgreSQL cannot store U+0000 in text or jsonb: a NUL inside a JSON field was a
    500 on the scale profile (and stored on SQLite). Text fields already refused it."""
    response = contract.call(method, path, body=body)
    assert response.status_code == 400, response.content
    assert "NUL" in json.dumps(response.json())


@pytest.mark.parametrize(
    ("path", "case"),
    [
        ("/api/v1/routing/stats", {"query": {"type": "a\x00b"}}),
        ("/api/v1/routing/memory", {"query": {"type": "a\x00b"}}),
        ("/api/v1/jobs/", {"query": {"kind": "a\x00b"}}),
        ("/api/v1/lanes/{name}/", {"path_parameters": {"name": "a\x00b"}}),
        ("/api/v1/routing/contexts/{name}/", {"path_parameters": {"name": "a\x00b"}}),
        ("/api/v1/pipeline/definitions/{name}/", {"path_parameters": {"name": "a\x00b"}}),
    ],
)
def test_a_nul_character_in_the_url_is_a_4xx(contract: Contract, world, path, case):
    response = contract.call("GET", path, **case)
    assert response.status_code in {400, 404}, response.content
