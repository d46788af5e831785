from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0006_job_waiting_index"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="worker",
            options={
                "ordering": ["name"],
                "permissions": [
                    ("run_code", "Can define code that runs by name (python jobs, worker targets, stage runners)")
                ],
            },
        ),
    ]
