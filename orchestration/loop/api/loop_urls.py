"""Seed-compatible paths of the control loop, outside /api/v1/."""

from django.urls import path

from orchestration.loop.api import views

app_name = "orchestrator"

urlpatterns = [
    path("orchestrator/snapshot", views.SnapshotView.as_view(), name="snapshot"),
    path("orchestrator/run-once", views.RunOnceView.as_view(), name="run-once"),
    path("orchestrator/enable", views.EnableView.as_view(), name="enable"),
    path("orchestrator/disable", views.DisableView.as_view(), name="disable"),
    path("orchestrator/status", views.StatusView.as_view(), name="status"),
]
