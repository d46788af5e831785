"""One place that turns domain errors into 4xx answers, so no view returns a 500 for
something the caller did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orchestration.core.dbfaults import close_connections, is_transient
from orchestrator_site.api.renderers import RedactingJSONRenderer


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."
    default_code = "conflict"


_CONFLICTS: tuple[type[Exception], ...] = ()


def register_conflict(*types: type[Exception]) -> None:
    """Domain exceptions that mean "wrong state right now" (answered 409)."""
    global _CONFLICTS
    _CONFLICTS = (*_CONFLICTS, *types)


class DatabaseUnavailable(APIException):
    """The database is restarting, failing over or busy: the request may simply be sent
    again (with its Idempotency-Key, a write cannot happen twice)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable for a moment (restart, failover or busy); retry shortly."
    default_code = "database_unavailable"


RETRY_AFTER_SECONDS = 1


def object_body(request) -> Mapping[str, Any]:
    """The request's body where the operation takes a JSON object (or nothing): an array
    or a bare value is a 400, as the schema says (``[] or {}`` let an empty array pass)."""
    data = request.data
    if not isinstance(data, Mapping):
        raise ValidationError({"non_field_errors": [f"Expected a JSON object, got {type(data).__name__}."]})
    return data


def exception_handler(exc, context):
    request = context.get("request")
    renderer = getattr(request, "accepted_renderer", None)
    if renderer is not None and getattr(renderer, "format", "") == "sse":
        # An error is a JSON body even where the success is an event stream (a 404 sent as
        # text/event-stream broke clients and the schema).

        request.accepted_renderer, request.accepted_media_type = RedactingJSONRenderer(), "application/json"
    if is_transient(exc):
        # Weather, not a bug: a 503 the client may retry, never a 500; the broken
        # connection is not reused by the next request of this thread.
        close_connections()
        response = drf_exception_handler(DatabaseUnavailable(), context)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    if isinstance(exc, _CONFLICTS):
        exc = Conflict(str(exc))
    elif isinstance(exc, DjangoValidationError):
        exc = ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages})
    elif isinstance(exc, IntegrityError):
        return Response({"detail": "That conflicts with existing data."}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)
