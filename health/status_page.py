"""What a public status page says, pure: a service's public state and its daily
uptime bars. Only names, states, percentages and times: nothing private."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from health.choices import ServiceHealth

DAYS = 90
# A day's bar: at or above this share of good checks it is green, above DEGRADED amber, else red.
GOOD = 99.0
DEGRADED = 95.0

OPERATIONAL, DEGRADED_STATE, DOWN, MAINTENANCE, NO_DATA = "operational", "degraded", "down", "maintenance", "no data"


def public_state(health: str, *, under_maintenance: bool) -> str:
    if under_maintenance:
        return MAINTENANCE
    if health == ServiceHealth.HEALTHY:
        return OPERATIONAL
    if health in (ServiceHealth.UNHEALTHY, ServiceHealth.CIRCUIT_OPEN):
        return DOWN
    return NO_DATA


# The palette's classes for each state (static/console/palette.css).
STATE_COLOUR = {
    OPERATIONAL: "healthy",
    DEGRADED_STATE: "degraded",
    DOWN: "unhealthy",
    MAINTENANCE: "half_open",
    NO_DATA: "unknown",
}


@dataclass(frozen=True)
class Bar:
    day: date
    checks: int
    uptime: float | None  # percent, None without checks that day

    @property
    def colour(self) -> str:
        if self.uptime is None:
            return STATE_COLOUR[NO_DATA]
        if self.uptime >= GOOD:
            return STATE_COLOUR[OPERATIONAL]
        return STATE_COLOUR[DEGRADED_STATE] if self.uptime >= DEGRADED else STATE_COLOUR[DOWN]

    @property
    def label(self) -> str:
        if self.uptime is None:
            return f"{self.day:%Y-%m-%d}: no checks"
        return f"{self.day:%Y-%m-%d}: {self.uptime:.2f}% of {self.checks} checks succeeded"


def bars(days: Mapping[date, tuple[int, int]], today: date, n: int = DAYS) -> list[Bar]:
    """``n`` bars ending today, oldest first, from {day: (checks, successes)}."""
    out = []
    for offset in range(n - 1, -1, -1):
        day = today - timedelta(days=offset)
        checks, ok = days.get(day, (0, 0))
        out.append(Bar(day, checks, round(100.0 * min(ok, checks) / checks, 2) if checks else None))
    return out


def period_uptime(days: Mapping[date, tuple[int, int]]) -> float | None:
    """Share of good checks over the whole period shown (every check weighs the same)."""
    checks = sum(c for c, _ in days.values())
    ok = sum(min(s, c) for c, s in days.values())
    return round(100.0 * ok / checks, 3) if checks else None


def overall_state(states: list[str]) -> str:
    """The page's headline: down if any service is down, maintenance if any is under it, else operational."""
    if not states:
        return NO_DATA
    for state in (DOWN, MAINTENANCE, DEGRADED_STATE):
        if state in states:
            return state
    return OPERATIONAL if OPERATIONAL in states else NO_DATA
