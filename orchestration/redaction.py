"""Secret header values (``Authorization``, ``X-Api-Key``, cookies, tokens…) inside
stored JSON — a worker's HTTP target, an ``http.request`` job's payload — are never
shown: reads get a mask in their place, the ledger stores the mask.

The header's name stays visible (a reader can tell a worker sends ``Authorization``),
only its value is hidden. A client that reads an object and writes it back unchanged
sends the mask, which ``restore_headers`` turns back into the stored value, so a
round trip cannot wipe a credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestration.storedjson import CUT, MAX_DEPTH

MASK = "********"

_SECRET_NAME = re.compile(
    r"authorization|cookie|token|secret|password|passwd|api[-_]?key|credential|session|signature", re.IGNORECASE
)


def is_secret_header(name: str) -> bool:
    return bool(_SECRET_NAME.search(str(name)))


def mask_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    return {name: MASK if is_secret_header(name) else value for name, value in headers.items()}


def redact(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """A copy of a JSON value where every ``headers`` mapping, at any depth, has its
    secret values masked.

    Iterative, and containers ``max_depth`` levels down are cut (``CUT``): a payload
    nested 500 deep made the recursive version, and so every read of the job (API list,
    detail, admin page), fail with RecursionError.
    """
    root: list[Any] = [None]
    # (value, where its copy goes, key or index there, depth, is a headers mapping)
    stack: list[tuple[Any, Any, Any, int, bool]] = [(value, root, 0, 0, False)]
    while stack:
        item, parent, slot, depth, headers = stack.pop()
        if isinstance(item, Mapping | list):
            if depth >= max_depth:
                parent[slot] = CUT
            elif isinstance(item, Mapping):
                copy: dict[Any, Any] = {}
                parent[slot] = copy
                for key, child in item.items():
                    if headers and is_secret_header(key):
                        copy[key] = MASK
                        continue
                    copy[key] = None
                    stack.append((child, copy, key, depth + 1, key == "headers" and isinstance(child, Mapping)))
            else:
                items: list[Any] = [None] * len(item)
                parent[slot] = items
                stack.extend((child, items, index, depth + 1, False) for index, child in enumerate(item))
        else:
            parent[slot] = item
    return root[0]


class MaskedSecretError(ValueError):
    """The mask came back for a header that has no stored value to stand for."""


def restore_headers(incoming: Mapping[str, Any], stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """Headers as written by a client: a masked value keeps the stored one."""
    stored = stored or {}
    restored: dict[str, Any] = {}
    for name, value in incoming.items():
        if value == MASK:
            if name not in stored or stored[name] == MASK:
                raise MaskedSecretError(f"header {name!r}: send its real value ({MASK} only stands for a stored one)")
            restored[name] = stored[name]
        else:
            restored[name] = value
    return restored


def restore(value: Any, stored: Any) -> Any:
    """``redact`` undone where a client sent a read back: every masked header value, at
    any depth, becomes the stored value at the same place (MaskedSecretError where there
    is none)."""
    if isinstance(value, Mapping):
        old = stored if isinstance(stored, Mapping) else {}
        restored: dict[str, Any] = {}
        for key, item in value.items():
            if key == "headers" and isinstance(item, Mapping):
                headers = old.get("headers")
                restored[key] = restore_headers(item, headers if isinstance(headers, Mapping) else None)
            else:
                restored[key] = restore(item, old.get(key))
        return restored
    if isinstance(value, list):
        old_items = stored if isinstance(stored, list) else []
        return [restore(item, old_items[i] if i < len(old_items) else None) for i, item in enumerate(value)]
    return value
