"""Definitions: the seeded default, YAML parsing and the load_pipeline command."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from orchestration.core.models import Lane
from orchestration.loop.models import Rule
from pipeline.definitions import DefinitionError, parse
from pipeline.models import PipelineDefinition

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "operator.yaml"


def seed_doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_it_parses_the_example_in_the_seed_format():
    spec = parse(seed_doc())
    assert spec.name == "video"
    assert spec.stages[:3] == ["outline", "research", "script"] and len(spec.stages) == 9
    assert spec.stage_timeouts["assets"] == 180 and spec.gates["assets"]["auto_approve"] is True
    assert [s for s, g in spec.gates.items() if g["required"]] == ["script", "storyboard", "assets", "audio"]


def test_without_stages_the_order_of_stage_timeouts_is_used():
    spec = parse({"pipeline": {"stage_timeouts": {"b": 1, "a": 2}}, "gates": {"a": {"required": True}}})
    assert spec.stages == ["b", "a"] and spec.gates["a"] == {
        "required": True,
        "auto_approve": False,
        "timeout_minutes": 60,
        "input_schema": {},
        "assignees": [],
        "quorum": 1,
        "reject_quorum": 1,
        "allow_self_approval": False,
        "on_timeout": "escalate",
        "escalate_to": [],
    }


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "must hold a mapping"),
        ({"gates": {}}, "'pipeline:' must be a mapping"),
        ({"pipeline": {"stage_timeouts": {}}}, "stage_timeouts:' must map"),
        ({"pipeline": {"stage_timeouts": {"a": -5}}}, "stage_timeouts.a must be a positive"),
        ({"pipeline": {"stage_timeouts": {"a": 1}}, "gates": {"zz": {}}}, "gate for unknown stage 'zz'"),
        ({"pipeline": {"stage_timeouts": {"a": 1}}, "gates": {"a": {"required": "yes"}}}, "gates.a.required"),
        ({"pipeline": {"stage_timeouts": {"a": 1}}, "gates": {"a": {"timeout_minutes": 0}}}, "timeout_minutes"),
        ({"pipeline": {"stage_timeouts": {"a": 1}, "stages": ["a", "b"]}}, "stage 'b' has no entry"),
        ({"pipeline": {"stage_timeouts": {"a": 1}, "runners": {"a": "not a path"}}}, "dotted path"),
        ({"pipeline": {"stage_timeouts": {"A B": 1}}}, "lowercase"),
        ({"pipeline": {"stage_timeouts": {"a": 1}}, "extra": 1}, "unknown top-level"),
    ],
)
def test_it_says_what_is_wrong_with_a_bad_definition(doc, message):
    with pytest.raises(DefinitionError) as caught:
        parse(doc)
    assert message in str(caught.value)


def test_no_stage_may_outlast_the_clusters_task_timeout():
    doc = {"pipeline": {"stage_timeouts": {"a": 30, "b": 240}}}
    assert parse(doc, task_timeout_seconds=4 * 3600 + 1).stage_timeouts == {"a": 30, "b": 240}
    with pytest.raises(DefinitionError) as caught:
        parse(doc, task_timeout_seconds=4 * 3600)
    assert "stage_timeouts.b (240 min) must be shorter than the cluster's task timeout" in str(caught.value)
    assert "stage_timeouts.a" not in str(caught.value)
    # The seeded definition (stages of up to 180 minutes) fits the default of 4 h.
    from django.conf import settings

    assert 180 * 60 < settings.Q_CLUSTER["timeout"]


@pytest.mark.django_db
def test_the_migration_seeds_the_default_definition_lane_and_rules():
    default = PipelineDefinition.default()
    assert default.name == "default" and default.is_default and default.lane == "pipeline"
    assert default.stages == [
        "outline", "research", "script", "storyboard", "assets", "animatics", "audio", "assemble", "acceptance",
    ]  # fmt: skip
    assert [default.stage_timeouts[s] for s in default.stages] == [30, 45, 60, 120, 180, 90, 60, 120, 30]
    assert sorted(default.gates) == ["assets", "audio", "script", "storyboard"]
    assert Lane.objects.get(name="pipeline").concurrency_limit == 1
    rules = dict(Rule.objects.filter(name__startswith="pipeline-").values_list("name", "action_type"))
    assert rules == {
        "pipeline-gate-overdue": "escalate_pipeline_gates",
        "pipeline-stage-overdue": "fail_overdue_pipeline_stages",
    }


@pytest.mark.django_db
def test_load_pipeline_creates_then_updates_a_definition(tmp_path):
    out = StringIO()
    call_command("load_pipeline", str(EXAMPLE), stdout=out)
    assert "Created pipeline definition 'video': 9 stages" in out.getvalue()
    doc = seed_doc()
    doc["pipeline"]["stage_timeouts"]["outline"] = 5
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    out = StringIO()
    call_command("load_pipeline", str(changed), "--default", stdout=out)
    assert "Updated pipeline definition 'video'" in out.getvalue() and "[default]" in out.getvalue()
    video = PipelineDefinition.objects.get(name="video")
    assert video.stage_timeouts["outline"] == 5 and video.is_default
    assert PipelineDefinition.default() == video
    assert not PipelineDefinition.objects.get(name="default").is_default


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("gates: [unclosed", "not valid YAML"),
        ("pipeline:\n  stage_timeouts:\n    a: ten\n", "stage_timeouts.a must be a positive"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_load_pipeline_refuses_a_bad_file_and_writes_nothing(tmp_path, content, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    before = PipelineDefinition.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("load_pipeline", str(bad))
    with pytest.raises(CommandError, match="no such file"):
        call_command("load_pipeline", str(tmp_path / "missing.yaml"))
    assert PipelineDefinition.objects.count() == before
