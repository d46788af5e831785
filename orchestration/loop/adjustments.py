"""What a person's approved suggestion may change, by kind of target: a registry, so
routing's suggestions change a worker through the fleet's own model methods without
importing the fleet (the layers run one way; each capability registers its kind).

Contract for a target kind::

    class Workers:
        fields = ("cadence", "enabled")
        def read(self, name: str) -> dict[str, Any]: ...   # LookupError: no such object
        def write(self, name: str, field: str, value: Any, *, actor: str, reason: str) -> None: ...
        def metrics(self, name: str) -> dict[str, Any]: ...

``read`` gives each field's current value (JSON-able, compared as is by a revert);
``write`` is the same model method the admin and the API call, with its ledger entry,
and raises ``AdjustmentError`` saying why it refused; ``metrics`` are the numbers the
change is meant to move (kept before and after).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class AdjustmentError(Exception):
    """The object refused the change (an invalid value, a dependency): a 409 saying why."""


class Adjustable(Protocol):
    fields: tuple[str, ...]

    def read(self, name: str) -> dict[str, Any]: ...

    def write(self, name: str, field: str, value: Any, *, actor: str, reason: str) -> None: ...

    def metrics(self, name: str) -> dict[str, Any]: ...


_TARGETS: dict[str, Adjustable] = {}


def register_target(kind: str, target: Adjustable) -> Adjustable:
    _TARGETS[kind] = target
    return target


def target(kind: str) -> Adjustable:
    try:
        return _TARGETS[kind]
    except KeyError:
        raise AdjustmentError(f"nothing can change a {kind} here") from None


# --- where suggestions come from beyond routing's own analysis --------------------------------
# A source is ``(window_hours) -> list of findings``, each a dict with ``kind, subject,
# title, description, action, priority, evidence``; the analysis writes each new one as a
# pending suggestion, which only a person applies.
Source = Callable[[float], list[dict[str, Any]]]
_SOURCES: list[Source] = []


def register_source(source: Source) -> Source:
    if source not in _SOURCES:
        _SOURCES.append(source)
    return source


def sources() -> list[Source]:
    return list(_SOURCES)
