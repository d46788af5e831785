from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fast_placeholders(settings):
    settings.PIPELINE_PLACEHOLDER_SECONDS = 0


@pytest.fixture
def run_commits(django_capture_on_commit_callbacks):
    """Run what would happen on commit (dispatch, files), including what that schedules:
    with django-q2 in sync mode the stages execute inline until the job waits or ends."""

    def run(func, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            result = func(*args, **kwargs)
        if hasattr(result, "refresh_from_db"):
            result.refresh_from_db()
        return result

    return run
