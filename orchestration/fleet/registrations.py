"""Everything the fleet plugs into the rest of the orchestrator; imported once from
``OrchestrationConfig.ready()``."""

from __future__ import annotations

from django.apps import apps
from django.db.models.signals import post_delete, post_migrate, post_save
from django_q.signals import pre_enqueue

from health.models import CircuitBreaker
from orchestration.core import shutdown
from orchestration.core.anomalies import register_reaction
from orchestration.core.jobs.queue import job_finished
from orchestration.fleet import adjustments, demo, firing, loop, recovery, runner, sync  # noqa: F401 - registries fill on import
from orchestration.fleet.builtins import ensure_builtin_workers
from orchestration.fleet.models import Worker
from orchestration.fleet.moved_paths import update_moved_paths
from orchestration.loop.runner import register_tick_hook
from orchestrator_site.api.errors import register_conflict


def _drop_circuit(sender, instance: Worker, **kwargs) -> None:
    # A deleted worker's breaker goes with it, so a new worker of that name starts closed.
    if instance.circuit_id:
        CircuitBreaker.objects.filter(pk=instance.circuit_id).delete()


register_conflict(runner.WorkerStateError)
register_reaction(recovery.recover)
shutdown.install_cluster_drain()
register_tick_hook(loop.fleet_sweep_tick)
register_tick_hook(firing.fire_due_tick)
post_save.connect(sync.on_worker_saved, sender=Worker, dispatch_uid="fleet-schedule-save")
post_delete.connect(sync.on_worker_deleted, sender=Worker, dispatch_uid="fleet-schedule-delete")
post_delete.connect(_drop_circuit, sender=Worker, dispatch_uid="fleet-drop-circuit")
job_finished.connect(runner.on_job_finished, dispatch_uid="fleet-job-finished")
pre_enqueue.connect(runner.record_firing, dispatch_uid="fleet-record-firing")
post_migrate.connect(
    ensure_builtin_workers, sender=apps.get_app_config("orchestration"), dispatch_uid="fleet-builtin-workers"
)
post_migrate.connect(update_moved_paths, sender=apps.get_app_config("orchestration"), dispatch_uid="fleet-moved-paths")
