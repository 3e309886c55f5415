"""Timeline capture from Slack: a message of an incident's channel that gets a :pushpin: reaction
(`reaction_added`) or is pinned (`pin_added`) goes on the incident's timeline with its author,
its text and its permalink.

The event listener only records the mark (bot.timeline_capture: once per message, whichever
event and however often Slack delivers it) with its job, and returns; the job reads the message
(conversations.history up to its ts, or conversations.replies for a reply in a thread) and its
permalink (chat.getPermalink), then writes the entry once. Events in any other channel are
ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot import incident_ops, timeline_capture
from bot.db import Database
from bot.jobs import JOB_TIMELINE_CAPTURE
from bot.models import CapturedMessage, Incident, Job
from bot.outbox import PermanentError
from commands.feature import Feature
from commands.incident_command import slack_to_plain
from commands.slack_sync import waiting_for_setup
from integrations.slack import SlackClient

__all__ = ["PUSHPIN", "TimelineCapture"]

log = logging.getLogger(__name__)

PUSHPIN = "pushpin"  # the reaction that marks a message for the timeline (:pushpin:)


class TimelineCapture:
    def __init__(self, db: Database, slack: SlackClient, announce: str, *, clock: Callable[[], datetime],
                 on_commit: Callable[[], None]) -> None:
        self.db, self.slack, self.announce, self.clock, self.on_commit = db, slack, announce, clock, on_commit

    def feature(self) -> Feature:
        return Feature(events={"reaction_added": self.on_reaction, "pin_added": self.on_pin},
                       handlers=waiting_for_setup({JOB_TIMELINE_CAPTURE: self.capture}, self.announce))

    # -- the events (Bolt acknowledges them at once) -------------------------------------------------

    async def on_reaction(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        if event.get("reaction") != PUSHPIN or item.get("type") != "message":
            return
        await self._mark(str(item.get("channel") or ""), str(item.get("ts") or ""), via=PUSHPIN,
                         by=str(event.get("user") or ""))

    async def on_pin(self, event: dict[str, Any]) -> None:
        item = event.get("item") or {}
        if item.get("type") != "message":
            return  # a pinned file or the like: not a message of the conversation
        message = item.get("message") or {}
        channel = str(item.get("channel") or event.get("channel_id") or "")
        await self._mark(channel, str(message.get("ts") or ""), via="pin",
                         by=str(event.get("user") or item.get("created_by") or ""),
                         thread_ts=message.get("thread_ts"))

    async def _mark(self, channel: str, ts: str, *, via: str, by: str, thread_ts: str | None = None) -> None:
        if not channel or not ts:
            return
        marked = await asyncio.to_thread(self._record_mark, channel, ts, via, by, thread_ts)
        if marked is None:
            return
        log.info("message marked for the timeline", extra={"incident": marked.incident_id, "channel": channel,
                                                            "ts": ts, "via": via, "user": by})
        self.on_commit()

    def _record_mark(self, channel: str, ts: str, via: str, by: str,
                     thread_ts: str | None) -> CapturedMessage | None:
        with self.db.session() as session:
            incident = incident_ops.incident_in_channel(session, channel)
            if incident is None:
                return None  # not an incident's channel
            return timeline_capture.mark(session, incident, channel, ts, via=via, by=by, now=self.clock(),
                                         thread_ts=thread_ts)

    # -- the job ----------------------------------------------------------------------------------------

    async def capture(self, job: Job) -> None:
        row = await asyncio.to_thread(self._captured, int(job.payload.get("captured") or 0))
        if row.entry_id is not None:
            return  # written by an earlier attempt
        message = await self.slack.message(row.channel, row.ts, thread_ts=row.thread_ts)
        if message is None:
            raise PermanentError(f"the message {row.ts} of {row.channel} is no longer in Slack (deleted?)")
        permalink = await self.slack.permalink(row.channel, row.ts)
        # The author is whoever wrote it, as Slack says: never the one who marked it (`marked_by`
        # is kept beside it); a message Slack names no author for is credited to nobody.
        fetched = timeline_capture.Fetched(author=message.user, text=slack_to_plain(message.text),
                                           permalink=permalink, thread_ts=message.thread_ts)
        entry = await asyncio.to_thread(self._write, row.id or 0, fetched)
        if entry:
            self.on_commit()

    def _captured(self, captured_id: int) -> CapturedMessage:
        with self.db.read() as session:
            row = session.get(CapturedMessage, captured_id)
            if row is None or session.get(Incident, row.incident_id) is None:
                raise PermanentError(f"captured message {captured_id} (or its incident) does not exist")
            return row

    def _write(self, captured_id: int, fetched: timeline_capture.Fetched) -> bool:
        with self.db.session() as session:
            return timeline_capture.record(session, captured_id, fetched, self.clock()) is not None
