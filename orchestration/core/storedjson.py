"""Stored JSON that no page can choke on.

The API refuses poison (orchestrator_site.api.parsers), but rows also come from older
versions, scripts, the shell or another database client. Three kinds broke every page
that listed them:

- JSON nested deeper than Python's recursion allows (SQLite accepts 1,000 levels):
  reading the row raised RecursionError, and so did every ``json.dumps`` that showed it;
- lone surrogates (``"\\ud800"`` is valid JSON, SQLite keeps it): nothing that encodes
  the page as UTF-8 could send it;
- text that is not JSON at all: Django already reads it back as the string.

``JSONField`` is Django's, reading such values as they can be shown: containers deeper
than ``MAX_DEPTH`` become the ``CUT`` text, lone surrogates become U+FFFD. Values that
are fine (nearly all) are read by Django's own code, with one C-speed look at the text.
Its form field (the admin's) refuses on input what the API refuses. And text columns
on SQLite read bytes that are not UTF-8 with U+FFFD (``read_invalid_text_replaced``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.forms.fields import InvalidJSONInput

from orchestration.core.poison import find_poison

# Deeper than anything the API accepts (API_MAX_JSON_DEPTH is at most 100), so what was
# accepted is always shown whole.
MAX_DEPTH = 100
CUT = f"… (nested deeper than {MAX_DEPTH} levels: not shown)"

_SURROGATE = re.compile("[\ud800-\udfff]")
_TOKEN = re.compile(r'\s*(?:"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null|[\[\]{}:,])')


def _text(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value) if _SURROGATE.search(value) else value


def clean(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """A copy of a JSON value that any page can show: containers at ``max_depth`` and
    below replaced by ``CUT``, lone surrogates by U+FFFD. Iterative: any depth is safe."""
    root: list[Any] = [None]
    # (value, where its copy goes, index or key there, depth)
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while stack:
        item, parent, slot, depth = stack.pop()
        if isinstance(item, str):
            parent[slot] = _text(item)
        elif isinstance(item, Mapping | list | tuple):
            if depth >= max_depth:
                parent[slot] = CUT
            elif isinstance(item, Mapping):
                copy: dict[Any, Any] = {}
                parent[slot] = copy
                for key, child in item.items():
                    key = _text(key) if isinstance(key, str) else key
                    copy[key] = None
                    stack.append((child, copy, key, depth + 1))
            else:
                items: list[Any] = [None] * len(item)
                parent[slot] = items
                stack.extend((child, items, index, depth + 1) for index, child in enumerate(item))
        else:
            parent[slot] = item
    return root[0]


def too_deep(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether a JSON value holds containers at ``max_depth`` or below (iterative)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= max_depth:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def loads_bounded(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` without recursion, for text nested deeper than the parser can
    follow: containers at ``max_depth`` and below are skipped and read as ``CUT``.
    ValueError for text that is not JSON."""
    root: list[Any] = []
    stack: list[Any] = []  # open containers; a dict's pending key rides on a ("key", k) entry
    key: Any = None
    skipping = 0
    pos, end = 0, len(text.rstrip())
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"not JSON at character {pos}")
        pos = match.end()
        tok = match.group().lstrip()
        if skipping:
            if tok in "[{":
                skipping += 1
            elif tok in "]}":
                skipping -= 1
                if not skipping:
                    key = _place(CUT, stack, root, key)
            continue
        if tok in "[{":
            if len(stack) >= max_depth:
                skipping = 1
                continue
            container: Any = [] if tok == "[" else {}
            key = _place(container, stack, root, key)
            stack.append(container)
        elif tok in "]}":
            if not stack:
                raise ValueError("unbalanced brackets")
            stack.pop()
        elif tok in ":,":
            continue
        else:
            value = json.loads(tok)
            if stack and isinstance(stack[-1], dict) and key is None:
                key = value  # a key: its value comes next
            else:
                key = _place(value, stack, root, key)
    if stack or skipping or len(root) != 1:
        raise ValueError("unbalanced brackets")
    return root[0]


def _place(value: Any, stack: list[Any], root: list[Any], key: Any) -> None:
    """Put a value into the open container (under ``key`` in a dict); the pending key
    is used up (None)."""
    if not stack:
        root.append(value)
    elif isinstance(stack[-1], dict):
        stack[-1][key] = value
    else:
        stack[-1].append(value)
    return None


class JSONField(models.JSONField):
    """Django's JSONField, reading any stored value as one a page can show (see the
    module's docstring). Migrations see Django's field: nothing about the column changes."""

    def from_db_value(self, value, expression, connection):
        if not isinstance(value, str):
            return super().from_db_value(value, expression, connection)
        try:
            loaded = super().from_db_value(value, expression, connection)
        except RecursionError:
            try:
                return clean(loads_bounded(value))
            except ValueError:
                return value
        # Django stores non-ASCII as \u escapes, so a lone surrogate comes back from
        # one (or from the text itself); a deep value needs as many brackets. Nearly every
        # value passes these C-speed looks at the text and is returned as Django read it.
        surrogates = "\\ud" in value or "\\uD" in value or _SURROGATE.search(value)
        if surrogates or (value.count("[") + value.count("{") >= MAX_DEPTH and too_deep(loaded)):
            return clean(loaded)
        return loaded

    def deconstruct(self):
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": JSONFormField, **kwargs})


class JSONFormField(forms.JSONField):
    """A JSON form field (the admin's) refusing what the API refuses: JSON nested deeper
    than ``API_MAX_JSON_DEPTH`` (10,000 levels made the parser recurse into a 500), NUL
    characters and lone surrogates."""

    def to_python(self, value):
        depth = settings.API_MAX_JSON_DEPTH
        try:
            converted = super().to_python(value)
        except RecursionError:
            raise ValidationError(f"JSON nested deeper than {depth} levels is not accepted.", code="invalid") from None
        found = find_poison(converted, depth)
        if found is not None:
            where, problem = found
            shown = where.encode("utf-8", "backslashreplace").decode("utf-8")
            raise ValidationError(f"{shown}: {problem}" if shown else problem, code="invalid")
        return converted

    def bound_data(self, data, initial):
        # Refused input is shown back as typed, next to its error: parsed, it could not
        # be shown (too deep to encode, or text that cannot be UTF-8).
        try:
            bound = super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)
        if isinstance(data, str) and find_poison(bound, settings.API_MAX_JSON_DEPTH) is not None:
            return InvalidJSONInput(data)
        return bound


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def read_invalid_text_replaced(sender, connection, **kwargs) -> None:
    """SQLite keeps whatever bytes a client wrote into a text column; bytes that are not
    UTF-8 made sqlite3 raise "Could not decode to UTF-8" for every query that read the
    row, so one such row broke every page listing its table. Read them with U+FFFD in
    their place, as a browser shows them. (PostgreSQL refuses such bytes on write.)"""
    if connection.vendor == "sqlite":
        connection.connection.text_factory = _lenient_text
