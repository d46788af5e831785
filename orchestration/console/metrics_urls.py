"""GET /metrics (Prometheus text format); the view lives in orchestration.metrics."""

from django.urls import path

from orchestration.metrics import MetricsView

urlpatterns = [
    path("metrics", MetricsView.as_view(), name="metrics"),
]
