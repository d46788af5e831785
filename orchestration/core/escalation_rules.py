"""Escalation policies as data, decided without the database.

A policy covers some severities and lists tiers, each ``{"after_minutes", "channels",
"repeat_minutes"}``: while an anomaly stays open and nobody has acknowledged it, the
tier whose ``after_minutes`` (counted from detection) has passed is notified on its
channels, and repeated every ``repeat_minutes`` until the next tier, an acknowledgement
or the resolution. Empty ``channels`` means the escalation alert route. A policy marked
``after_recovery`` covers only anomalies a recovery strategy has tried and not cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

TIER_KEYS = {"after_minutes", "channels", "repeat_minutes"}
MAX_TIERS = 10
MAX_MINUTES = 60 * 24 * 30


class TierError(ValueError):
    pass


def validate_tiers(tiers: Any) -> list[dict[str, Any]]:
    """The tiers, normalised and sorted by ``after_minutes``; TierError says what is wrong."""
    if not isinstance(tiers, list) or not tiers:
        raise TierError("tiers must be a non-empty list")
    if len(tiers) > MAX_TIERS:
        raise TierError(f"at most {MAX_TIERS} tiers")
    out = []
    for n, tier in enumerate(tiers, 1):
        if not isinstance(tier, dict):
            raise TierError(f"tier {n} must be an object with after_minutes, channels and repeat_minutes")
        unknown = set(tier) - TIER_KEYS
        if unknown:
            raise TierError(f"tier {n}: unknown keys {', '.join(sorted(unknown))}")
        after = tier.get("after_minutes")
        if isinstance(after, bool) or not isinstance(after, int) or not 0 <= after <= MAX_MINUTES:
            raise TierError(f"tier {n}: after_minutes must be a whole number from 0 to {MAX_MINUTES}")
        repeat = tier.get("repeat_minutes")
        if repeat is not None and (
            isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= MAX_MINUTES
        ):
            raise TierError(f"tier {n}: repeat_minutes must be empty or a whole number from 1 to {MAX_MINUTES}")
        channels = tier.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) and c for c in channels):
            raise TierError(f"tier {n}: channels must be a list of channel names")
        out.append({"after_minutes": after, "channels": list(channels), "repeat_minutes": repeat})
    out.sort(key=lambda t: t["after_minutes"])
    if len({t["after_minutes"] for t in out}) != len(out):
        raise TierError("two tiers have the same after_minutes")
    return out


@dataclass(frozen=True)
class Step:
    """What to send now: ``tier`` (1-based) and whether it is a repeat of that tier."""

    tier: int
    repeat: bool
    channels: list[str]


def next_step(
    tiers: list[dict[str, Any]],
    *,
    detected_at: datetime,
    current_tier: int,
    last_sent_at: datetime | None,
    acknowledged: bool,
    now: datetime,
) -> Step | None:
    """The notification an open anomaly is due now, or None."""
    if acknowledged or not tiers:
        return None
    age = now - detected_at
    due = 0
    for n, tier in enumerate(tiers, 1):
        if age >= timedelta(minutes=tier["after_minutes"]):
            due = n
    if due > current_tier:
        return Step(due, False, tiers[due - 1]["channels"])
    if current_tier and last_sent_at is not None:
        repeat = tiers[current_tier - 1].get("repeat_minutes")
        if repeat and now - last_sent_at >= timedelta(minutes=repeat):
            return Step(current_tier, True, tiers[current_tier - 1]["channels"])
    return None


def covers(severities: list[str], severity: str, *, after_recovery: bool = False, recovery_attempts: int = 0) -> bool:
    """A policy with no severities covers every one; one ``after_recovery`` only the
    anomalies that outlived at least one recovery attempt."""
    if after_recovery and recovery_attempts < 1:
        return False
    return not severities or severity in severities
