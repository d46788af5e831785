"""A worker's field checks live in one place (Worker.check_fields): the API and the
admin refuse the same input with the same message on the same field."""

from __future__ import annotations

import html
import json

import pytest

from orchestration.fleet.models import Worker
from orchestration.fleet.specs import SpecError

BASE = {
    "name": "checked",
    "category": "collection",
    "execution_model": "scheduled",
    "interval_seconds": 300,
    "cron": "",
    "timeout_seconds": 30,
    "depends_on": [],
    "optional_depends_on": [],
    "target": {"type": "python", "path": "tests.workers.targets.ok"},
}
BAD = [
    ("cron", {"interval_seconds": None, "cron": "0 0 30 2 *"}),
    ("timezone", {"interval_seconds": None, "cron": "0 3 * * *", "timezone": "Mars/Olympus_Mons"}),
    ("max_timeout_seconds", {"max_timeout_seconds": 10}),
    ("depends_on", {"depends_on": ["nobody-by-this-name"]}),
]


def _admin_form(values: dict) -> dict:
    form = {k: ("" if v is None else v) for k, v in values.items()}
    for name in ("depends_on", "optional_depends_on", "target"):
        form[name] = json.dumps(values[name])
    return {**form, "description": "", "enabled": "on", "priority": "normal", "rate_factor": 1.0}


@pytest.mark.parametrize(("field", "change"), BAD, ids=[f for f, _ in BAD])
def test_the_api_and_the_admin_refuse_alike(field, change, staff_client, admin_client):
    values = {**BASE, **change}
    with pytest.raises(SpecError) as refused:
        Worker.check_fields(values)
    message = refused.value.errors[field]

    response = staff_client.post("/api/v1/workers/", {k: v for k, v in values.items() if v is not None}, format="json")
    assert response.status_code == 400
    assert message in str(response.json()), response.json()

    page = admin_client.post("/admin/orchestration/worker/add/", _admin_form(values))
    assert page.status_code == 200 and message in html.unescape(page.content.decode())
    assert not Worker.objects.filter(name="checked").exists()


def test_good_fields_pass_and_come_back_normalised(db):
    checked = Worker.check_fields({**BASE, "depends_on": []})
    assert checked == {"target": BASE["target"], "depends_on": [], "optional_depends_on": []}
