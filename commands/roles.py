"""`/incident assign` and `/incident update`: an incident's roles and its status updates, from Slack.

`assign commander|scribe|comms @user` gives the role (bot.roles records it on the timeline and
refreshes the card) and invites the person to the incident's channel through the outbox.
`update` opens a modal (what is known, impact, next steps); its submission is recorded and reset
the status-update reminder in one transaction, and two outbox jobs post it, each once (message
tags): in the incident's channel (or its card's thread) and in the thread of its announcement.

Both are subcommands of commands.incident_command, which hands them its own two steps: the
policy's refusal, worded for the asker (`refusal`), and a change made under the incident's row
lock (`changed`), so they are authorised and answered exactly like the other subcommands.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlmodel import Session, col

from bot import roles
from bot.config import OncallConfig
from bot.db import Database
from bot.jobs import JOB_ROLE_INVITE, JOB_STATUS_UPDATE, JOB_STATUS_UPDATE_ANNOUNCE
from bot.models import Incident, Job
from bot.outbox import PermanentError, RetryLater, backoff
from bot.policy import Act
from bot.roles import ROLES, UPDATE_FIELDS, Role, StatusUpdate
from commands.blockkit import clip, escape
from commands.feature import Feature
from commands.i18n import Catalog
from commands.ids import STATUS_UPDATE_VIEW
from commands.notices import mention, plain_text
from commands.role_blocks import read_update, role_name, update_message, update_modal
from commands.slack_sync import incident_thread, message_tag, post_once, waiting_for_setup
from commands.slash import Answer, within_or_none
from integrations.slack import SlackClient, SlackError

__all__ = ["Asking", "RoleCommands", "parse_assign"]

log = logging.getLogger(__name__)

# `<@U123>` or `<@U123|name>`: how Slack sends a mention in a command's text (should_escape).
_ASSIGN = re.compile(r"(\S+)\s+<@([UW][A-Z0-9]{2,})(?:\|([^<>]*))?>")

_t = Catalog("roles", {
    "usage": {"en": "Give the role and the person: `/incident assign commander @name` (roles: {roles}; one person, "
                    "mentioned as Slack completes it).",
              "ja": "役割と担当者を指定してください: `/incident assign commander @名前`(役割: {roles}。"
                    "Slack の補完で 1 人をメンションしてください)。"},
    "assigned": {"en": ":busts_in_silhouette: {who} is now the *{role}* of incident #{id}.",
                 "ja": ":busts_in_silhouette: {who} をインシデント #{id} の *{role}* にしました。"},
    "reassigned": {"en": ":busts_in_silhouette: {who} is now the *{role}* of incident #{id}, instead of {previous}.",
                   "ja": ":busts_in_silhouette: インシデント #{id} の *{role}* を {previous} から {who} "
                         "に交代しました。"},
    "invited": {"en": "They are invited to this channel.", "ja": "このチャンネルに招待します。"},
    "same": {"en": "{who} is already its *{role}*.", "ja": "{who} はすでに *{role}* です。"},
    "update_open": {"en": ":memo: The status update form is open: what is known, the impact, the next steps.",
                    "ja": ":memo: 状況報告のフォームを開きました(分かっていること、影響、次の対応)。"},
    "update_failed": {"en": "Could not open the status update form ({error}); run `/incident update` again.",
                      "ja": "状況報告のフォームを開けませんでした({error})。もう一度 `/incident update` "
                            "を実行してください。"},
    "update_empty": {"en": "Fill in at least one of the three.", "ja": "3 つのうち少なくとも 1 つを記入してください。"},
    "update_gone": {"en": "This incident no longer exists.", "ja": "このインシデントはもう存在しません。"},
    "update_not_yours": {"en": "This form was opened by someone else.", "ja": "このフォームは別の人が開いたものです。"},
    "update_refused": {"en": "You may no longer post status updates for this incident (see `/incident update`).",
                       "ja": "このインシデントの状況報告はもう投稿できません"
                             "(`/incident update` で理由を確認できます)。"},
    "invite_failed": {"en": ":warning: Could not invite {who} ({role}) to this channel: {error}. Invite them by hand.",
                      "ja": ":warning: {who}({role})をこのチャンネルに招待できませんでした: {error}。"
                            "手動で招待してください。"},
})


class Asking(Protocol):
    """What a subcommand reads of an `/incident` request (commands.incident_command.Ask)."""

    @property
    def user(self) -> str: ...
    @property
    def rest(self) -> str: ...
    @property
    def language(self) -> str: ...
    @property
    def trigger_id(self) -> str: ...


@dataclass(frozen=True)
class _Submitter:
    """The person submitting the update modal, as the policy's refusal reads an asker."""

    user: str
    language: str


Change = Callable[[Session, Incident, datetime], Answer]
Changed = Callable[[Act, Any, Incident, Change], Awaitable[Answer]]
Refusal = Callable[[Act, Any, Incident], Awaitable[Answer | None]]


def parse_assign(text: str) -> tuple[Role, str, str | None] | None:
    """(role, user id, the name Slack sent with the mention) from `commander <@U1|ann>`; None
    for anything else (another word, no mention, two people, text after it)."""
    found = _ASSIGN.fullmatch(text.strip())
    if found is None or found.group(1).lower() not in ROLES:
        return None
    role: Role = next(r for r in ROLES if r == found.group(1).lower())
    return role, found.group(2), (found.group(3) or None)


class RoleCommands:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, *, clock: Callable[[], datetime],
                 on_commit: Callable[[], None], changed: Changed, refusal: Refusal) -> None:
        self.db, self.config, self.slack, self.clock, self.on_commit = db, config, slack, clock, on_commit
        self.changed, self.refusal = changed, refusal
        self.locale = config.runbooks.locale  # the channel's language (card, posts)
        self.announce = config.channels.announce

    def feature(self) -> Feature:
        return Feature(handlers=waiting_for_setup({
            JOB_ROLE_INVITE: self.invite, JOB_STATUS_UPDATE: self.post_in_incident,
            JOB_STATUS_UPDATE_ANNOUNCE: self.post_in_announcement}, self.announce),
            views={STATUS_UPDATE_VIEW: self.on_update_submitted})

    # -- /incident assign ------------------------------------------------------------------------

    async def assign(self, ask: Asking, incident: Incident) -> Answer:
        language = ask.language
        parsed = parse_assign(ask.rest)
        if parsed is None:
            roles_list = ", ".join(f"`{r}` ({role_name(r, language)})" if language != "en" else f"`{r}`"
                                   for r in ROLES)
            return Answer(_t("usage", language, roles=roles_list))
        role, user, label = parsed
        current = roles.holder(incident, role)
        names = await self._names([user, *([current] if current and current != user else [])], {user: label})

        def change(session: Session, inc: Incident, now: datetime) -> Answer:
            done = roles.assign(session, inc, role, user, ask.user, now, names=names)
            shown = role_name(role, language)
            if not done.changed:
                return Answer(_t("same", language, who=mention(user), role=shown))
            text = _t("reassigned", language, who=mention(user), role=shown, id=inc.id,
                      previous=mention(done.previous)) if done.previous else \
                _t("assigned", language, who=mention(user), role=shown, id=inc.id)
            return Answer(text + ("\n" + _t("invited", language) if inc.channel_id else ""))

        return await self.changed(Act.ASSIGN_ROLE, ask, incident, change)

    async def _names(self, users: list[str], known: dict[str, str | None]) -> dict[str, str]:
        """How the timeline calls each person ("@ann"): the name Slack sent with the mention,
        else users.info's; someone Slack is slow about keeps their id."""
        async def name(user: str) -> str | None:
            return known.get(user) or await within_or_none(self.slack.user_name(user))

        found = await asyncio.gather(*(name(u) for u in users))
        return {user: "@" + clip(n, 80) for user, n in zip(users, found, strict=True) if n}

    async def invite(self, job: Job) -> None:
        """The person given a role joins the incident's channel; the channel is told if Slack refuses."""
        incident = await self._load(job.incident_id)
        user, role = str(job.payload.get("user", "")), str(job.payload.get("role", ""))
        if not incident.channel_id or not user:
            return
        refused = await self.slack.invite(incident.channel_id, [user])
        if refused:
            known = next((r for r in ROLES if r == role), None)
            shown = role_name(known, self.locale) if known else plain_text(role, 32)
            text = _t("invite_failed", self.locale, who=mention(user), role=shown,
                      error=", ".join(plain_text(error, 100) for _, error in refused))
            await post_once(self.slack, incident.channel_id, text, retry=job.attempts > 1,
                            tag=message_tag(incident, "notice", job=job.id))

    # -- /incident update ------------------------------------------------------------------------

    async def update(self, ask: Asking, incident: Incident) -> Answer:
        refused = await self.refusal(Act.POST_UPDATE, ask, incident)
        if refused is not None:
            return refused
        try:
            await self.slack.open_view(ask.trigger_id, update_modal(incident, ask.user, ask.language))
        except SlackError as exc:  # e.g. the trigger's 3 s passed
            log.warning("could not open the status update modal: %s", exc, extra={"incident": incident.id})
            return Answer(_t("update_failed", ask.language, error=escape(exc.error)))
        return Answer(_t("update_open", ask.language))

    async def on_update_submitted(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The modal submitted: at least one field, the incident still there, the same person,
        still allowed; then recorded (the posts follow from the outbox) and the modal closed."""
        submitted = read_update(view)
        user = str((body.get("user") or {}).get("id", ""))
        language = submitted.language if submitted.language in ("en", "ja") else "en"
        error: str | None = None
        incident = None
        if submitted.empty:
            error = _t("update_empty", language)
        else:
            incident = await asyncio.to_thread(self._incident_by_token, submitted.token)
            if incident is None:
                error = _t("update_gone", language)
            elif user != submitted.user:
                error = _t("update_not_yours", language)
            elif await self.refusal(Act.POST_UPDATE, _Submitter(user, language), incident) is not None:
                error = _t("update_refused", language)
        if error is None and incident is not None:
            posted = await asyncio.to_thread(self._post, incident.id, user, submitted.fields, str(view.get("id", "")))
            error = None if posted else _t("update_gone", language)
        if error is not None:
            await ack(response_action="errors", errors={UPDATE_FIELDS[0]: error})
            return
        await ack()
        self.on_commit()
        log.info("status update posted", extra={"incident": incident.id if incident else None, "user": user})

    def _post(self, incident_id: int | None, user: str, fields: dict[str, str], view: str) -> StatusUpdate | None:
        with self.db.session() as session:
            incident = session.get(Incident, incident_id, with_for_update=True)
            if incident is None:
                return None
            return roles.post_update(session, incident, user, fields, self.clock(), self.config, view=view or None)

    async def post_in_incident(self, job: Job) -> None:
        incident, update = await asyncio.to_thread(self._update, job)
        where = incident_thread(incident)
        if where is None:
            raise RetryLater("the incident is not in Slack yet", backoff(job.attempts))
        text, blocks = update_message(update, incident, self.locale, in_announcement=False)
        await post_once(self.slack, where[0], text, blocks=blocks, thread_ts=where[1], retry=job.attempts > 1,
                        tag=message_tag(incident, "status_update", entry=update.entry_id, where="incident"))

    async def post_in_announcement(self, job: Job) -> None:
        incident, update = await asyncio.to_thread(self._update, job)
        if not incident.channel_id or incident.private:
            return  # its card is the announcement (posted above), or the announcement tells no details
        if incident.announce_ts is None:
            raise RetryLater("the announcement is not posted yet", backoff(job.attempts))
        text, blocks = update_message(update, incident, self.locale, in_announcement=True)
        await post_once(self.slack, self.announce, text, blocks=blocks, thread_ts=incident.announce_ts,
                        retry=job.attempts > 1,
                        tag=message_tag(incident, "status_update", entry=update.entry_id, where="announcement"))

    # -- storage -----------------------------------------------------------------------------------

    async def _load(self, incident_id: int | None) -> Incident:
        incident = await asyncio.to_thread(self._get, incident_id)
        if incident is None:
            raise PermanentError(f"incident {incident_id} does not exist")
        return incident

    def _get(self, incident_id: int | None) -> Incident | None:
        with self.db.read() as session:
            return session.get(Incident, incident_id)

    def _incident_by_token(self, token: str) -> Incident | None:
        if not token:
            return None
        with self.db.read() as session:
            return session.scalars(select(Incident).where(col(Incident.card_token) == token)).first()

    def _update(self, job: Job) -> tuple[Incident, StatusUpdate]:
        with self.db.read() as session:
            incident = session.get(Incident, job.incident_id)
            update = roles.update_of(session, int(job.payload.get("entry") or 0))
            if incident is None or update is None:
                raise PermanentError(f"status update {job.payload.get('entry')} of incident {job.incident_id} "
                                     "does not exist")
            return incident, update
