import django.db.models.deletion
from django.db import migrations, models


def link_breakers(apps, schema_editor) -> None:
    """Each worker takes the ``worker:<name>`` breaker it was known by, state and all."""
    Worker = apps.get_model("orchestration", "Worker")
    CircuitBreaker = apps.get_model("health", "CircuitBreaker")
    by_name = dict(CircuitBreaker.objects.filter(name__startswith="worker:").values_list("name", "pk"))
    for worker in Worker.objects.filter(circuit__isnull=True).only("pk", "name"):
        pk = by_name.get(f"worker:{worker.name}")
        if pk is not None:
            Worker.objects.filter(pk=worker.pk).update(circuit_id=pk)


def name_breakers(apps, schema_editor) -> None:
    """Backwards, a worker's breaker is found by name alone: make sure it has the right one."""
    Worker = apps.get_model("orchestration", "Worker")
    CircuitBreaker = apps.get_model("health", "CircuitBreaker")
    for worker in Worker.objects.filter(circuit__isnull=False).only("pk", "name", "circuit_id"):
        CircuitBreaker.objects.filter(pk=worker.circuit_id).exclude(name=f"worker:{worker.name}").update(
            name=f"worker:{worker.name}"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("health", "0004_service_category"),
        ("orchestration", "0012_job_claim_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="worker",
            name="circuit",
            field=models.OneToOneField(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="worker",
                to="health.circuitbreaker",
            ),
        ),
        migrations.RunPython(link_breakers, name_breakers),
    ]
