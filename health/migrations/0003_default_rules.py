from django.db import migrations

from health.default_rules import DEFAULT_RULES


def create_defaults(apps, schema_editor):
    Rule = apps.get_model("orchestration", "Rule")
    for spec in DEFAULT_RULES:
        Rule.objects.get_or_create(name=spec["name"], defaults={**spec, "builtin": True})


def remove_defaults(apps, schema_editor):
    apps.get_model("orchestration", "Rule").objects.filter(name__in=[r["name"] for r in DEFAULT_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("health", "0002_services"), ("orchestration", "0002_default_rules")]
    operations = [migrations.RunPython(create_defaults, remove_defaults)]
