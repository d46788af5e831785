from __future__ import annotations

from orchestrator_site.api.routers import OptionalSlashRouter
from pipeline.api.views import PipelineDefinitionViewSet, PipelineJobViewSet

app_name = "pipeline-api"

router = OptionalSlashRouter()
router.register("definitions", PipelineDefinitionViewSet, basename="definition")
router.register("jobs", PipelineJobViewSet, basename="job")

urlpatterns = router.urls
