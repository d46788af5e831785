"""What no stored field may hold, found in a parsed value (a request's body, a form's
JSON): NUL characters (PostgreSQL cannot store them), lone surrogates (not Unicode: no
page can show them) and containers nested deeper than a limit. The API's parsers and
the admin's JSON fields both refuse what this finds (see orchestrator_site.api.parsers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.http import QueryDict

_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _bad_text(text: str) -> str | None:
    found = _BAD_CHARACTER.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "NUL characters (\\u0000) are not allowed."
    return "lone surrogates (\\ud800-\\udfff) are not valid Unicode text."


def find_poison(value: Any, max_depth: int | None = None) -> tuple[str, str] | None:
    """(where, what is wrong) for the first NUL, lone surrogate or container nested
    deeper than ``max_depth`` in a parsed body; None when it is clean. ``where`` is a
    dotted path into the body ("" for the body itself). Iterative: any depth is safe."""
    if isinstance(value, QueryDict):
        value = dict(value.lists())
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            problem = _bad_text(item)
            if problem:
                return where, problem
        elif isinstance(item, Mapping | list | tuple):
            if max_depth is not None and depth >= max_depth:
                return where, f"JSON nested deeper than {max_depth} levels is not accepted."
            if isinstance(item, Mapping):
                children = []
                for key, child in item.items():
                    inner = f"{where}.{key}" if where else str(key)
                    problem = _bad_text(str(key))
                    if problem:
                        return inner, problem
                    children.append((child, inner, depth + 1))
            else:
                children = [(child, f"{where}[{index}]", depth + 1) for index, child in enumerate(item)]
            stack.extend(reversed(children))
    return None
