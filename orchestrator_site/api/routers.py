from __future__ import annotations

from rest_framework.routers import DefaultRouter


class OptionalSlashRouter(DefaultRouter):
    """API.md writes paths without a trailing slash for actions (``…/{id}/cancel``) and
    with one for collections (``/api/v1/jobs/``); accept both forms everywhere."""

    include_root_view = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trailing_slash = "/?"
