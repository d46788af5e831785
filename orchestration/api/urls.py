from django.urls import path

from orchestration.api import views
from orchestration.api.routers import OptionalSlashRouter
from orchestration.workers import api as workers_api

app_name = "orchestration-api"

router = OptionalSlashRouter()
router.register("jobs", views.JobViewSet, basename="job")
router.register("lanes", views.LaneViewSet, basename="lane")
router.register("ledger", views.LedgerViewSet, basename="ledger")
router.register("rules", views.RuleViewSet, basename="rule")
router.register("actions", views.ActionViewSet, basename="action")
router.register("score-deductions", views.ScoreDeductionViewSet, basename="score-deduction")
router.register("processes", views.ProcessViewSet, basename="process")
router.register("workers", workers_api.WorkerViewSet, basename="worker")
router.register("score-reports", workers_api.ScoreReportViewSet, basename="score-report")
router.register("anomalies", workers_api.AnomalyViewSet, basename="anomaly")

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="root"),
    path("healthz", views.HealthzView.as_view(), name="healthz"),
    path("workers/status", workers_api.FleetStatusView.as_view(), name="workers-status"),
    *router.urls,
]
