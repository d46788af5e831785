"""The job table is the queue now: no job waits "dispatched to a broker, not started",
so the partial index that counted them (0006, PostgreSQL only) goes."""

from django.db import migrations

INDEX = "job_waiting_idx"


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON orchestration_job (id DESC) "
            "WHERE status = 'processing' AND started_at IS NULL"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0008_processes"),
    ]

    operations = [migrations.RunPython(drop, create)]
