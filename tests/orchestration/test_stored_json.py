"""Redaction and stored JSON at any depth: nothing recurses without bound, so a deep
value (stored before the API refused it, or written by another client) cannot make a
read fail."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from orchestration.core.models import Job
from orchestration.core.redaction import MASK, redact
from orchestration.core.storedjson import CUT, MAX_DEPTH, clean, loads_bounded, too_deep


def nest(depth: int, leaf):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def depth_of(value) -> int:
    depth = 0
    while isinstance(value, dict) and "a" in value:
        value, depth = value["a"], depth + 1
    return depth


def leaf_of(value):
    while isinstance(value, dict) and "a" in value:
        value = value["a"]
    return value


# --- redaction --------------------------------------------------------------------------
def test_redact_masks_secret_headers_at_any_depth_it_shows():
    value = {"x": [{"headers": {"Authorization": "Bearer s", "Accept": "json"}}], "headers": {"X-Api-Key": "k"}}
    assert redact(value) == {
        "x": [{"headers": {"Authorization": MASK, "Accept": "json"}}],
        "headers": {"X-Api-Key": MASK},
    }
    deep = nest(80, {"headers": {"Cookie": "c"}})
    assert leaf_of(redact(deep)) == {"headers": {"Cookie": MASK}}


def test_redact_does_not_recurse_and_cuts_what_is_too_deep():
    """A payload nested 500 deep raised RecursionError in every read of its job."""
    shown = redact(nest(10_000, {"headers": {"Authorization": "secret"}}))
    assert depth_of(shown) == MAX_DEPTH and leaf_of(shown) == CUT
    assert "secret" not in json.dumps(shown)
    assert redact(nest(50, 1)) == nest(50, 1)


# --- reading stored values ----------------------------------------------------------------
def test_clean_cuts_deep_values_and_replaces_lone_surrogates():
    assert clean({"\ud800k": ["\udfff", "ok", "\U0001f600"]}) == {"\ufffdk": ["\ufffd", "ok", "\U0001f600"]}
    cut = clean(nest(5000, 1))
    assert depth_of(cut) == MAX_DEPTH and leaf_of(cut) == CUT
    assert too_deep(nest(MAX_DEPTH + 1, 1)) and not too_deep(nest(MAX_DEPTH - 1, 1)) and not too_deep("x")


@pytest.mark.parametrize("text", ["[]", "{}", "1", '"s"', "-1.5e3", '[1,[2,[3]],{"k":[true,false,null]}]', '{"a":{}}'])
def test_the_bounded_reader_reads_what_json_reads(text):
    assert loads_bounded(text) == json.loads(text)


def test_the_bounded_reader_cuts_and_refuses_what_is_not_json():
    value = loads_bounded('{"a":' * 20_000 + "[1]" + "}" * 20_000)
    assert depth_of(value) == MAX_DEPTH and leaf_of(value) == CUT
    with pytest.raises(ValueError):
        loads_bounded('{"a":')


def _write_raw(job: Job, column: str, text: str) -> None:
    """Straight into the table, as another client would (no validation, no json.dumps)."""
    table = Job._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [text, job.pk])


@pytest.mark.django_db
def test_a_row_nested_too_deep_to_parse_is_read_cut():
    job = Job.objects.create(kind="noop")
    _write_raw(job, "payload", '{"a":' * 999 + "1" + "}" * 999)
    payload = Job.objects.get(pk=job.pk).payload
    assert depth_of(payload) == MAX_DEPTH and leaf_of(payload) == CUT


@pytest.mark.django_db
def test_a_row_with_a_lone_surrogate_is_read_with_a_replacement_character():
    if connection.vendor == "postgresql":
        pytest.skip("jsonb refuses lone surrogates: no such row can exist")
    job = Job.objects.create(kind="noop")
    _write_raw(job, "payload", '{"note": "a\\ud800b", "ok": "\\ud83d\\ude00"}')
    assert Job.objects.get(pk=job.pk).payload == {"note": "a\ufffdb", "ok": "\U0001f600"}


@pytest.mark.django_db
@pytest.mark.usefixtures("broker_only")
def test_a_job_with_a_payload_nested_500_deep_reads_everywhere(staff_client, client):
    """From the API list, its detail and its admin page: all answered 500."""
    job = Job.objects.create(kind="noop", payload=nest(500, {"headers": {"Authorization": "Bearer s"}}))
    listing = staff_client.get("/api/v1/jobs/")
    assert listing.status_code == 200 and listing.json()["results"][0]["id"] == job.pk
    detail = staff_client.get(f"/api/v1/jobs/{job.pk}/")
    assert detail.status_code == 200 and depth_of(detail.json()["payload"]) == MAX_DEPTH
    root = get_user_model().objects.create_superuser("root", "root@localhost", "pw-root-123")
    client.force_login(root)
    assert client.get(f"/admin/orchestration/job/{job.pk}/change/").status_code == 200
    assert client.get("/admin/orchestration/job/").status_code == 200
