"""Times and durations as Slack shows them: pure functions, shared by every message builder.

A time is a Slack date token (`<!date^…>`), which each reader's client renders in their own
time zone; its fallback (notifications, old clients) is UTC, with the date unless it is today.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["ago", "duration", "slack_time"]


def slack_time(at: datetime, now: datetime | None = None) -> str:
    """`at` as a Slack date token; the date is left out when `at` is on `now`'s (UTC) day."""
    today = now is not None and at.date() == now.date()
    tokens = "{time}" if today else "{date_short_pretty} {time}"
    fallback = f"{at:%H:%M} UTC" if today else f"{at:%Y-%m-%d %H:%M} UTC"
    return f"<!date^{int(at.timestamp())}^{tokens}|{fallback}>"


def ago(at: datetime, now: datetime | None = None) -> str:
    """How long ago `at` was, as a Slack date token (`{ago}`: "12 minutes ago", kept current by
    each reader's client, in their language); its fallback counts from `now`."""
    fallback = f"{duration(now - at)} ago" if now is not None else f"{at:%Y-%m-%d %H:%M} UTC"
    return f"<!date^{int(at.timestamp())}^{{ago}}|{fallback}>"


def duration(span: timedelta) -> str:
    """`1 h 12 min`, `3 d 4 h`, `45 min`, `under a minute`: to the minute, two units at most."""
    minutes = max(0, int(span.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "under a minute"
