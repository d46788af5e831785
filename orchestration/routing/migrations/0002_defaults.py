from django.db import migrations

from orchestration.routing.priority import DEFAULT_TYPE_MULTIPLIERS

RULE = {
    "name": "routing-success-collapse",
    "description": "Routed tasks are failing: success rate below 50% over the last hour",
    "conditions": [
        {"field": "routing.success_rate_last_hour", "op": "<", "value": 0.5},
        {"field": "routing.outcomes_last_hour", "op": ">=", "value": 10},
    ],
    "action_type": "ledger_alert",
    "action_params": {"severity": "error", "event_type": "routing.alert"},
    "priority": 8,
    "cooldown_seconds": 900,
}


def create(apps, schema_editor):
    TypeMultiplier = apps.get_model("routing", "TypeMultiplier")
    Rule = apps.get_model("orchestration", "Rule")
    for task_type, multiplier in DEFAULT_TYPE_MULTIPLIERS.items():
        TypeMultiplier.objects.get_or_create(task_type=task_type, defaults={"multiplier": multiplier})
    Rule.objects.get_or_create(name=RULE["name"], defaults={**RULE, "builtin": True})


def remove(apps, schema_editor):
    apps.get_model("orchestration", "Rule").objects.filter(name=RULE["name"]).delete()


class Migration(migrations.Migration):
    dependencies = [("routing", "0001_initial"), ("orchestration", "0002_default_rules")]
    operations = [migrations.RunPython(create, remove)]
