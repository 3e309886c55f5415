"""Timeline capture: a message of an incident's channel that someone marks (a :pushpin: reaction,
or a pin) goes on the incident's timeline with its author, its text and its permalink. Data only:
commands.timeline_capture hears the events and fetches the message.

Marking is recorded first, once per message (unique on channel + ts: a message both pinned and
pushpinned, or an event Slack delivers again, is one row), together with the job that fetches the
message; the entry is written once, under the row's lock, whatever the job's retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bot.jobs import JOB_CARD, JOB_TIMELINE_CAPTURE, enqueue
from bot.models import CapturedMessage, Incident, TimelineEntry

__all__ = ["CAPTURED", "TEXT_LIMIT", "Fetched", "mark", "message_time", "record"]

CAPTURED = "message"  # the timeline kind of a captured message
TEXT_LIMIT = 3000  # characters of its text kept
_MARK = "…"


def mark(session: Session, incident: Incident, channel: str, ts: str, *, via: str, by: str, now: datetime,
         thread_ts: str | None = None) -> CapturedMessage | None:
    """Someone marked a message for the timeline: the row and its fetch job; None when the
    message was marked before (by either means)."""
    assert incident.id is not None
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = session.execute(insert(CapturedMessage).values(
        incident_id=incident.id, channel=channel[:32], ts=ts[:32], thread_ts=(thread_ts or None) and thread_ts[:32],
        via=via[:16], marked_by=by[:64], marked_at=now,
    ).on_conflict_do_nothing(index_elements=["channel", "ts"]).returning(col(CapturedMessage.id)))
    inserted = result.scalar_one_or_none()
    if inserted is None:
        return None
    enqueue(session, JOB_TIMELINE_CAPTURE, incident.id, now=now, payload={"captured": inserted})
    return session.get_one(CapturedMessage, inserted)


@dataclass(frozen=True)
class Fetched:
    """The marked message as Slack has it."""

    author: str  # who wrote it: a Slack user id (a bot's id for a bot's message; "" when Slack names nobody)
    text: str  # plain text (mentions and links already made readable)
    permalink: str | None
    thread_ts: str | None


def message_time(ts: str) -> datetime | None:
    """A Slack ts ("1700000000.000100") as the time the message was posted."""
    try:
        return datetime.fromtimestamp(float(ts), UTC)
    except (ValueError, OverflowError):
        return None


def record(session: Session, captured_id: int, fetched: Fetched, now: datetime) -> TimelineEntry | None:
    """The captured message on its incident's timeline, once: None when an earlier attempt
    wrote it (or the row is gone). The entry is placed at the message's own time."""
    row = session.get(CapturedMessage, captured_id, with_for_update=True, populate_existing=True)
    if row is None or row.entry_id is not None:
        return None
    text = fetched.text if len(fetched.text) <= TEXT_LIMIT else fetched.text[: TEXT_LIMIT - len(_MARK)] + _MARK
    entry = TimelineEntry(
        incident_id=row.incident_id, at=message_time(row.ts) or now, actor=fetched.author[:128], kind=CAPTURED,
        text=text or "(no text)",
        data={"channel": row.channel, "ts": row.ts, "thread_ts": fetched.thread_ts, "permalink": fetched.permalink,
              "via": row.via, "marked_by": row.marked_by, "marked_at": row.marked_at.isoformat()})
    session.add(entry)
    session.flush()
    row.entry_id = entry.id
    enqueue(session, JOB_CARD, row.incident_id, now=now, coalesce=True)
    return entry
