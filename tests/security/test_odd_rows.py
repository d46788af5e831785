"""No stored row can break a page (DESIGN "Faults").

Rows are written straight into the tables, past every validation, as an older version,
a script or another database client could have left them: JSON nested 1,000 deep,
2 MB values, lone surrogates, control characters and (on SQLite, which keeps any bytes)
text that is not UTF-8. Then every API read, console page and admin page (changelist
and change page) must still answer 2xx.
"""

from __future__ import annotations

import json

import pytest
from django.contrib import admin
from django.db import connection, models
from django.test import Client, RequestFactory
from django.urls import reverse
from rest_framework.test import APIClient

from health.models import Service
from orchestration.core.models import Job, LedgerEntry
from orchestration.fleet.models import Worker, WorkerRun
from pipeline.models import PipelineJob
from tests.security.routes import PUBLIC, all_routes, values_for

pytestmark = pytest.mark.django_db

ROUTES = all_routes()
READS = [r for r in ROUTES if r.is_api and "GET" in r.methods and r.name not in PUBLIC]
PAGES = [r for r in ROUTES if not r.is_api and not r.is_admin and r.name not in PUBLIC and r.name != "console:static"]
POISONED = [Job, LedgerEntry, Worker, WorkerRun, PipelineJob, Service]
PROJECT_APPS = {"orchestration", "routing", "health", "pipeline"}

DEPTH = 1000
ODD = "\\ud800 bell\\u0007 esc\\u001b del\\u007f \\udfff"  # JSON escapes
# jsonb refuses lone surrogates (and NUL): no such row can exist on PostgreSQL.
ODD_POSTGRESQL = "bell\\u0007 esc\\u001b del\\u007f"
HUGE = "x" * (2 * 1024 * 1024)


def deep_json(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def poisoned_json(stored: str | None, *, huge: bool) -> str:
    """The stored value (same top-level type) with odd values added."""
    value = json.loads(stored) if stored else {}
    if isinstance(value, list):
        odd = ODD_POSTGRESQL if connection.vendor == "postgresql" else ODD
        return json.dumps([*value, "odd"])[:-6] + f'"{odd}"]'
    if not isinstance(value, dict):
        value = {"was": value}
    rest = json.dumps(value)[1:]
    odd = ODD_POSTGRESQL if connection.vendor == "postgresql" else ODD
    extra = f'"zz_deep": {deep_json(DEPTH - 1)}, "zz_odd": "{odd}"'
    if huge:
        extra += f', "zz_huge": "{HUGE}"'
    return "{" + extra + (", " + rest if rest != "}" else "}")


def poison(model: type[models.Model]) -> None:
    table = connection.ops.quote_name(model._meta.db_table)
    json_fields = [f for f in model._meta.concrete_fields if isinstance(f, models.JSONField)]
    text_fields = [f for f in model._meta.concrete_fields if isinstance(f, models.TextField)]
    with connection.cursor() as cursor:
        for pk in model.objects.values_list("pk", flat=True):
            for index, field in enumerate(json_fields):
                column = connection.ops.quote_name(field.column)
                cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
                stored = cursor.fetchone()[0]
                text = poisoned_json(stored, huge=index == 0)
                cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [text, pk])
            for field in text_fields:
                column = connection.ops.quote_name(field.column)
                odd = " bell\x07 esc\x1b del\x7f tab\t cr\r"
                cursor.execute(f"UPDATE {table} SET {column} = {column} || %s WHERE id = %s", [odd, pk])
                if connection.vendor == "sqlite":  # bytes that are not UTF-8 (a lone surrogate's CESU-8)
                    cursor.execute(
                        f"UPDATE {table} SET {column} = {column} || CAST(X'EDA080FF' AS TEXT) WHERE id = %s", [pk]
                    )


@pytest.fixture
def odd_world(world):
    for model in POISONED:
        assert model.objects.exists(), model
        poison(model)
    return world


def test_the_rows_really_are_odd(odd_world):
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT payload FROM {Job._meta.db_table} WHERE id = %s", [odd_world.job.pk])
        stored = cursor.fetchone()[0]
    assert stored.count('{"a":') == DEPTH - 1 and len(stored) > 2_000_000
    assert connection.vendor == "postgresql" or "\\ud800" in stored.lower()


def test_every_api_read_still_answers(odd_world, staff_client: APIClient):
    failed = {}
    for route in READS:
        path = route.path(values_for(route, odd_world))
        for query in ({}, {"limit": 1000}) if not route.params else ({},):
            response = staff_client.get(path, query)
            if response.status_code != 200:
                failed[f"{path} {query}"] = response.status_code
            else:
                response.content.decode("utf-8")
    assert not failed, failed


def test_every_console_page_still_renders(odd_world, staff_session: Client):
    failed = {}
    for route in PAGES:
        path = route.path(values_for(route, odd_world))
        for query in ({}, {"live": "1"}):
            response = staff_session.get(path, query)
            if response.status_code not in (200, 405):
                failed[f"{path} {query}"] = response.status_code
    assert not failed, failed


def test_every_admin_page_still_renders(odd_world, django_user_model):
    root = django_user_model.objects.create_superuser("root-odd", password="pw-root-123")
    browser = Client()
    browser.force_login(root)
    request = RequestFactory().get("/admin/")
    request.user = root
    failed = {}
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        if opts.app_label not in PROJECT_APPS:
            continue
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        if (status := browser.get(changelist).status_code) != 200:
            failed[changelist] = status
        for pk in model_admin.get_queryset(request).values_list("pk", flat=True)[:2]:
            change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
            if (status := browser.get(change).status_code) != 200:
                failed[change] = status
    assert not failed, failed
