"""Outbox handlers that make Slack show the incident: channel, responders, card, notes.

Each handler reads the incident as it is now (so queued updates coalesce) and records
every step it completes, so that a retry after a failure resumes where it stopped
instead of creating a second channel or card.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from functools import wraps
from typing import Any

from sqlalchemy import select

from bot import metrics
from bot.card_view import CardView, load_card_view
from bot.config import OncallConfig
from bot.db import Database
from bot.jobs import JOB_ANNOUNCE, JOB_CARD, JOB_NOTIFY, JOB_OPEN, JOB_PD_INVITE, enqueue
from bot.models import Incident, Job, RunbookStep
from bot.outbox import PermanentError, RetryLater, backoff
from bot.paging import PagingService
from commands.cards import announcement, incident_card
from commands.declare_blocks import private_announcement
from commands.feature import Feature
from commands.notices import invite_problems_text, mention, notice_text, oncall_invited_text, plain_text
from integrations.slack import Channel, SlackClient, SlackError

__all__ = ["MESSAGE_EVENT", "SETUP_RETRY", "SETUP_WAIT", "SlackSync", "channel_name", "incident_thread", "message_tag",
           "post_once", "slack_failure", "slack_text", "step_thread", "waiting_for_setup"]

log = logging.getLogger(__name__)

CARD_MIN_INTERVAL = 1.0  # seconds between chat.update calls for one card (Slack: ~1 msg/s/channel)
SETUP_RETRY = 30.0  # seconds between tries while Slack refuses for a reason a person must fix
SETUP_WAIT = "waiting for Slack setup: "  # how such a job's last_error starts (/readyz counts them)
MESSAGE_EVENT = "oncall_bot_message"  # the metadata event type on every message the bot posts
Handler = Callable[[Job], Awaitable[None]]


def channel_name(template: str, incident: Incident) -> str:
    """Slack channel names: lowercase letters, digits, '-' and '_', at most 80 characters."""
    values = {
        "date": f"{incident.created_at:%Y%m%d}", "seq": str(incident.id), "alertname": incident.alertname,
        "severity": incident.severity, "service": incident.service or "", "namespace": incident.namespace or "",
    }
    name = _render_name(template, values)
    # Too long: shorten the label values, never {seq}: the name must stay this incident's alone
    # (a retry after a crash finds its channel again by this name).
    while len(name) > 80 and any(values[k] for k in _CUTTABLE):
        longest = max(_CUTTABLE, key=lambda k: len(values[k]))
        values[longest] = values[longest][: max(0, len(values[longest]) - max(1, len(name) - 80))]
        name = _render_name(template, values)
    return name[:80].rstrip("-_") or f"inc-{incident.id}"


_CUTTABLE = ("alertname", "service", "namespace")


def _render_name(template: str, values: dict[str, str]) -> str:
    name = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template).lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name)
    return re.sub(r"-{2,}", "-", name).strip("-_")


def waiting_for_setup(handlers: Mapping[str, Handler], announce: str) -> dict[str, Handler]:
    """The Slack job handlers, with Slack refusals that a person must fix made to wait."""
    return {kind: _waiting(handler, announce) for kind, handler in handlers.items()}


def _waiting(handler: Handler, announce: str) -> Handler:
    @wraps(handler)
    async def run(job: Job) -> None:
        try:
            await handler(job)
        except SlackError as exc:
            raise slack_failure(exc, announce) from exc

    return run


def slack_failure(exc: SlackError, announce: str | None = None) -> Exception:
    """A Slack refusal that a person must fix waits for them: a wrong token or scope, or the
    configured announce channel missing or without the bot. Anything else goes to the outbox
    as it is (its `retry_after` / `retryable` decide): an incident's own channel gone or
    archived will not come back, so that job fails and frees its lane."""
    if not exc.retryable and (exc.app_setup or (exc.channel_setup and announce is not None
                                                and exc.channel == announce)):
        # Never failed: the work waits, and resumes by itself once the app or the channel is
        # fixed (/readyz and `oncall-bot jobs list` name the fix).
        return RetryLater(f"{SETUP_WAIT}{exc}; {exc.fix}", SETUP_RETRY)
    return exc


class SlackSync:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, paging: PagingService, *,
                 clock: Callable[[], datetime]) -> None:
        self.db, self.config, self.slack, self.paging, self.clock = db, config, slack, paging, clock
        self._bot_user_id: str | None = None

    def feature(self) -> Feature:
        return Feature(handlers=waiting_for_setup({
            JOB_OPEN: self.open_incident, JOB_ANNOUNCE: self.announce, JOB_CARD: self.update_card,
            JOB_NOTIFY: self.notify, JOB_PD_INVITE: self.invite_oncall}, self.config.channels.announce))

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
            return load_card_view(session, incident, self.config, self.clock())

    # -- handlers ------------------------------------------------------------------------
    # A job that runs again (attempts > 1) may have done its work before a crash or a lost
    # answer: each step first looks for its own earlier result (the channel by its recorded
    # name, a message by its metadata) and only then acts.

    async def open_incident(self, job: Job) -> None:
        incident = await self._load(job.incident_id)
        retry = job.attempts > 1
        if incident.severity in self.config.channels.dedicated_for or incident.channel_name or incident.private:
            await self._open_channel(incident, retry=retry)  # private: never a thread in the announce channel
        if incident.card_ts is None:
            await self._post_card(incident, job, retry=retry)
        if incident.channel_id is None and not incident.responders:
            # No channel to invite them to: record who was called in, so they may act on it.
            users, _ = await self._resolve_people(self.config.responders_for(incident.labels))
            await asyncio.to_thread(self._add_responders, incident.id, users)

    async def announce(self, job: Job) -> None:
        """The incident's line in the announce channel: its own job, outside the incident's lane,
        so an announce channel that is missing or misconfigured never holds up the card."""
        incident = await self._load(job.incident_id)
        announce = self.config.channels.announce
        text, blocks = private_announcement(incident, self.config.runbooks.locale) if incident.private \
            else announcement(incident, incident.channel_id, self.config.runbooks.locale)
        try:
            if incident.announce_ts is not None:  # the old card became the announcement
                await self.slack.update_message(announce, incident.announce_ts, text, blocks=blocks)
                return
            ts = await post_once(self.slack, announce, text, blocks=blocks, retry=job.attempts > 1,
                                 tag=message_tag(incident, "announcement"))
        except SlackError as exc:
            if exc.channel_setup:
                raise RetryLater(f"{SETUP_WAIT}announce channel {announce}: {exc.error}; {exc.fix}",
                                 SETUP_RETRY) from exc
            raise
        await self._save(incident, announce_ts=ts)

    async def _open_channel(self, incident: Incident, *, retry: bool) -> None:
        if incident.channel_id is None:
            channel = await self._create_channel(incident, retry=retry)
            await asyncio.to_thread(self._channel_created, incident, channel)
            log.info("incident channel created", extra={"incident": incident.id, "channel": channel.name})
        if not incident.channel_ready:
            assert incident.channel_id is not None
            await self.slack.set_topic(incident.channel_id, slack_text(f"{incident.severity} · {incident.title}"))
            await self._invite_responders(incident, incident.channel_id, retry=retry)
            await self._save(incident, channel_ready=True)

    def _channel_created(self, incident: Incident, channel: Channel) -> None:
        """Record the channel and queue its announcement in one transaction. A card already
        posted in the announce channel (severity rose) becomes the announcement there."""
        moved = incident.card_ts is not None and incident.card_channel_id != channel.id
        with self.db.session() as session:
            row = session.get(Incident, incident.id, with_for_update=True)
            assert row is not None
            row.channel_id, row.channel_name = channel.id, channel.name
            if moved:
                row.announce_ts, row.card_ts = row.card_ts, None
            if row.announce_ts is None or moved:
                enqueue(session, JOB_ANNOUNCE, incident.id, now=self.clock())
            incident.channel_id, incident.channel_name = row.channel_id, row.channel_name
            incident.announce_ts, incident.card_ts = row.announce_ts, row.card_ts

    async def _create_channel(self, incident: Incident, *, retry: bool) -> Channel:
        private = self.config.channels.private or incident.private
        if incident.channel_name and retry:
            mine = await self.slack.find_channel(incident.channel_name, creator=await self._bot_user(),
                                                 private=private)
            if mine is not None:
                log.info("found the channel an earlier attempt created", extra={"incident": incident.id,
                                                                                "channel": mine.name})
                return mine
        base = channel_name(self.config.channels.name_template, incident)
        for attempt in range(1, 10):
            name = base if attempt == 1 else f"{base[:77]}-{attempt}"
            await self._save(incident, channel_name=name)  # the intent: a retry looks for this name first
            try:
                return await self.slack.create_channel(name, private=private)
            except SlackError as exc:
                if exc.error != "name_taken":
                    raise
            # Taken: perhaps by our own call, its answer lost (a dropped connection, a crash).
            mine = await self.slack.find_channel(name, creator=await self._bot_user(), private=private)
            if mine is not None and not await asyncio.to_thread(self._channel_in_use, mine.id, incident.id):
                log.info("found the channel an earlier call created", extra={"incident": incident.id, "channel": name})
                return mine
            log.info("channel name taken; trying the next", extra={"channel": name})
        raise PermanentError(f"channel names {base} to {base}-9 are all taken; archive old channels")

    def _add_responders(self, incident_id: int | None, users: list[str]) -> None:
        with self.db.session() as session:
            row = session.get(Incident, incident_id, with_for_update=True)
            if row is not None:
                row.responders = list(dict.fromkeys([*row.responders, *users]))

    def _channel_in_use(self, channel_id: str, incident_id: int | None) -> bool:
        with self.db.read() as session:
            return session.scalars(select(Incident.id).where(  # type: ignore[call-overload]
                Incident.channel_id == channel_id, Incident.id != incident_id)).first() is not None

    async def _bot_user(self) -> str:
        if self._bot_user_id is None:
            self._bot_user_id = (await self.slack.identity()).user_id
        return self._bot_user_id

    async def _invite_responders(self, incident: Incident, channel: str, *, retry: bool) -> None:
        users, problems = await self._resolve_people(self.config.responders_for(incident.labels))
        if users:
            # Recorded first: the people called in are the incident's responders (who may
            # approve its remediations, bot.policy), whether or not Slack lets them in.
            await asyncio.to_thread(self._add_responders, incident.id, users)
        invite = list(dict.fromkeys([*users, *([incident.commander] if incident.commander else [])]))  # declared
        if invite:
            refused = await self.slack.invite(channel, invite)
            problems += [f"{mention(user)} ({plain_text(error, 100)})" for user, error in refused]
        if problems:
            await post_once(self.slack, channel, invite_problems_text(problems, self.config.runbooks.locale),
                            retry=retry, tag=message_tag(incident, "invite_problems"))

    async def _resolve_people(self, people: list[str]) -> tuple[list[str], list[str]]:
        users: list[str] = []
        problems: list[str] = []
        for who in people:
            if "@" in who:
                user = await self.slack.user_id_by_email(who)
                if user is None:
                    problems.append(f"{plain_text(who, 200)} (no Slack user with that e-mail)")
                found = [user] if user else []
            elif who.startswith("S"):
                found = await self.slack.usergroup_members(who)
            else:
                found = [who]
            users += [u for u in found if u not in users]
        return users, problems

    async def _post_card(self, incident: Incident, job: Job, *, retry: bool) -> None:
        channel = incident.channel_id or self.config.channels.announce
        text, blocks = incident_card(await asyncio.to_thread(self._card_view, incident))
        try:
            ts = await post_once(self.slack, channel, text, blocks=blocks, retry=retry,
                                 tag=message_tag(incident, "card"))
        except SlackError as exc:
            if not (exc.channel_setup and incident.channel_id is None):
                raise
            # The announce channel is unusable: this incident gets a channel of its own rather
            # than appearing nowhere (the announcement waits for the channel to be fixed).
            log.warning("announce channel unusable; the incident gets its own channel",
                        extra={"incident": incident.id, "channel": channel, "error": exc.error, "fix": exc.fix})
            await self._open_channel(incident, retry=retry)
            return await self._post_card(incident, job, retry=retry)
        await self._save(incident, card_channel_id=channel, card_ts=ts, card_updated_at=self.clock())
        if "webhook_at" in job.payload:
            elapsed = (self.clock() - datetime.fromisoformat(job.payload["webhook_at"])).total_seconds()
            metrics.WEBHOOK_TO_CARD.observe(elapsed)
        log.info("incident card posted", extra={"incident": incident.id, "channel": channel})

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

    async def notify(self, job: Job) -> None:
        incident = await self._load(job.incident_id)
        where = incident_thread(incident)
        if where is None:
            raise RetryLater("the incident is not in Slack yet", backoff(job.attempts))
        channel, thread_ts = where
        try:
            text = notice_text(job.payload, self.config.runbooks.locale)
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        await post_once(self.slack, channel, text, thread_ts=thread_ts,
                        retry=job.attempts > 1, tag=message_tag(incident, "notice", job=job.id))


    async def invite_oncall(self, job: Job) -> None:
        """Whoever PagerDuty has on call (or was assigned) joins the incident channel, and the
        channel is told who, or why not."""
        incident = await self._load(job.incident_id)
        if not incident.is_open:
            return
        if incident.card_ts is None or (incident.severity in self.config.channels.dedicated_for
                                        and not incident.channel_ready):
            raise RetryLater("the incident's channel is not ready yet", backoff(job.attempts))
        text = await self._invite(incident, job.payload)  # PagerDuty's failures: the outbox retries
        where = incident_thread(incident)
        if where is not None:
            await post_once(self.slack, where[0], text, thread_ts=where[1], retry=job.attempts > 1,
                            tag=message_tag(incident, "notice", job=job.id))

    async def _invite(self, incident: Incident, payload: dict[str, Any]) -> str:
        level, locale = str(payload.get("level_name", "on-call")), self.config.runbooks.locale
        on_call = await self.paging.on_call(payload)
        if on_call.missing:
            return oncall_invited_text(level, locale, missing=on_call.missing)
        found: list[str] = []
        no_slack_user: list[tuple[str, str | None]] = []
        for who, email in on_call.people:
            slack_id = await self.slack.user_id_by_email(email) if email else None
            if slack_id:
                found.append(slack_id)
            else:
                no_slack_user.append((who, email))
        found = list(dict.fromkeys(found))
        if found:
            await asyncio.to_thread(self._add_responders, incident.id, found)
        refused = await self.slack.invite(incident.channel_id, found) if found and incident.channel_id else []
        return oncall_invited_text(level, locale, found=found, invited=bool(incident.channel_id),
                                   not_on_call=list(on_call.not_on_call), no_slack_user=no_slack_user,
                                   refused=list(refused))


def incident_thread(incident: Incident) -> tuple[str, str | None] | None:
    """Where a message about the incident goes: its channel, else its card's thread; None
    while it has neither yet."""
    if incident.channel_id:
        return incident.channel_id, None
    if incident.card_ts and incident.card_channel_id:
        return incident.card_channel_id, incident.card_ts
    return None


def step_thread(step: RunbookStep, incident: Incident) -> tuple[str, str | None]:
    """Where a runbook step's answers go: its own thread in the incident channel; without a
    channel the runbook already sits in the card's thread (Slack threads do not nest)."""
    if incident.channel_id and step.message_channel == incident.channel_id:
        return incident.channel_id, step.message_ts
    return step.message_channel or incident.card_channel_id or "", incident.card_ts


def message_tag(incident: Incident, kind: str, **extra: Any) -> dict[str, Any]:
    """The metadata payload naming what a message is. The incident's creation time makes the
    key unique across database resets (ids start again at 1)."""
    return {"incident": f"{incident.id}-{int(incident.created_at.timestamp())}", "kind": kind, **extra}


async def post_once(slack: SlackClient, channel: str, text: str, *, tag: dict[str, Any], retry: bool,
                    blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None) -> str:
    """Post a message tagged with metadata; on a retry, first look for the one an earlier
    attempt may have posted (the answer lost to a crash or a timeout) and return its ts."""
    if retry:
        found = await slack.find_message(channel, MESSAGE_EVENT, tag, thread_ts=thread_ts)
        if found is not None:
            log.info("found the message an earlier attempt posted", extra={"channel": channel, **tag})
            return found
    return await slack.post_message(channel, text, blocks=blocks, thread_ts=thread_ts,
                                    metadata={"event_type": MESSAGE_EVENT, "event_payload": tag})


def slack_text(text: str) -> str:
    """Plain text where Slack parses mentions and links (message `text`, topics): what we
    composed stays, but untrusted `<`, `>`, `&` cannot become @channel or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
