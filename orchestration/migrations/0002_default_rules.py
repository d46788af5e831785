from django.db import migrations

from orchestration.loop.default_rules import DEFAULT_RULES
from orchestration.loop.windows import DEFAULT_WINDOWS


def create_defaults(apps, schema_editor):
    Rule = apps.get_model("orchestration", "Rule")
    ChannelWindow = apps.get_model("orchestration", "ChannelWindow")
    for spec in DEFAULT_RULES:
        Rule.objects.get_or_create(name=spec["name"], defaults={**spec, "builtin": True})
    for channel, (start, end) in DEFAULT_WINDOWS.items():
        ChannelWindow.objects.get_or_create(channel=channel, defaults={"start_hour": start, "end_hour": end})


def remove_defaults(apps, schema_editor):
    apps.get_model("orchestration", "Rule").objects.filter(builtin=True).delete()


class Migration(migrations.Migration):
    dependencies = [("orchestration", "0001_initial")]
    operations = [migrations.RunPython(create_defaults, remove_defaults)]
