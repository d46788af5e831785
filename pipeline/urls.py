from __future__ import annotations

from django.urls import path

from pipeline import views

urlpatterns = [
    path("pipeline/links/<str:token>", views.decision_link, name="pipeline-link"),
]
