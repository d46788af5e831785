"""A job's events page like the other big lists, and the plain list stays, bounded.

``GET …/events/`` without paging parameters is the list older clients read (at most one
page's maximum, a ``Link`` to the rest); with ``cursor``/``limit``/``offset`` it is the
cursor page. The live stream ignores both."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from django.db import connection
from django.utils import timezone
from drf_spectacular.validation import validate_schema

from orchestrator_site.api.pagination import encode_cursor
from pipeline import transitions as t
from pipeline.api.pagination import EventPagination
from pipeline.choices import EventType
from pipeline.models import PipelineDefinition, PipelineEvent, PipelineJob

pytestmark = pytest.mark.django_db
BASE = "/api/v1/pipeline/jobs"
LINK = re.compile(r'^<([^>]+)>; rel="next"$')


def make_job(slug: str = "paged", status: str = t.NEEDS_APPROVAL) -> PipelineJob:
    definition = PipelineDefinition.default()
    return PipelineJob.objects.create(
        slug=slug, definition=definition, config=definition.snapshot(), stage="script", status=status
    )


def add_events(job: PipelineJob, n: int) -> list[int]:
    """``n`` events whose times tie in fours and run against their ids (a later id may be
    older), so only the (created_at, id) order reads them back in order; the ids in that
    order."""
    base = timezone.now() - timedelta(hours=1)
    PipelineEvent.objects.bulk_create(
        PipelineEvent(
            job=job,
            type=EventType.STAGE_COMPLETED,
            stage="script",
            data={"n": i},
            created_at=base + timedelta(seconds=(i * 7) % (n // 4 or 1)),
        )
        for i in range(n)
    )
    return list(job.events.order_by("created_at", "id").values_list("id", flat=True))


def raw_cursor(payload: str) -> str:
    """A cursor around any JSON text, as a client could forge one."""
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def walk(client, url: str, params: dict | None = None) -> tuple[list[int], list[dict]]:
    ids, pages = [], []
    body = client.get(url, params or {}).json()
    while True:
        pages.append(body)
        ids += [row["id"] for row in body["results"]]
        if not body["next"]:
            return ids, pages
        body = client.get(body["next"]).json()


# --- the plain list ------------------------------------------------------------------------
def test_without_paging_parameters_the_answer_is_the_plain_list_oldest_first(staff_client):
    job = make_job()
    expected = add_events(job, 120)
    add_events(make_job("other"), 12)  # another job's events stay out
    assert expected != sorted(expected)  # ids alone would not give this order
    response = staff_client.get(f"{BASE}/{job.pk}/events/")
    assert response.status_code == 200 and "Link" not in response
    body = response.json()
    assert isinstance(body, list) and [e["id"] for e in body] == expected
    assert {"type", "stage", "data", "created_at"} <= set(body[0])


def test_a_plain_list_longer_than_a_page_stops_at_the_maximum_and_links_to_the_rest(staff_client):
    job = make_job()
    expected = add_events(job, EventPagination.max_limit + 5)
    response = staff_client.get(f"{BASE}/{job.pk}/events/")
    body = response.json()
    assert [e["id"] for e in body] == expected[: EventPagination.max_limit]
    following = LINK.match(response["Link"])
    assert following, response["Link"]
    rest = staff_client.get(following.group(1)).json()
    assert [e["id"] for e in rest["results"]] == expected[EventPagination.max_limit :]
    assert (rest["count"], rest["count_exact"], rest["next"]) == (len(expected), True, None)


# --- the cursor page -----------------------------------------------------------------------
def test_following_next_reads_every_event_once_in_order(staff_client):
    job = make_job()
    expected = add_events(job, 120)
    add_events(make_job("other"), 30)
    ids, pages = walk(staff_client, f"{BASE}/{job.pk}/events/", {"limit": 25})
    assert ids == expected
    assert [len(p["results"]) for p in pages] == [25, 25, 25, 25, 20]
    assert all((p["count"], p["count_exact"]) == (120, True) for p in pages)
    assert pages[0]["previous"] is None and "limit=25" in pages[0]["next"]
    second = staff_client.get(pages[0]["next"]).json()
    back = staff_client.get(second["previous"]).json()
    assert [e["id"] for e in back["results"]] == expected[:25]


def test_a_cursor_alone_or_an_offset_asks_for_the_page(staff_client):
    job = make_job()
    expected = add_events(job, 60)
    first = staff_client.get(f"{BASE}/{job.pk}/events/", {"cursor": ""}).json()
    assert [e["id"] for e in first["results"]] == expected[: EventPagination.page_size]
    shallow = staff_client.get(f"{BASE}/{job.pk}/events/", {"offset": 55}).json()
    assert [e["id"] for e in shallow["results"]] == expected[55:] and shallow["next"] is None


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": encode_cursor(["nope", 1], reverse=False)}, "cursor"),  # not a time
        ({"cursor": encode_cursor([timezone.now(), "x"], reverse=False)}, "cursor"),  # not an id
        ({"cursor": encode_cursor([1], reverse=False)}, "cursor"),  # a key of another order
        ({"cursor": raw_cursor('{"v":["2024-01-01T00:00:00+00:00",1e999],"r":false}')}, "cursor"),  # infinite
        ({"cursor": raw_cursor('{"v":["0001-01-01T00:00:00+05:00",1],"r":true}')}, "cursor"),  # before year 1 in UTC
        ({"limit": "abc"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": ""}, "limit"),
        ({"offset": "-1"}, "offset"),
    ],
)
def test_bad_paging_parameters_are_a_400_naming_them(staff_client, query, name):
    job = make_job()
    add_events(job, 3)
    response = staff_client.get(f"{BASE}/{job.pk}/events/", query)
    assert response.status_code == 400 and name in response.json(), response.content


def test_an_offset_past_ten_thousand_is_refused_naming_the_cursor(staff_client):
    job = make_job()
    response = staff_client.get(f"{BASE}/{job.pk}/events/", {"offset": 10_001})
    assert response.status_code == 400 and "cursor" in response.json()["detail"]


# --- the stream ----------------------------------------------------------------------------
def test_the_stream_sends_every_event_and_refuses_page_parameters(staff_client):
    job = make_job(status=t.CANCELED)
    expected = add_events(job, 120)
    response = staff_client.get(f"{BASE}/{job.pk}/events/", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    body = b"".join(response.streaming_content).decode()
    assert [int(i) for i in re.findall(r"^id: (\d+)$", body, re.M)] == sorted(expected)  # by id, as before
    assert "event: end" in body
    # The stream pages by event id: a cursor or a limit there is a mistake, said as one.
    refused = staff_client.get(f"{BASE}/{job.pk}/events/", {"limit": "", "cursor": "x", "format": "sse"})
    assert refused.status_code == 400
    assert b"cursor" in refused.content and b"limit" in refused.content


# --- the order reads an index ----------------------------------------------------------------
def test_a_page_of_a_jobs_events_reads_the_index_in_order():
    job = make_job()
    queryset = job.events.order_by("created_at", "id")[:51]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # as at a million rows: no scan, no sort
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_sort = off")
        try:
            got = queryset.explain()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET enable_seqscan")
                cursor.execute("RESET enable_sort")
    else:
        got = queryset.explain()
    assert "pipeline_event_job_time_idx" in got, got
    assert not re.search(r"USE TEMP B-TREE FOR ORDER BY|(^|->)\s*Sort\s+\(cost", got, re.M), got


# --- the schema ----------------------------------------------------------------------------
def _resolved(node: Any, components: dict) -> Any:
    """The schema with its references inlined and OpenAPI 3.0's ``nullable`` as JSON
    Schema says it, so jsonschema can check an answer against it."""
    if isinstance(node, list):
        return [_resolved(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _resolved(components[node["$ref"].rsplit("/", 1)[1]], components)
    out = {key: _resolved(value, components) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def test_the_schema_is_valid_and_both_shapes_match_it(staff_client):
    schema = staff_client.get("/api/schema/", {"format": "json"}).json()
    validate_schema(schema)
    operation = schema["paths"]["/api/v1/pipeline/jobs/{id}/events/"]["get"]
    assert {"cursor", "limit", "offset"} <= {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    ok = operation["responses"]["200"]
    assert "Link" in ok["headers"] and set(ok["content"]) == {"application/json", "text/event-stream"}
    documented = _resolved(ok["content"]["application/json"]["schema"], schema["components"]["schemas"])

    job = make_job()
    add_events(job, 3)
    plain = staff_client.get(f"{BASE}/{job.pk}/events/").json()
    page = staff_client.get(f"{BASE}/{job.pk}/events/", {"limit": 2}).json()
    for answer in (plain, page):
        jsonschema.validate(answer, documented)  # oneOf: exactly one shape matches
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"results": "not a list"}, documented)
