"""Paging of a pipeline job's events.

``GET …/events/`` answered a bare JSON list, oldest first, before it paged; clients that
ask for no page (no ``cursor``, ``limit`` or ``offset``) still get that list. It holds at
most ``max_limit`` events: past them a ``Link: <…>; rel="next"`` header names the cursor
page that follows, so a long job is never cut off silently nor read whole into memory.
With any of those parameters the answer is the cursor page of the other big lists.
"""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from orchestrator_site.api.pagination import KeysetPagination


class EventPagination(KeysetPagination):
    cursor_ordering = ("created_at", "id")  # pipeline_event_job_time_idx

    def paging_asked(self, request) -> bool:
        params = (self.cursor_query_param, self.limit_query_param, self.offset_query_param)
        return any(name in request.query_params for name in params)

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list:
        self.plain = not self.paging_asked(request)
        if not self.plain:
            return super().paginate_queryset(queryset, request, view)
        self.request = request
        self.ordering = self.ordering_for(queryset, view)
        self.limit = self.max_limit
        rows = list(queryset.order_by(*self.ordering)[: self.limit + 1])
        self.has_before, self.has_after = False, len(rows) > self.limit
        self.rows = rows[: self.limit]
        return self.rows

    def get_paginated_response(self, data) -> Response:
        if not self.plain:
            return super().get_paginated_response(data)
        response = Response(data)
        following = self.get_next_link()
        if following:
            # Pages as long as this list: the client reads on at the same pace.
            following = replace_query_param(following, self.limit_query_param, self.limit)
            response["Link"] = f'<{following}>; rel="next"'
        return response

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "oneOf": [
                {**schema, "description": f"Without cursor, limit or offset: at most {self.max_limit} events."},
                super().get_paginated_response_schema(schema),
            ]
        }
