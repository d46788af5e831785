from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from tests.security.contract import Contract
from tests.security.world import World, build_world


@pytest.fixture(autouse=True)
def _quiet_side_effects(settings):
    settings.PIPELINE_PLACEHOLDER_SECONDS = 0
    settings.FLEET_ALERT_WEBHOOK_URL = ""
    settings.FLEET_ALERT_EMAILS = []


@pytest.fixture
def world(db, django_capture_on_commit_callbacks) -> World:
    with django_capture_on_commit_callbacks(execute=True):
        built = build_world()
    built.pipeline_job.refresh_from_db()
    return built


@pytest.fixture
def staff_token(staff_user) -> str:
    return Token.objects.get_or_create(user=staff_user)[0].key


@pytest.fixture
def contract(staff_token) -> Contract:
    return Contract(staff_token)
