from django.db import migrations

from pipeline.default_rules import PIPELINE_RULES
from pipeline.definitions import DEFAULT_LANE, default_spec


def create_defaults(apps, schema_editor):
    Definition = apps.get_model("pipeline", "PipelineDefinition")
    Lane = apps.get_model("orchestration", "Lane")
    Rule = apps.get_model("orchestration", "Rule")
    spec = default_spec()
    Definition.objects.get_or_create(
        name=spec.name,
        defaults={
            "description": "Seeded default: nine stages, four approval gates",
            "stages": spec.stages,
            "gates": spec.gates,
            "stage_timeouts": spec.stage_timeouts,
            "runners": {},
            "lane": spec.lane,
            "is_default": True,
            "builtin": True,
        },
    )
    # Single lane: at most one pipeline stage processing at a time, across all processes.
    Lane.objects.get_or_create(
        name=DEFAULT_LANE, defaults={"concurrency_limit": 1, "description": "Pipeline stages, one at a time"}
    )
    for rule in PIPELINE_RULES:
        Rule.objects.get_or_create(name=rule["name"], defaults={**rule, "builtin": True})


def remove_defaults(apps, schema_editor):
    apps.get_model("orchestration", "Rule").objects.filter(name__in=[r["name"] for r in PIPELINE_RULES]).delete()
    apps.get_model("pipeline", "PipelineDefinition").objects.filter(builtin=True, jobs__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("pipeline", "0001_initial"),
        ("orchestration", "0002_default_rules"),
    ]
    operations = [migrations.RunPython(create_defaults, remove_defaults)]
