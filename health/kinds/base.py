"""What every check kind shares: the plain values a probe takes and returns, and the
registry of kinds.

Contract for a kind::

    @register_kind
    class MyKind(CheckKind):
        name = "my"
        def clean(self, config: dict) -> dict: ...   # normalised config; CheckConfigError naming the field
        def probe(self, item: Probe) -> ProbeResult: ...   # no ORM, never raises

A probe runs in a pool thread without a database connection: everything it needs is in
``Probe`` (the service's URL, timeout and kind-specific ``config``; a heartbeat's last
pings in ``state``), and the sweep persists what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

DEFAULT_KIND = "http"


@dataclass(frozen=True)
class Probe:
    key: int
    url: str
    timeout: float
    kind: str = DEFAULT_KIND
    config: Mapping[str, Any] = field(default_factory=dict)
    # Heartbeats: what the database knows of the pings (no I/O in their probe).
    state: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    key: int
    success: bool
    status_code: int | None
    response_time_ms: float
    error_message: str


class CheckConfigError(ValueError):
    """A kind's config is wrong; ``field`` names the key of ``check`` at fault."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


class CheckKind:
    name: ClassVar[str] = ""
    # Whether the probe needs the service's base URL (only HTTP checks request it).
    needs_url: ClassVar[bool] = False

    def clean(self, config: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def probe(self, item: Probe) -> ProbeResult:
        raise NotImplementedError


_KINDS: dict[str, CheckKind] = {}


def register_kind(cls: type[CheckKind]) -> type[CheckKind]:
    _KINDS[cls.name] = cls()
    return cls


def get_kind(name: str) -> CheckKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise CheckConfigError("kind", f"unknown check kind {name!r} (one of {', '.join(kinds())})") from None


def kinds() -> list[str]:
    return sorted(_KINDS)


class Timer:
    """Elapsed milliseconds since creation, and the result builder every probe uses."""

    def __init__(self, key: int) -> None:
        self.key = key
        self.started = time.perf_counter()

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)

    def result(self, ok: bool, code: int | None = None, error: str = "") -> ProbeResult:
        return ProbeResult(self.key, ok, code, self.elapsed_ms(), error)


# --- small validators the kinds share ---------------------------------------------------
def unknown_keys(config: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(config) - allowed)
    if extra:
        raise CheckConfigError(extra[0], f"not a setting of this kind (use {', '.join(sorted(allowed))})")


def as_int(config: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = config.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckConfigError(key, "must be a whole number")
    if not low <= value <= high:
        raise CheckConfigError(key, f"must be between {low} and {high}")
    return value


def as_host(config: Mapping[str, Any], key: str = "host") -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > 253 or any(c in value for c in " /\\@?#"):
        raise CheckConfigError(key, "a host name or IP address is required")
    return value.strip()
