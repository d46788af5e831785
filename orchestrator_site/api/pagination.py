"""Pagination of the list endpoints.

Small lists page by ``?limit=&offset=``. Big lists (jobs, ledger, runs, checks,
anomalies…) page by key: ``next`` and ``previous`` carry a ``cursor`` that names the
last row seen, so a page deep in a million rows costs what the first page costs.
Their ``count`` is exact up to ``EXACT_COUNT_LIMIT`` rows and an estimate above
(``count_exact: false``); ``?offset=`` keeps working for shallow pages and is refused
past ``MAX_OFFSET``, naming the cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections
from django.db.models import Q, QuerySet
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

EXACT_COUNT_LIMIT = 10_000
MAX_OFFSET = 10_000
# Rows read to learn how selective a filter is on SQLite (which keeps no estimates).
SAMPLE_ROWS = 10_000


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


# --- counting without reading every row ---------------------------------------------------
def bounded_count(queryset: QuerySet, limit: int | None = None) -> tuple[int, bool]:
    """``(count, exact)``: the exact count when at most ``limit`` (default
    ``EXACT_COUNT_LIMIT``) rows match, else an estimate. The exact part reads at most
    ``limit + 1`` index entries."""
    limit = EXACT_COUNT_LIMIT if limit is None else limit
    plain = queryset.order_by()
    capped = plain[: limit + 1].count()
    if capped <= limit:
        return capped, True
    return max(estimated_count(plain), limit + 1), False


def estimated_count(queryset: QuerySet) -> int:
    """What the database expects ``queryset`` to match, without counting it.

    PostgreSQL: the planner's row estimate (kept fresh by autovacuum's ANALYZE).
    SQLite keeps no usable estimate: the table's size from the span of its ids, times
    the share of the newest ``SAMPLE_ROWS`` rows that match.
    """
    connection = connections[queryset.db]
    plain = queryset.order_by()
    if connection.vendor == "postgresql":
        return _planner_rows(plain)
    ids = queryset.model._default_manager.using(queryset.db).order_by("pk").values_list("pk", flat=True)
    # Two queries: SQLite answers a lone MIN or MAX from the index, both together by a scan.
    low, high = ids.first(), ids.reverse().first()
    if high is None:
        return 0
    table = high - low + 1
    if not plain.query.where:
        return table
    sample = min(SAMPLE_ROWS, table)
    return round(table * _sqlite_newest_matching(plain, high - sample) / sample)


def _sqlite_newest_matching(plain: QuerySet, after_pk: int) -> int:
    """How many rows past ``after_pk`` match ``plain``'s filter: the rows are walked by
    id (CROSS JOIN fixes SQLite's join order), the filter checked on each, so an index
    on the filter's column cannot turn the sample into a scan of every match."""
    query = plain.query
    if len(query.alias_map) > 1:  # a filter across a join: let the planner choose
        return plain.filter(pk__gt=after_pk).count()
    connection = connections[plain.db]
    quote = connection.ops.quote_name
    compiler = query.get_compiler(using=plain.db)
    where, params = compiler.compile(query.where)
    table, pk = quote(plain.model._meta.db_table), quote(plain.model._meta.pk.column)
    sql = (
        f"SELECT COUNT(*) FROM (SELECT {pk} AS sample_id FROM {table} WHERE {pk} > %s) AS newest "
        f"CROSS JOIN {table} ON {table}.{pk} = newest.sample_id WHERE {where}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [after_pk, *params])
        return cursor.fetchone()[0]


def _planner_rows(queryset: QuerySet) -> int:
    plan = json.loads(queryset.explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


# --- cursors -------------------------------------------------------------------------------
def encode_cursor(values: Sequence[Any], *, reverse: bool) -> str:
    payload = json.dumps({"v": [_jsonable(v) for v in values], "r": reverse}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _in_utc(value: Any) -> Any:
    """A cursor's time in UTC, as both databases compare it: one before year 1 in UTC
    overflows here (a 400) rather than being a valid key on one database only."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def decode_cursor(text: str) -> tuple[list[Any], bool]:
    """The key values and direction a cursor names; ValueError when it names none."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
        values, reverse = data["v"], data["r"]
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise ValueError("invalid cursor") from exc
    if not isinstance(values, list) or not isinstance(reverse, bool):
        raise ValueError("invalid cursor")
    return values, reverse


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def keyset_filter(ordering: Sequence[str], values: Sequence[Any], *, reverse: bool) -> Q:
    """Rows strictly after ``values`` in ``ordering`` (before them when ``reverse``).

    Written as ``first ≤ v1 AND (first < v1 OR (first = v1 AND second < v2) …)`` for a
    descending first key: the leading bound lets both databases start the index scan
    at the cursor instead of filtering every newer row.
    """
    names = [field.lstrip("-") for field in ordering]
    after: Q | None = None
    for depth in range(len(ordering) - 1, -1, -1):
        descending = ordering[depth].startswith("-") != reverse
        step = Q(**{f"{names[depth]}__{'lt' if descending else 'gt'}": values[depth]})
        if after is not None:
            step |= Q(**{names[depth]: values[depth]}) & after
        after = step
    first_descending = ordering[0].startswith("-") != reverse
    bound = Q(**{f"{names[0]}__{'lte' if first_descending else 'gte'}": values[0]})
    return bound & after


class KeysetPagination(BasePagination):
    """Pages by a cursor over an indexed order, like DRF's ``CursorPagination``, but
    with a key of several fields (``created_at`` then ``id``: ties never skip rows),
    a ``count`` and shallow ``?offset=`` for the clients that page by offset.

    The view names its order in ``cursor_ordering`` (else the paginator's own, else the
    model's ``Meta.ordering``); an index must lead with those fields.
    """

    cursor_ordering: Sequence[str] = ()
    page_size = 50
    max_limit = 1000
    limit_query_param = "limit"
    offset_query_param = "offset"
    cursor_query_param = "cursor"

    def paginate_queryset(self, queryset: QuerySet, request, view=None) -> list | None:
        self.request = request
        self.ordering = self.ordering_for(queryset, view)
        self.limit = self._limit(request)
        self.count, self.count_exact = bounded_count(queryset)
        cursor = request.query_params.get(self.cursor_query_param)
        offset = self._offset(request)
        ordered = queryset.order_by(*self.ordering)
        self.has_before = self.has_after = False
        if cursor:
            try:
                values, reverse = decode_cursor(cursor)
                if len(values) != len(self.ordering):
                    raise ValueError("invalid cursor")
                values = [
                    _in_utc(self._field(queryset, name).to_python(v))
                    for name, v in zip(self.ordering, values, strict=True)
                ]
                chosen = queryset.order_by(*(self._flip(f) for f in self.ordering)) if reverse else ordered
                rows = list(chosen.filter(keyset_filter(self.ordering, values, reverse=reverse))[: self.limit + 1])
            # A key the field refuses ("nope" for a date) raises Django's ValidationError,
            # which answered 400 without naming the cursor; an infinite id or a time past
            # year 1 in UTC overflows (a 500).
            except (ValueError, TypeError, OverflowError, ValidationError, DjangoValidationError) as exc:
                raise ValidationError({"cursor": ["Invalid cursor."]}) from exc
            more = len(rows) > self.limit
            rows = rows[: self.limit]
            if reverse:
                rows.reverse()
                self.has_before, self.has_after = more, True
            else:
                self.has_before, self.has_after = True, more
        else:
            rows = list(ordered[offset : offset + self.limit + 1])
            self.has_after = len(rows) > self.limit
            rows = rows[: self.limit]
            self.has_before = offset > 0
        self.rows = rows
        return rows

    # --- the request ----------------------------------------------------------------------
    def ordering_for(self, queryset: QuerySet, view=None) -> list[str]:
        return list(getattr(view, "cursor_ordering", None) or self.cursor_ordering or queryset.model._meta.ordering)

    def _limit(self, request) -> int:
        # A typo in ?limit= is a 400 naming it (the schema says integer), not another page.
        values = request.query_params.getlist(self.limit_query_param)
        if not values:
            return self.page_size
        return min(_integer(values, self.limit_query_param, minimum=1), self.max_limit)

    def _offset(self, request) -> int:
        values = request.query_params.getlist(self.offset_query_param)
        offset = _integer(values, self.offset_query_param, minimum=0) if values else 0
        if offset > MAX_OFFSET:
            first = remove_query_param(request.build_absolute_uri(), self.offset_query_param)
            raise ValidationError(
                {
                    "detail": f"An offset deeper than {MAX_OFFSET:,} is refused: page with the cursor instead "
                    f"(follow `next`, whose `{self.cursor_query_param}` parameter names the last row seen).",
                    "cursor": first,
                }
            )
        return offset

    @staticmethod
    def _field(queryset: QuerySet, name: str):
        return queryset.model._meta.get_field(name.lstrip("-"))

    @staticmethod
    def _flip(field: str) -> str:
        return field[1:] if field.startswith("-") else f"-{field}"

    # --- the page -------------------------------------------------------------------------
    def _link(self, row, *, reverse: bool) -> str:
        values = [getattr(row, self._field_attname(name)) for name in self.ordering]
        url = remove_query_param(self.request.build_absolute_uri(), self.offset_query_param)
        if self.limit_query_param in self.request.query_params:
            url = replace_query_param(url, self.limit_query_param, self.limit)  # the limit served
        return replace_query_param(url, self.cursor_query_param, encode_cursor(values, reverse=reverse))

    def _field_attname(self, name: str) -> str:
        return self.rows[0]._meta.get_field(name.lstrip("-")).attname

    def get_next_link(self) -> str | None:
        return self._link(self.rows[-1], reverse=False) if self.has_after and self.rows else None

    def get_previous_link(self) -> str | None:
        if not self.has_before:
            return None
        if self.rows:
            return self._link(self.rows[0], reverse=True)
        # Past the end: back to the first page.
        url = remove_query_param(self.request.build_absolute_uri(), self.offset_query_param)
        return remove_query_param(url, self.cursor_query_param)

    def get_paginated_response(self, data) -> Response:
        return Response(
            {
                "count": self.count,
                "count_exact": self.count_exact,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict) -> dict:
        return {
            "type": "object",
            "required": ["count", "results"],
            "properties": {
                "count": {"type": "integer", "example": 123},
                "count_exact": {
                    "type": "boolean",
                    "description": f"false when count is an estimate (> {EXACT_COUNT_LIMIT:,})",
                },
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view) -> list[dict]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "schema": {"type": "string"},
                "description": "The page after (or before) a row: take it from `next` or `previous`.",
            },
            {
                "name": self.limit_query_param,
                "required": False,
                "in": "query",
                "schema": {"type": "integer", "minimum": 1},
                "description": f"Rows per page (at most {self.max_limit}).",
            },
            {
                "name": self.offset_query_param,
                "required": False,
                "in": "query",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
                "description": f"Rows to skip, at most {MAX_OFFSET:,}; deeper pages follow the cursor.",
            },
        ]
