from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    verbose_name = "Pipelines"
    default_auto_field = "django.db.models.BigAutoField"
