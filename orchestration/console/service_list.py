"""The services page's query: filters, order (most urgent first) and key paging. Pure:
parsing and the keys, tested without a database; ``data.services_panel`` applies it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from health.choices import BreakerState, CheckKindChoice, ServiceHealth

DISABLED = "disabled"
HEALTHS = (*ServiceHealth.values, DISABLED)
# Order of the list: what needs a person first, disabled services last.
RANK = {ServiceHealth.CIRCUIT_OPEN: 0, ServiceHealth.UNHEALTHY: 1, ServiceHealth.UNKNOWN: 2, ServiceHealth.HEALTHY: 3}
DISABLED_RANK = 4
MAX_TEXT = 100


class FilterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ServiceQuery:
    q: str = ""
    health: str = ""
    breaker: str = ""
    kind: str = ""
    tag: str = ""
    after: tuple[int, str] | None = None  # (rank, name) of the last row of the page before

    def filters(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("q", self.q),
                ("health", self.health),
                ("breaker", self.breaker),
                ("kind", self.kind),
                ("tag", self.tag),
            )
            if v
        }

    def query_string(self, *, after: tuple[int, str] | None = None) -> str:
        params = self.filters()
        if after is not None:
            params["after"] = encode_key(after)
        return urlencode(params)

    @property
    def filtered(self) -> bool:
        return bool(self.filters())


def encode_key(key: tuple[int, str]) -> str:
    return f"{key[0]}:{key[1]}"


def decode_key(value: str) -> tuple[int, str]:
    rank, sep, name = value.partition(":")
    if not sep or not rank.isdigit() or int(rank) > DISABLED_RANK or not name or len(name) > MAX_TEXT:
        raise FilterError("after", "A page key as given by the page's 'next' link.")
    return int(rank), name


def _choice(params: Mapping[str, str], field: str, allowed: tuple[str, ...]) -> str:
    value = (params.get(field) or "").strip()
    if value and value not in allowed:
        raise FilterError(field, f"One of: {', '.join(allowed)}.")
    return value


def parse(params: Mapping[str, str]) -> ServiceQuery:
    """The page's query from its GET parameters; a bad value is a FilterError naming it."""
    q, tag = (params.get("q") or "").strip(), (params.get("tag") or "").strip()
    for field, value in (("q", q), ("tag", tag)):
        if len(value) > MAX_TEXT:
            raise FilterError(field, f"At most {MAX_TEXT} characters.")
    after = params.get("after") or ""
    return ServiceQuery(
        q=q,
        health=_choice(params, "health", HEALTHS),
        breaker=_choice(params, "breaker", tuple(BreakerState.values)),
        kind=_choice(params, "kind", tuple(CheckKindChoice.values)),
        tag=tag,
        after=decode_key(after) if after else None,
    )


def rank_of(enabled: bool, shown_health: str) -> int:
    return RANK.get(shown_health, 2) if enabled else DISABLED_RANK


def rank_of_filter(health: str) -> int | None:
    """The one rank a health filter's rows all have (None without a filter)."""
    if not health:
        return None
    return DISABLED_RANK if health == DISABLED else RANK.get(health, 2)
