"""Times and durations as Slack shows them: pure functions, shared by every message builder.

A time is a Slack date token (`<!date^…>`), which each reader's client renders in their own
time zone; its fallback (notifications, old clients) is UTC, with the date unless it is today.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from commands.i18n import language_of

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


_UNITS = {"en": ("{d} d", "{h} h", "{m} min", "under a minute", " "),
          "ja": ("{d}日", "{h}時間", "{m}分", "1分未満", "")}


def duration(span: timedelta, locale: str | None = None) -> str:
    """`1 h 12 min`, `3 d 4 h`, `45 min`, `under a minute` (ja: `1時間12分`): to the minute, two
    units at most."""
    day, hour, minute, none, space = _UNITS["ja" if language_of(locale) == "ja" else "en"]
    minutes = max(0, int(span.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        parts = [day.format(d=days)] + ([hour.format(h=hours)] if hours else [])
    elif hours:
        parts = [hour.format(h=hours)] + ([minute.format(m=minutes)] if minutes else [])
    else:
        parts = [minute.format(m=minutes)] if minutes else [none]
    return space.join(parts)
