"""Outbox handlers that make Slack show the incident: channel, responders, card, notes.

Each handler reads the incident as it is now (so queued updates coalesce) and records
every step it completes, so that a retry after a failure resumes where it stopped
instead of creating a second channel or card.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import wraps
from typing import Any

from sqlalchemy import select

from bot import metrics
from bot.config import OncallConfig
from bot.db import Database
from bot.incidents import JOB_CARD, JOB_NOTIFY, JOB_OPEN
from bot.models import Alert, Incident, Job, TimelineEntry, utcnow
from bot.outbox import PermanentError, RetryLater
from commands.cards import CardView, announcement, incident_card
from integrations.slack import SlackClient, SlackError

__all__ = ["SlackSync", "channel_name", "slack_job"]

log = logging.getLogger(__name__)

CARD_MIN_INTERVAL = 1.0  # seconds between chat.update calls for one card (Slack: ~1 msg/s/channel)
CardDecorator = Callable[[Incident, CardView], None]


def channel_name(template: str, incident: Incident) -> str:
    """Slack channel names: lowercase letters, digits, '-' and '_', at most 80 characters."""
    values = {
        "date": f"{incident.created_at:%Y%m%d}", "seq": str(incident.id), "alertname": incident.alertname,
        "severity": incident.severity, "service": incident.service or "", "namespace": incident.namespace or "",
    }
    name = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template).lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name)
    name = re.sub(r"-{2,}", "-", name).strip("-_")
    return name[:80].rstrip("-_") or f"inc-{incident.id}"


def slack_job(handler: Callable[[Any, Job], Awaitable[None]]) -> Callable[[Any, Job], Awaitable[None]]:
    """Translate Slack failures into the outbox's retry language."""

    @wraps(handler)
    async def run(self: Any, job: Job) -> None:
        try:
            await handler(self, job)
        except SlackError as exc:
            if exc.retry_after is not None:
                raise RetryLater(str(exc), exc.retry_after) from exc
            if exc.retryable:
                raise
            raise PermanentError(str(exc)) from exc

    return run


class SlackSync:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, *,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.db, self.config, self.slack, self.clock = db, config, slack, clock
        self.decorators: list[CardDecorator] = []  # other features add buttons and notes to the card

    @property
    def handlers(self) -> dict[str, Callable[[Job], Awaitable[None]]]:
        return {JOB_OPEN: self.open_incident, JOB_CARD: self.update_card, JOB_NOTIFY: self.notify}

    # -- storage -------------------------------------------------------------------------

    async def _load(self, incident_id: int | None) -> Incident:
        incident = await asyncio.to_thread(self._get, incident_id)
        if incident is None:
            raise PermanentError(f"incident {incident_id} does not exist")
        return incident

    def _get(self, incident_id: int | None) -> Incident | None:
        with self.db.read() as session:
            return session.get(Incident, incident_id)

    async def _save(self, incident: Incident, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(incident, name, value)

        def write() -> None:
            with self.db.session() as session:
                row = session.get(Incident, incident.id, with_for_update=True)
                assert row is not None
                for name, value in fields.items():
                    setattr(row, name, value)

        await asyncio.to_thread(write)

    def _card_view(self, incident: Incident) -> CardView:
        with self.db.read() as session:
            alerts = list(session.scalars(select(Alert).where(Alert.incident_id == incident.id)))
            timeline = list(session.scalars(
                select(TimelineEntry).where(TimelineEntry.incident_id == incident.id)
                .order_by(TimelineEntry.id.desc()).limit(5)  # type: ignore[union-attr]
            ))
        view = CardView(incident=incident, alerts=alerts, timeline=timeline[::-1])
        for decorate in self.decorators:
            decorate(incident, view)
        return view

    # -- handlers ------------------------------------------------------------------------

    @slack_job
    async def open_incident(self, job: Job) -> None:
        incident = await self._load(job.incident_id)
        if incident.severity in self.config.channels.dedicated_for:
            await self._open_channel(incident)
        if incident.card_ts is None:
            await self._post_card(incident, job)
        if incident.channel_id and incident.announce_ts is None:
            text, blocks = announcement(incident, incident.channel_id)
            ts = await self.slack.post_message(self.config.channels.announce, text, blocks=blocks)
            await self._save(incident, announce_ts=ts)

    async def _open_channel(self, incident: Incident) -> None:
        if incident.channel_id is None:
            channel = await self._create_channel(incident)
            await self._save(incident, channel_id=channel.id, channel_name=channel.name)
            log.info("incident channel created", extra={"incident": incident.id, "channel": channel.name})
        if not incident.channel_ready:
            assert incident.channel_id is not None
            await self.slack.set_topic(incident.channel_id, f"{incident.severity} · {incident.title}")
            await self._invite_responders(incident, incident.channel_id)
            await self._save(incident, channel_ready=True)
        if incident.card_ts and incident.card_channel_id != incident.channel_id:
            # Severity rose after the card went to the incidents channel: that message
            # becomes the announcement and the card moves into the new channel.
            await self._save(incident, announce_ts=incident.card_ts, card_ts=None)
            text, blocks = announcement(incident, incident.channel_id)
            await self.slack.update_message(self.config.channels.announce, incident.announce_ts or "", text,
                                            blocks=blocks)

    async def _create_channel(self, incident: Incident):  # type: ignore[no-untyped-def]
        base = channel_name(self.config.channels.name_template, incident)
        for attempt in range(1, 10):
            name = base if attempt == 1 else f"{base[:77]}-{attempt}"
            try:
                return await self.slack.create_channel(name, private=self.config.channels.private)
            except SlackError as exc:
                if exc.error != "name_taken":
                    raise
                log.info("channel name taken; trying the next", extra={"channel": name})
        raise PermanentError(f"channel names {base} to {base}-9 are all taken; archive old channels")

    async def _invite_responders(self, incident: Incident, channel: str) -> None:
        users, problems = await self._resolve_people(self.config.responders_for(incident.labels))
        if users:
            refused = await self.slack.invite(channel, users)
            problems += [f"<@{user}> ({error})" for user, error in refused]
        if problems:
            await self.slack.post_message(
                channel, "Could not invite: " + ", ".join(problems) + ". Check the responders in ONCALL_CONFIG.")

    async def _resolve_people(self, people: list[str]) -> tuple[list[str], list[str]]:
        users: list[str] = []
        problems: list[str] = []
        for who in people:
            if "@" in who:
                user = await self.slack.user_id_by_email(who)
                if user is None:
                    problems.append(f"{who} (no Slack user with that e-mail)")
                found = [user] if user else []
            elif who.startswith("S"):
                found = await self.slack.usergroup_members(who)
            else:
                found = [who]
            users += [u for u in found if u not in users]
        return users, problems

    async def _post_card(self, incident: Incident, job: Job) -> None:
        channel = incident.channel_id or self.config.channels.announce
        text, blocks = incident_card(await asyncio.to_thread(self._card_view, incident))
        ts = await self.slack.post_message(channel, text, blocks=blocks)
        await self._save(incident, card_channel_id=channel, card_ts=ts, card_updated_at=self.clock())
        if "webhook_at" in job.payload:
            elapsed = (self.clock() - datetime.fromisoformat(job.payload["webhook_at"])).total_seconds()
            metrics.WEBHOOK_TO_CARD.observe(elapsed)
        log.info("incident card posted", extra={"incident": incident.id, "channel": channel})

    @slack_job
    async def update_card(self, job: Job) -> None:
        incident = await self._load(job.incident_id)
        if incident.card_ts is None or incident.card_channel_id is None:
            return  # the open job posts the card with the current state
        if incident.card_updated_at is not None:
            wait = CARD_MIN_INTERVAL - (self.clock() - incident.card_updated_at).total_seconds()
            if wait > 0:
                raise RetryLater("pacing card updates", wait)
        text, blocks = incident_card(await asyncio.to_thread(self._card_view, incident))
        await self.slack.update_message(incident.card_channel_id, incident.card_ts, text, blocks=blocks)
        await self._save(incident, card_updated_at=self.clock())

    @slack_job
    async def notify(self, job: Job) -> None:
        incident = await self._load(job.incident_id)
        text = str(job.payload.get("text", ""))
        if incident.channel_id:
            await self.slack.post_message(incident.channel_id, text)
        elif incident.card_ts and incident.card_channel_id:
            await self.slack.post_message(incident.card_channel_id, text, thread_ts=incident.card_ts)
