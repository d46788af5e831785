from django.urls import path
from rest_framework.routers import DefaultRouter

from orchestration.api import views

app_name = "orchestration-api"

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
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
