from django.urls import path

from orchestration.fleet.api import views
from orchestrator_site.api.routers import OptionalSlashRouter

# Included with the loop's under one namespace, "orchestration-api" (orchestrator_site/urls.py).
router = OptionalSlashRouter()
router.register("workers", views.WorkerViewSet, basename="worker")
router.register("score-reports", views.ScoreReportViewSet, basename="score-report")
router.register("anomalies", views.AnomalyViewSet, basename="anomaly")

urlpatterns = [
    path("workers/status", views.FleetStatusView.as_view(), name="workers-status"),
    *router.urls,
]
