from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Pipelines"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registries fill themselves on import: the stage and notification job kinds, the snapshot
        # section, the loop's actions and the demo loader.
        from orchestrator_site.api.errors import register_conflict
        from pipeline import demo, loop, notify, stages  # noqa: F401
        from pipeline.transitions import TransitionError

        register_conflict(TransitionError)
