"""load_fleet: the example fleet, idempotence, dry-run diff and bad files."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from orchestration.core.models import LedgerEntry
from orchestration.fleet import fleet_file
from orchestration.fleet.models import Worker

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"


def load(path, *args) -> str:
    out = StringIO()
    call_command("load_fleet", str(path), *args, stdout=out)
    return out.getvalue()


def test_the_example_fleet_loads_its_14_workers_idempotently(db):
    before = Worker.objects.count()
    out = load(EXAMPLE, "--dry-run")
    assert "14 to create" in out and Worker.objects.count() == before
    assert "14 to create" in load(EXAMPLE)
    fleet = Worker.objects.filter(builtin=False)
    assert fleet.count() == 14
    assert "0 to create, 0 to update, 14 unchanged" in load(EXAMPLE)
    assert fleet.count() == 14 and LedgerEntry.objects.filter(event_type="worker.fleet_loaded").count() == 1

    w = {x.name: x for x in fleet}
    assert w["youtube-trending"].interval_seconds == 1800 and w["youtube-games"].cron == "0 5 * * *"
    assert w["twitch-streams"].interval_seconds == 900 and w["clip-radar"].interval_seconds == 300
    assert w["clip-radar"].timeout_seconds == 240
    assert w["creator-intel"].depends_on == ["youtube-trending"] and w["creator-intel"].timeout_seconds == 1800
    assert w["thumbnail-intel"].cron == "0 11 * * *"
    assert w["intel-aggregation-hourly"].cron == "5 * * * *" and w["intel-aggregation-daily"].cron == "15 0 * * *"
    assert w["intel-aggregation-daily"].timeout_seconds == 600
    assert sorted(w["playbook"].depends_on) == ["twitch-streams", "youtube-trending"]
    assert w["clip-radar-recap"].cron == "0 6 * * *" and w["clip-radar-recap"].timeout_seconds == 3600
    on_demand = sorted(n for n, x in w.items() if x.execution_model == "on_demand")
    assert on_demand == ["generation", "twitch-packs"]
    assert all(x.target["url"].startswith("{base_url}/") for x in fleet)
    # Every scheduled worker has its next due time; on-demand ones none.
    for name, x in w.items():
        assert (x.next_due_at is None) == (name in on_demand)


def runnable_text(text: str) -> str:
    """The files below name their python target "x.y" for short: a declared runnable here."""
    return text.replace("path: x.y", "path: tests.workers.targets.ok")


def test_changes_show_as_a_diff_and_apply(db, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        runnable_text(
            "workers:\n  - {name: a, category: collection, interval_seconds: 300, target: {type: python, path: x.y}}\n"
        )
    )
    load(path)
    path.write_text(
        runnable_text(
            "workers:\n  - {name: a, category: collection, interval_seconds: 600, target: {type: python, path: x.y}}\n"
        )
    )
    out = load(path, "--dry-run")
    assert "~ update a" in out and "interval_seconds: 300 → 600" in out
    assert Worker.objects.get(name="a").interval_seconds == 300
    load(path)
    assert Worker.objects.get(name="a").interval_seconds == 600


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers: [", "not valid YAML"),
        ("- a\n- b\n", "non-empty 'workers' list"),
        ("workers: []\n", "non-empty"),
        ("workers:\n  - {name: a, category: collection, interval_seconds: 300}\n", "missing target"),
        (
            "workers:\n  - {name: a, category: art, interval_seconds: 300, target: {type: python, path: x.y}}\n",
            "category must be one of",
        ),
        (
            "workers:\n  - {name: a, category: collection, colour: red, interval_seconds: 300, "
            "target: {type: python, path: x.y}}\n",
            "unknown field(s) colour",
        ),
        (
            "workers:\n  - {name: a, category: collection, interval_seconds: 45, target: {type: python, path: x.y}}\n",
            "whole number of minutes",
        ),
        (
            "workers:\n  - {name: a, category: collection, interval_seconds: 300, target: {type: http, url: ftp://x}}\n",
            "http target needs a url",
        ),
        (
            "workers:\n  - {name: a, category: collection, interval_seconds: 300, depends_on: [b], "
            "target: {type: python, path: x.y}}\n  - {name: b, category: collection, interval_seconds: 300, "
            "depends_on: [a], target: {type: python, path: x.y}}\n",
            "dependency cycle",
        ),
        (
            "workers:\n  - {name: a, category: collection, interval_seconds: 300, depends_on: [ghost], "
            "target: {type: python, path: x.y}}\n",
            "unknown worker(s): ghost",
        ),
        (
            "workers:\n  - {name: a, category: collection, interval_seconds: 300, target: {type: python, path: x.y}}\n"
            "  - {name: a, category: collection, interval_seconds: 300, target: {type: python, path: x.y}}\n",
            "declared twice",
        ),
        (
            "workers:\n  - {name: a, category: collection, interval_seconds: 300, timeout_seconds: 3600, "
            "max_timeout_seconds: 20000, target: {type: python, path: x.y}}\n",
            "would cut off",
        ),
        (
            "workers:\n  - {name: a, category: collection, cron: '0 0 30 2 *', target: {type: python, path: x.y}}\n",
            "cron: '0 0 30 2 \\*' never fires",
        ),
    ],
)
def test_bad_files_are_refused_with_a_clear_error_and_nothing_written(db, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(runnable_text(text))
    before = Worker.objects.count()
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(path)
    assert Worker.objects.count() == before


def test_a_missing_file_is_a_clear_error(db, tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        load(tmp_path / "nope.yaml")


def test_a_services_section_is_refused_with_where_services_belong(tmp_path, db):
    path = tmp_path / "fleet.yaml"
    path.write_text(
        runnable_text(
            "services:\n  - {name: api, base_url: 'http://127.0.0.1:9'}\n"
            "workers:\n  - {name: a, category: collection, interval_seconds: 60, target: {type: python, path: x.y}}\n"
        )
    )
    with pytest.raises(
        fleet_file.FleetFileError, match=r"'services:' is not loaded from here: services are registered"
    ):
        fleet_file.load(path)
    assert not Worker.objects.filter(name="a").exists()


def test_schedule_options_load_from_the_file_and_bad_ones_are_refused(tmp_path, db):
    path = tmp_path / "fleet.yaml"
    worker = (
        "workers:\n  - {name: a, category: aggregation, execution_model: time_triggered, cron: '5 * * * *',"
        " timezone: America/New_York, overlap: buffer_all, catch_up_seconds: 7200, pause_after_failures: 3%s,"
        " target: {type: python, path: x.y}}\n"
    )
    path.write_text(runnable_text(worker % ""))
    fleet_file.load(path)
    a = Worker.objects.get(name="a")
    assert (a.timezone, a.overlap, a.catch_up_seconds, a.pause_after_failures) == (
        "America/New_York",
        "buffer_all",
        7200,
        3,
    )
    path.write_text(runnable_text(worker % ", jitter_seconds: 10"))
    with pytest.raises(
        fleet_file.FleetFileError, match="jitter_seconds: a time-triggered worker fires at exact clock times"
    ):
        fleet_file.load(path)
