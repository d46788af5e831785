"""Request parsers of the API: DRF's own, refusing U+0000 anywhere in the body.

PostgreSQL cannot store a NUL character in text or jsonb ("\\u0000 cannot be converted
to text"), so a NUL inside a JSON field (a job's payload, a context's data) reached
the database and came back as a 500 on the scale profile, while SQLite stored it.
Text fields already refuse NUL (DRF's CharField); checking the parsed body once here
covers every JSON field, key and form value on both databases alike, with a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError


def find_nul(value: Any, where: str = "") -> str | None:
    """Where the first NUL character is (a dotted path into the body), or None."""
    if isinstance(value, str):
        return (where or "body") if "\x00" in value else None
    if isinstance(value, QueryDict):
        value = dict(value.lists())
    if isinstance(value, Mapping):
        for key, item in value.items():
            inner = f"{where}.{key}" if where else str(key)
            if "\x00" in str(key):
                return inner
            found = find_nul(item, inner)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = find_nul(item, f"{where}[{index}]")
            if found:
                return found
    return None


def _refuse_nul(data: Any) -> None:
    where = find_nul(data)
    if where is not None:
        shown = where.replace("\x00", "\\u0000")
        raise ParseError(f"{shown}: NUL characters (\\u0000) are not allowed.")


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        _refuse_nul(data)
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        _refuse_nul(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        _refuse_nul(parsed.data)
        return parsed
