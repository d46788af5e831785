from django.urls import path

from health import views

app_name = "health"

urlpatterns = [
    path("health", views.LivenessView.as_view(), name="liveness"),
    path("health/status", views.HealthStatusView.as_view(), name="status"),
    path("health/trigger", views.HealthTriggerView.as_view(), name="trigger"),
    path("ping/<uuid:key>", views.ping, name="ping"),
    path("ping/<uuid:key>/start", views.ping, {"signal": "start"}, name="ping-start"),
    path("ping/<uuid:key>/fail", views.ping, {"signal": "fail"}, name="ping-fail"),
    path("status/", views.status_index, name="status-pages"),
    path("status/<slug:slug>/", views.status_page, name="status-page"),
    path("demo/health/healthy", views.demo_healthy, name="demo-healthy"),
    path("demo/health/flaky", views.demo_flaky, name="demo-flaky"),
    path("demo/health/slow", views.demo_slow, name="demo-slow"),
]
