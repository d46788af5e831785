"""Request parsers of the API: DRF's own, refusing what no field may hold.

- U+0000 anywhere: PostgreSQL cannot store a NUL in text or jsonb ("\\u0000 cannot be
  converted to text"); SQLite stored it. Text fields already refused it (DRF's CharField).
- A lone surrogate (``"\\ud800"``, valid JSON, not valid Unicode): SQLite stored it and
  every page that showed it answered 500 (it cannot be encoded as UTF-8); PostgreSQL
  refused it with a 500.
- JSON nested deeper than ``API_MAX_JSON_DEPTH``: 10,000 levels made the parser itself
  recurse into a 500, and a few hundred made every later read of the row recurse.

Each is a 400 naming the top-level field (``{"payload": ["payload.a[0]: …"]}``), checked
once here for every JSON field, key and form value, on both databases alike. A body
over ``API_MAX_BODY_BYTES`` never reaches a parser (see orchestration.console.middleware).
"""

from __future__ import annotations

import io
import re
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

from orchestration.core.poison import find_poison

# Tokens that change the JSON nesting, and strings (whose brackets do not count).
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:,]')


def _deep_path(text: str, max_depth: int) -> str:
    """Where a JSON text first nests deeper than ``max_depth``, found without parsing it
    (the parser's recursion gave up on it)."""
    path: list[str | int] = []
    expect_key = False
    for token in _JSON_TOKEN.finditer(text):
        tok = token.group()
        if tok in "{[":
            if len(path) >= max_depth:
                break
            path.append("" if tok == "{" else 0)
            expect_key = tok == "{"
        elif tok in "}]":
            if path:
                path.pop()
        elif tok == ",":
            if path and isinstance(path[-1], int):
                path[-1] += 1
            expect_key = bool(path) and isinstance(path[-1], str)
        elif tok.startswith('"') and expect_key:
            path[-1] = tok[1:-1]
            expect_key = False
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _refuse(where: str, problem: str) -> None:
    shown = where.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
    field = re.split(r"[.\[]", shown, maxsplit=1)[0] if shown else ""
    message = f"{shown}: {problem}" if shown else problem
    if field:
        raise ValidationError({field: [message]})
    raise ParseError(message)


def check(data: Any, *, max_depth: int | None = None) -> None:
    found = find_poison(data, max_depth)
    if found is not None:
        _refuse(*found)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        depth = settings.API_MAX_JSON_DEPTH
        raw = stream.read() if stream is not None else b""
        try:
            data = super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            text = raw.decode("utf-8", "replace")
            _refuse(_deep_path(text, depth), f"JSON nested deeper than {depth} levels is not accepted.")
        check(data, max_depth=depth)
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        check(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        check(parsed.data)
        return parsed
