"""GET /metrics (Prometheus text format); the view lives in orchestration.console.metrics."""

from django.urls import path

from orchestration.console.metrics import MetricsView

urlpatterns = [
    path("metrics", MetricsView.as_view(), name="metrics"),
]
