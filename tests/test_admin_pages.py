"""Every admin page a person can open renders: changelists (with a row), change and add
forms, for every registered model of every app."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.urls import reverse

pytestmark = pytest.mark.django_db

PROJECT_APPS = {"orchestration", "routing", "health", "pipeline"}


def project_models():
    return sorted(
        (model for model in admin.site._registry if model._meta.app_label in PROJECT_APPS),
        key=lambda m: m._meta.label,
    )


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@localhost", "pw-root-123")
    client.force_login(user)
    return client


@pytest.mark.parametrize("model", project_models(), ids=lambda m: m._meta.label)
def test_changelist_and_add_pages_render(admin_client, model):
    opts = model._meta
    response = admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    assert response.status_code == 200
    if admin.site._registry[model].has_add_permission(response.wsgi_request):
        assert admin_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add")).status_code == 200


def test_the_index_lists_every_app(admin_client):
    html = admin_client.get("/admin/").content.decode()
    for label in ("Orchestration", "Task routing", "Service health", "Pipelines"):
        assert label in html


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    response = client.get("/admin/orchestration/job/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
