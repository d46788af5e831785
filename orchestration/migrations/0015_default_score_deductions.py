from django.db import migrations

from orchestration.loop.default_rules import DEFAULT_DEDUCTIONS

# The critical-health rule as seeded before the score was explained: it read the whole
# score, so an outside service's outage could fail queued jobs.
OLD_CRITICAL = [
    {"field": "system.health_score", "op": "<", "value": 50},
    {"field": "jobs.very_old_pending", "op": ">", "value": 0},
]
NEW_CRITICAL = [
    {"field": "system.queue_health_score", "op": "<", "value": 50},
    {"field": "jobs.very_old_pending", "op": ">", "value": 0},
]


def create_defaults(apps, schema_editor):
    ScoreDeduction = apps.get_model("orchestration", "ScoreDeduction")
    for spec in DEFAULT_DEDUCTIONS:
        ScoreDeduction.objects.get_or_create(name=spec["name"], defaults={**spec, "builtin": True})
    # A rule a person edited is theirs: only the untouched seed row moves to the queue's score.
    _swap(apps, OLD_CRITICAL, NEW_CRITICAL, "Critical queue: emergency rebalance fails jobs due over 2 hours ago")


def _swap(apps, old, new, description):
    # Compared in Python: JSON equality in SQL depends on the database's formatting.
    rule = apps.get_model("orchestration", "Rule").objects.filter(name="critical-health").first()
    if rule is not None and rule.conditions == old:
        rule.conditions = new
        rule.description = description
        rule.save(update_fields=["conditions", "description"])


def remove_defaults(apps, schema_editor):
    apps.get_model("orchestration", "ScoreDeduction").objects.filter(
        name__in=[d["name"] for d in DEFAULT_DEDUCTIONS]
    ).delete()
    _swap(
        apps, NEW_CRITICAL, OLD_CRITICAL, "Critical system state: emergency rebalance fails jobs pending over 2 hours"
    )


class Migration(migrations.Migration):
    dependencies = [("orchestration", "0014_job_intent_and_score_deductions")]
    operations = [migrations.RunPython(create_defaults, remove_defaults)]
