"""Heartbeats (Healthchecks' model): a cron job or worker pings the service's secret
URL; it is down when the next ping is later than its period (or the next cron time)
plus the grace time, when the last ping said it failed, or when a run that pinged
``/start`` has not pinged success within the grace time.

No I/O: the sweep hands in the pings the database holds (``Probe.state``) and the
verdict is a pure function of them and the time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from health.kinds.base import (
    CheckConfigError,
    CheckKind,
    Probe,
    ProbeResult,
    Timer,
    as_int,
    register_kind,
    unknown_keys,
)

START = "start"
SUCCESS = "success"
FAIL = "fail"


def next_expected(config: Mapping[str, Any], after: datetime) -> datetime:
    """When the ping that follows one at ``after`` is due (before the grace time)."""
    if config.get("cron"):
        zone = ZoneInfo(config.get("timezone") or "UTC")
        return croniter(config["cron"], after.astimezone(zone)).get_next(datetime).astimezone(UTC)
    return after + timedelta(seconds=config["period_seconds"])


def heartbeat_verdict(config: Mapping[str, Any], state: Mapping[str, Any], now: datetime) -> str | None:
    """None while the heartbeat is on time, else why it is down. ``state``: last_ping_at,
    last_ping_kind, last_start_at and created_at (aware datetimes or None)."""
    grace = timedelta(seconds=config.get("grace_seconds", 0))
    last_ping, kind = state.get("last_ping_at"), state.get("last_ping_kind")
    started = state.get("last_start_at")
    if last_ping is not None and kind == FAIL:
        return f"the job reported failure at {last_ping:%Y-%m-%d %H:%M:%S} UTC"
    if started is not None and (last_ping is None or started > last_ping) and now > started + grace:
        return f"started at {started:%Y-%m-%d %H:%M:%S} UTC and has not reported success within the grace time"
    since = last_ping or state.get("created_at") or now
    deadline = next_expected(config, since) + grace
    if now > deadline:
        what = "no ping since it was created" if last_ping is None else f"last ping at {since:%Y-%m-%d %H:%M:%S} UTC"
        return f"late: {what}; one was due by {deadline:%Y-%m-%d %H:%M:%S} UTC (grace included)"
    return None


@register_kind
class HeartbeatKind(CheckKind):
    name = "heartbeat"

    def clean(self, config: Mapping[str, Any]) -> dict[str, Any]:
        unknown_keys(config, {"period_seconds", "cron", "timezone", "grace_seconds"})
        out: dict[str, Any] = {"grace_seconds": as_int(config, "grace_seconds", 60, 0, 30 * 86400)}
        cron = config.get("cron")
        if cron:
            if "period_seconds" in config and config["period_seconds"] is not None:
                raise CheckConfigError("cron", "give period_seconds or cron, not both")
            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise CheckConfigError("cron", "not a cron expression (e.g. '*/5 * * * *')")
            zone = config.get("timezone") or "UTC"
            try:
                ZoneInfo(str(zone))
            except (ZoneInfoNotFoundError, ValueError):
                raise CheckConfigError("timezone", f"unknown time zone {zone!r} (e.g. Europe/Paris)") from None
            out.update(cron=cron.strip(), timezone=str(zone))
        else:
            if config.get("timezone"):
                raise CheckConfigError("timezone", "only with cron")
            period = as_int(config, "period_seconds", None, 1, 366 * 86400)
            if period is None:
                raise CheckConfigError("period_seconds", "give period_seconds or cron")
            out["period_seconds"] = period
        return out

    def probe(self, item: Probe) -> ProbeResult:
        timer = Timer(item.key)
        error = heartbeat_verdict(item.config, item.state, datetime.now(UTC))
        return timer.result(error is None, None, error or "")
