from django.apps import AppConfig
from django.db.models.signals import post_migrate


class RoutingConfig(AppConfig):
    """Task routing and learning. Lives inside ``orchestration/`` but is its own app
    (label ``routing``) so its tables and migrations stand apart from the queue's."""

    name = "orchestration.routing"
    label = "routing"
    verbose_name = "Task routing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from orchestration.routing import demo, executor, loop  # noqa: F401  (registries)
        from orchestration.routing.models import SuggestionStateError
        from orchestration.routing.router import NoRoute
        from orchestrator_site.api.errors import register_conflict

        register_conflict(SuggestionStateError)
        from orchestration.routing.improvement import NotApplicable

        register_conflict(NotApplicable)
        register_conflict(NoRoute)
        post_migrate.connect(loop.sync_schedules, sender=self)
        from orchestration.loop.runner import register_tick_hook

        # Ejections that ended are verified by a later pass of the loop runner.
        register_tick_hook(loop.verify_tick)
