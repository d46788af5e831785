from django.urls import path

from health import views

app_name = "health"

urlpatterns = [
    path("health", views.LivenessView.as_view(), name="liveness"),
]
