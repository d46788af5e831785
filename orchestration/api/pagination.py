"""Pagination of every list endpoint (``?limit=&offset=``)."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """DRF's limit/offset with a ceiling on ``limit``.

    Without one, ``?limit=`` passes any integer to the database: past 2**63 SQLite
    refuses it ("datatype mismatch") and PostgreSQL raises "bigint out of range", so a
    typo in a query string became an error answer instead of a page. A larger limit
    is cut to ``max_limit``; the offset needs no ceiling (past the count, DRF answers
    an empty page without querying).
    """

    max_limit = 1000

    def get_limit(self, request) -> int | None:
        # DRF falls back to the default page size for ?limit=abc; the schema says integer,
        # so a client's typo is a 400 naming the parameter, not a silently other page.
        values = request.query_params.getlist(self.limit_query_param)
        if not values:
            return self.default_limit
        return min(_integer(values, self.limit_query_param, minimum=1), self.max_limit)

    def get_offset(self, request) -> int:
        values = request.query_params.getlist(self.offset_query_param)
        if not values:
            return 0
        return _integer(values, self.offset_query_param, minimum=0)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"] = {**parameter["schema"], "minimum": minimum}
        return parameters


def _integer(values: list[str], name: str, *, minimum: int) -> int:
    """The parameter's value (the last, as DRF reads it); every value given must be one."""
    for raw in values:
        if not raw.isascii() or not raw.isdigit() or int(raw) < minimum:
            raise ValidationError({name: [f"Must be an integer of at least {minimum}."]})
    return int(values[-1])
