from django.db import migrations

from orchestration.fleet.default_rules import FLEET_RULES


def create_rules(apps, schema_editor):
    Rule = apps.get_model("orchestration", "Rule")
    for spec in FLEET_RULES:
        Rule.objects.get_or_create(name=spec["name"], defaults={**spec, "builtin": True})


def remove_rules(apps, schema_editor):
    apps.get_model("orchestration", "Rule").objects.filter(name__in=[r["name"] for r in FLEET_RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("orchestration", "0002_default_rules"), ("orchestration", "0004_workers")]
    operations = [migrations.RunPython(create_rules, remove_rules)]
