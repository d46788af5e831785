from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save


def _drop_breaker(sender, instance, **kwargs) -> None:
    # A deleted service's breaker goes with it, so a new service of that name starts closed.
    if instance.circuit_id:
        from health.models import CircuitBreaker

        CircuitBreaker.objects.filter(pk=instance.circuit_id).delete()


def _resolve_outage(sender, instance, **kwargs) -> None:
    # Its outage anomaly ends with it: no later sweep would see the service to resolve it.
    from health.sweep import SERVICE_DOWN, service_subject
    from orchestration.core.anomalies import resolve

    resolve(SERVICE_DOWN, service_subject(instance.name))


class HealthConfig(AppConfig):
    name = "health"
    verbose_name = "Service health"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registries fill themselves on import: snapshot section, penalty, demo.
        from health import actions, demo, loop, status_copy  # noqa: F401
        from health.models import CircuitBreaker, DependencyError, Service
        from health.tasks import health_tick, retire_schedules
        from orchestration.loop.runner import register_tick_hook
        from orchestrator_site.api.errors import register_conflict

        register_conflict(DependencyError)
        register_tick_hook(health_tick)
        post_migrate.connect(retire_schedules, sender=self)
        post_delete.connect(_drop_breaker, sender=Service, dispatch_uid="health.drop_breaker")
        post_delete.connect(_resolve_outage, sender=Service, dispatch_uid="health.resolve_outage")
        # The shared /health/status body is dropped when this process changes what it shows.
        for model in (Service, CircuitBreaker):
            post_save.connect(
                status_copy.forget, sender=model, dispatch_uid=f"health.status_copy.save.{model.__name__}"
            )
            post_delete.connect(
                status_copy.forget, sender=model, dispatch_uid=f"health.status_copy.delete.{model.__name__}"
            )
        m2m_changed.connect(
            status_copy.forget, sender=Service.depends_on.through, dispatch_uid="health.status_copy.m2m"
        )
