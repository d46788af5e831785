from django.db import migrations

from health.default_rules import DEFAULT_DEDUCTIONS


def create_defaults(apps, schema_editor):
    ScoreDeduction = apps.get_model("orchestration", "ScoreDeduction")
    for spec in DEFAULT_DEDUCTIONS:
        ScoreDeduction.objects.get_or_create(name=spec["name"], defaults={**spec, "builtin": True})


def remove_defaults(apps, schema_editor):
    apps.get_model("orchestration", "ScoreDeduction").objects.filter(
        name__in=[d["name"] for d in DEFAULT_DEDUCTIONS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("health", "0004_service_category"), ("orchestration", "0015_default_score_deductions")]
    operations = [migrations.RunPython(create_defaults, remove_defaults)]
