from django.urls import path

from orchestration.api import views
from orchestration.api.routers import OptionalSlashRouter

app_name = "orchestration-api"

router = OptionalSlashRouter()
router.register("jobs", views.JobViewSet, basename="job")
router.register("lanes", views.LaneViewSet, basename="lane")
router.register("ledger", views.LedgerViewSet, basename="ledger")
router.register("rules", views.RuleViewSet, basename="rule")
router.register("actions", views.ActionViewSet, basename="action")

urlpatterns = [
    path("", views.ApiRootView.as_view(), name="root"),
    path("healthz", views.HealthzView.as_view(), name="healthz"),
    *router.urls,
]
