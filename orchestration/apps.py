from django.apps import AppConfig
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    verbose_name = "Orchestration"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings

        # Registries fill themselves on import.
        from orchestration.core import checks, signin  # noqa: F401
        from orchestration.core.escalation import escalation_tick
        from orchestration.core.jobs import django_tasks, kinds  # noqa: F401
        from orchestration.core.jobs.queue import JobStateError
        from orchestration.core.logformat import install_record_redaction
        from orchestration.core.models import AnomalyStateError
        from orchestration.core.notifications import sync_settings_channels
        from orchestration.core.process_registry import install_cluster_heartbeat
        from orchestration.core.runnables import load_modules
        from orchestration.core.schedules import sync_builtin_schedules
        from orchestration.core.storedjson import read_invalid_text_replaced
        from orchestration.fleet import registrations  # noqa: F401 - the worker fleet
        from orchestration.loop import actions  # noqa: F401
        from orchestration.loop.cycle import CycleBusy
        from orchestration.loop.models import ActionStateError
        from orchestration.loop.runner import register_tick_hook
        from orchestration.loop.standby import install_cluster_standby
        from orchestrator_site.api.errors import register_conflict

        install_record_redaction()
        # The admin app's ready() imports only ``<app>.admin``; this app's admin modules
        # live in its layers.
        from django.contrib import admin

        from orchestration.core.secret_forms import mask_admin_forms
        from orchestration.fleet import admin as _fleet_admin  # noqa: F401
        from orchestration.loop import admin as _loop_admin  # noqa: F401
        from orchestration.loop import notifications_admin as _notifications_admin  # noqa: F401

        mask_admin_forms(admin.site)
        # What may run by name, the same in every process (web, cluster nodes, loop).
        load_modules(settings.RUNNABLE_MODULES)
        register_conflict(JobStateError, CycleBusy, ActionStateError, AnomalyStateError)
        # Open anomalies nobody acknowledged climb their escalation policy's tiers.
        register_tick_hook(escalation_tick)
        install_cluster_heartbeat()
        install_cluster_standby()
        signin.connect()
        # A write in this process drops the console's shared panels (console/copies.py).
        from orchestration.console import copies

        copies.connect()
        post_migrate.connect(sync_builtin_schedules, sender=self)
        post_migrate.connect(sync_settings_channels, sender=self)
        connection_created.connect(read_invalid_text_replaced, dispatch_uid="orchestration.lenient_text")
