"""Requests whose URL holds a NUL character are answered before any view runs.

PostgreSQL cannot compare text with U+0000 in it ("PostgreSQL text fields cannot
contain NUL (0x00) bytes"): ``/api/v1/lanes/%00/`` or ``?type=%00`` reached a query
and came back as a 500 on the scale profile (SQLite just found nothing). No name or
id can hold a NUL, so such a path is a 404, and such a query string a 400 — on both
databases, for every view, present and future.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from orchestration.console import copies, views
from orchestration.core.redaction import redact_html


class RefuseNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path:
            return views.page_not_found(request)
        if any("\x00" in key or any("\x00" in v for v in values) for key, values in request.GET.lists()):
            # The site's error answer: JSON for the API, the error page for the console.
            return views._error(request, 400, "Bad request", "The query string holds a NUL character (%00).")
        return self.get_response(request)


class BodyLimitMiddleware:
    """A body larger than ``API_MAX_BODY_BYTES`` is answered 413 from its Content-Length,
    before anything reads it: Django's own limit surfaced as an HTML 400 from deep inside
    the request, and on the API every error body is JSON (API.md "Errors and limits")."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            size = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0  # as Django reads it: no body
        limit = settings.API_MAX_BODY_BYTES
        if size > limit:
            return views._error(
                request, 413, "Request too large", f"The body is {size} bytes; at most {limit} are accepted."
            )
        return self.get_response(request)


class RedactHtmlMiddleware:
    """Every HTML page (console, admin, the browsable API) leaves with its secrets
    masked: URL user-info, secret query values, secret-named JSON keys and headers.
    Forms that edit such values mask them field by field (secret_forms.py) so that
    saving a page back keeps the stored secrets; this is the net under every other
    place a page shows stored text (list columns, read-only fields, error texts)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if getattr(response, "streaming", False) or not content_type.startswith("text/html"):
            return response
        if getattr(response, "masked", False):  # a page rendered once for many, masked then
            return response
        charset = getattr(response, "charset", None) or "utf-8"
        try:
            html = response.content.decode(charset)
        except UnicodeDecodeError:
            return response
        shown = redact_html(html)
        if shown != html:
            response.content = shown.encode(charset)
        return response


class AdminWritesDropCopiesMiddleware:
    """A person's write through the admin drops this process's copies of the console's
    panels (copies.py), as a write through the models does: the admin's bulk actions
    write with queryset updates, which send no model signal, and the dashboard then
    showed, say, a reset breaker still open until its copy was read again."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if request.method == "POST" and response.status_code < 400 and match and "admin" in match.namespaces:
            copies.forget()
        return response
