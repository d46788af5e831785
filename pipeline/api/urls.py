from __future__ import annotations

from django.urls import path

from orchestrator_site.api.routers import OptionalSlashRouter
from pipeline.api.views import InboxView, PipelineDefinitionViewSet, PipelineJobViewSet

app_name = "pipeline-api"

router = OptionalSlashRouter()
router.register("definitions", PipelineDefinitionViewSet, basename="definition")
router.register("jobs", PipelineJobViewSet, basename="job")

urlpatterns = [path("inbox", InboxView.as_view(), name="inbox"), *router.urls]
