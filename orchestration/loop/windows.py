"""Channel windows (daily UTC hour ranges). Pure."""

from __future__ import annotations

from datetime import datetime

CLOSING_SOON_MINUTES = 60

# Seed defaults; stored as ChannelWindow rows so people can edit them.
DEFAULT_WINDOWS = {"instagram": (18, 23), "tiktok": (16, 24), "youtube": (17, 22)}


def window_state(start_hour: int, end_hour: int, now: datetime) -> dict:
    """Whether ``now`` (UTC) is inside [start_hour, end_hour) and minutes until it closes.

    end_hour may be 24 (midnight) or smaller than start_hour (a window over midnight).
    """
    minute_of_day = now.hour * 60 + now.minute + now.second / 60
    start, end = start_hour * 60, end_hour * 60
    if start < end:
        active = start <= minute_of_day < end
        closes_in = end - minute_of_day if active else None
    else:  # wraps past midnight
        active = minute_of_day >= start or minute_of_day < end
        closes_in = ((end + 1440 - minute_of_day) % 1440) if active else None
    return {
        "active": active,
        "start_hour": start_hour,
        "end_hour": end_hour,
        "closes_in_minutes": round(closes_in, 1) if closes_in is not None else None,
        "closing_soon": bool(active and closes_in is not None and closes_in <= CLOSING_SOON_MINUTES),
    }
