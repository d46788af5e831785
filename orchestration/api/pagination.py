"""Pagination of every list endpoint (``?limit=&offset=``)."""

from __future__ import annotations

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
