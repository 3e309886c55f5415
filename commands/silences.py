"""Silences on the incident card: the Expire button, and the jobs that end a silence in
Alertmanager and redraw the card.

* An approved `alertmanager.silence` (commands.approvals) asks `comment_reference` what its
  comment names (the incident, linked to its card), and hands what it created to
  `record_created` (bot.silences.record: once per silence id).
* Expire (Bolt): the silence is loaded by the token in the button's value, only from the
  incident's own card; the one policy (`Act.EXPIRE_SILENCE`) is asked; one compare-and-set
  decides, and whoever did not win is told privately why.
* `silence.expire` (outbox, no lane): reads the silence in Alertmanager; one already expired
  there (its UI, amtool) is done; else `DELETE /api/v2/silence/{id}`. Run again after a crash,
  it finds the silence expired and records that, once. A refusal for good gives the button back
  with the reason in the timeline.
* `silence.ended` (outbox, no lane, due at the silence's end): redraws the card without it.
* `reconcile_silence`: an approved silence whose run was interrupted after its started mark (a
  crash, or Alertmanager's answer lost after it created the silence) is looked for in
  Alertmanager by its comment, which names the request (bot.silences.marker): found, it is
  recorded ("done before the restart"); not found, it did not happen. Never created twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from slack_bolt.response import BoltResponse

from bot import silences
from bot.actions import ActionOutput, SilenceCreated
from bot.db import Database
from bot.jobs import JOB_SILENCE_ENDED, JOB_SILENCE_EXPIRE
from bot.models import ApprovalRequest, Incident, Job, Silence
from bot.outbox import PermanentError
from bot.param_syntax import parse_silence_matchers
from bot.policy import Act, Policy
from commands.cards import actor_text
from commands.feature import Action, Feature, Middleware
from commands.i18n import Catalog
from commands.ids import SILENCE_EXPIRE
from commands.middleware import authorize, tell
from commands.slack_time import slack_time
from commands.slash import asker_language
from integrations.errors import IntegrationError
from integrations.slack import SlackClient, SlackError

if TYPE_CHECKING:
    from integrations.alertmanager import AlertmanagerClient

__all__ = ["Silences", "comment_reference", "reconcile_silence", "record_created"]

log = logging.getLogger(__name__)

NO_ALERTMANAGER = "Alertmanager is not configured: set ALERTMANAGER_URL and restart the bot"  # the record's words

# What an Expire clicker is told, in their Slack locale; {placeholders} are trusted mrkdwn.
_t = Catalog("silences", {
    "already_expired": {"en": "This silence was already expired by {who} {when}.",
                        "ja": "このサイレンスは {who} が {when} にすでに終了しました。"},
    "being_expired": {"en": "{who} already asked to expire this silence; it is being expired.",
                      "ja": "{who} がすでにこのサイレンスの終了を依頼しました。終了処理中です。"},
    "already_ended": {"en": "This silence already ended {when}.",
                      "ja": "このサイレンスは {when} にすでに終わっています。"},
    "no_alertmanager": {"en": "Alertmanager is not configured (set ALERTMANAGER_URL and restart the bot): the "
                              "silence was not expired.",
                        "ja": "Alertmanager が設定されていません(ALERTMANAGER_URL を設定してボットを再起動して"
                              "ください)。サイレンスは終了していません。"},
    "not_on_a_card": {"en": "This silence is no longer on an incident's card.",
                      "ja": "このサイレンスはもうインシデントのカードにありません。"},
    "not_this_card": {"en": "This button is not on this incident's card; use the card itself.",
                      "ja": "このボタンはこのインシデントのカードのものではありません。"
                            "カードのボタンを使ってください。"},
})


class Silences:
    def __init__(self, db: Database, slack: SlackClient, policy: Policy, alertmanager: AlertmanagerClient | None, *,
                 clock: Callable[[], datetime], on_commit: Callable[[], None], locale: str = "en") -> None:
        self.db, self.slack, self.policy, self.alertmanager = db, slack, policy, alertmanager
        self.clock, self.kick = clock, on_commit
        self.locale = locale  # the configured language (runbooks.locale): when Slack cannot say the clicker's

    def feature(self) -> Feature:
        load = (silence_of_card_button(self.db, self.slack, self.locale),
                authorize(Act.EXPIRE_SILENCE, self.policy, self.slack))
        return Feature(handlers={JOB_SILENCE_EXPIRE: self.expire, JOB_SILENCE_ENDED: self.ended},
                       actions=[Action(SILENCE_EXPIRE, self.on_expire, load)])

    # -- the button -----------------------------------------------------------------------------

    async def on_expire(self, ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
        await ack()
        user, silence = body["user"]["id"], context["silence"]
        if self.alertmanager is None:  # said now, rather than by a job that can only fail
            await _tell(self.slack, respond, user, "no_alertmanager", self.locale)
            return
        now = self.clock()
        claim = await asyncio.to_thread(self._decide, silences.request_expire, silence.id, user, now)
        if claim.won:
            log.info("silence expire requested", extra={"incident": silence.incident_id, "silence": silence.id,
                                                        "user": user})
            self.kick()
            return
        language = await asker_language(self.slack, user, self.locale)
        await tell(respond, user, _why_not(claim.current or silence, now, language))

    # -- the jobs -------------------------------------------------------------------------------

    async def expire(self, job: Job) -> None:
        row = await asyncio.to_thread(self._load, job.payload.get("silence"))
        if row.expired_at is not None or row.expire_requested_at is None:
            return  # recorded by an earlier attempt, or given back after a refusal
        try:
            if self.alertmanager is None:
                raise _Refused(NO_ALERTMANAGER)
            found = await asyncio.to_thread(self.alertmanager.get_silence, row.silence_id)
            # Expired before this job ever called (someone used Alertmanager's UI): done, and said so.
            # On a later attempt it may be our own earlier call that did it: the clicker's, then.
            already = (found.get("status") or {}).get("state") == "expired"
            if not already:
                await asyncio.to_thread(self.alertmanager.expire_silence, row.silence_id)
        except (IntegrationError, _Refused) as exc:
            if isinstance(exc, IntegrationError) and (exc.retryable or exc.retry_after is not None):
                raise  # no answer or server trouble: the outbox retries, and this job reads again
            await asyncio.to_thread(self._decide, silences.expire_failed, row.id, self.clock(), str(exc))
            log.warning("could not expire a silence: %s", exc, extra={"incident": row.incident_id,
                                                                      "silence": row.id})
            self.kick()
            return
        await asyncio.to_thread(self._decide, silences.expired, row.id, self.clock(),
                                already=already and job.attempts == 1)
        log.info("silence expired", extra={"incident": row.incident_id, "silence": row.id, "already": already})
        self.kick()

    async def ended(self, job: Job) -> None:
        def note() -> None:
            with self.db.session() as session:
                silences.ended(session, job.payload.get("silence") or 0, self.clock())

        await asyncio.to_thread(note)
        self.kick()

    # -- storage --------------------------------------------------------------------------------

    def _load(self, silence_id: Any) -> Silence:
        with self.db.read() as session:
            row = session.get(Silence, silence_id) if isinstance(silence_id, int) else None
            if row is None:
                raise PermanentError(f"silence {silence_id} does not exist")
            return row

    def _decide(self, change: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.db.session() as session:
            result = change(session, *args, **kwargs)
            current = result.current if isinstance(result, silences.Claim) else result
            if current is not None:
                session.flush()
                session.expunge(current)
            return result


class _Refused(Exception):
    """Expiring cannot work until a person changes something (the message says what)."""


def _why_not(row: Silence, now: datetime, language: str) -> str:
    """Why an Expire click did nothing, for the clicker alone, in their language."""
    if row.expired_at is not None:
        return _t("already_expired", language, who=actor_text(row.expired_by, language),
                  when=slack_time(row.expired_at, now))
    if row.expire_requested_at is not None:
        return _t("being_expired", language, who=actor_text(row.expire_requested_by, language))
    return _t("already_ended", language, when=slack_time(row.ends_at, now))


def silence_of_card_button(db: Database, slack: SlackClient, locale: str = "en") -> Middleware:
    """The silence an Expire button points at, and its incident: found by the token in the button's
    value, and only when the click came from that incident's card (its channel and ts), so a value
    copied onto another message, or made up, expires nothing. The clicker is told why in their
    language (`locale`: the configured one)."""
    async def load(body: dict[str, Any], context: dict[str, Any], respond: Any,
                   next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        token = str((body.get("actions") or [{}])[0].get("value", ""))
        found = await asyncio.to_thread(_silence_and_incident, db, token)
        container = body.get("container") or {}
        user = body.get("user", {}).get("id", "")
        if found is None:
            return _told_later(_tell(slack, respond, user, "not_on_a_card", locale))
        if (container.get("channel_id"), container.get("message_ts")) != (found[1].card_channel_id,
                                                                           found[1].card_ts):
            log.warning("silence button clicked on a message that is not the incident's card",
                        extra={"incident": found[1].id, "message_ts": container.get("message_ts")})
            return _told_later(_tell(slack, respond, user, "not_this_card", locale))
        context["silence"], context["incident"] = found
        return await next()

    return load


_telling: set[asyncio.Task[None]] = set()  # refusals told after the ack (a reference keeps each task alive)


def _told_later(telling: Coroutine[Any, Any, None]) -> BoltResponse:
    """The ack now (a middleware that does not call next() returns it itself), the refusal in the
    background: finding the clicker's language may take users.info a second."""
    task = asyncio.create_task(telling)
    _telling.add(task)
    task.add_done_callback(_telling.discard)
    return BoltResponse(status=200, body="")


async def _tell(slack: SlackClient, respond: Any, user: str, key: str, fallback: str) -> None:
    await tell(respond, user, _t(key, await asker_language(slack, user, fallback)))


def _silence_and_incident(db: Database, token: str) -> tuple[Silence, Incident] | None:
    with db.read() as session:
        row = silences.find(session, token)
        incident = session.get(Incident, row.incident_id) if row is not None else None
        return (row, incident) if row is not None and incident is not None else None


# -- for the approval flow (commands.approvals) ---------------------------------------------------

async def comment_reference(db: Database, slack: SlackClient, row: ApprovalRequest) -> str:
    """What a silence's comment adds, so that whoever finds it in Alertmanager knows what it is for:
    the incident and the request (bot.silences.marker: how a retry finds it again), linked to the
    card ("" for any other action). Without Slack's permalink (Slack away), a link that opens the
    card's channel: the silence is not held up for it."""
    if row.action != silences.ACTION:
        return ""
    incident = await asyncio.to_thread(_incident, db, row.incident_id)
    channel, ts = incident.card_channel_id or incident.channel_id, incident.card_ts
    link = f"https://slack.com/app_redirect?channel={channel}" if channel else ""
    if channel and ts:
        try:
            link = await slack.permalink(channel, ts)
        except SlackError as exc:
            log.warning("no permalink for the silence's comment: %s", exc, extra={"incident": incident.id})
    return f"{silences.marker(row.incident_id, row.id)} {incident.title[:200]}" + (f" {link}" if link else "")


async def record_created(db: Database, row: ApprovalRequest, output: ActionOutput, now: datetime) -> None:
    """Record the silence an approved request's run created (nothing for other actions)."""
    if output.silence is not None:
        await asyncio.to_thread(_record, db, row, output.silence, now)


async def reconcile_silence(db: Database, alertmanager: AlertmanagerClient | None, row: ApprovalRequest,
                            now: datetime) -> tuple[bool, str, dict[str, Any]] | None:
    """(happened, what is true, facts) for a silence request interrupted after its started mark,
    from Alertmanager's listing (None for any other action). Found: recorded for the card, once.
    Alertmanager unreachable: its IntegrationError, so the outbox tries again later."""
    if row.action != silences.ACTION:
        return None
    if alertmanager is None:
        return False, ("interrupted before its result was recorded, and Alertmanager is no longer configured "
                       "(ALERTMANAGER_URL), so it cannot be looked for; not run again: check Alertmanager's "
                       "silences"), {}
    matchers = parse_silence_matchers(str(row.params["matchers"]))
    # Narrowed by the alertname the matchers must name; the comment and creator decide (bot.silences.made_by).
    narrow = [str(m) for m in matchers if m.name == "alertname" and m.is_equal and not m.is_regex][:1]
    listing = await asyncio.to_thread(alertmanager.list_silences, narrow)
    created = silences.made_by(listing, row)
    if created is None:
        return False, ("did not happen: Alertmanager has no silence whose comment names this request; not run "
                       "again; run it again by a new request"), {"found": None}
    await asyncio.to_thread(_record, db, row, created, now)
    return True, (f"done before the restart: silence {created.silence_id} is in Alertmanager, found by its comment "
                  "(reconciled with Alertmanager; not created again)"), {"found": created.silence_id}


def _record(db: Database, row: ApprovalRequest, created: SilenceCreated, now: datetime) -> None:
    with db.session() as session:
        incident = session.get(Incident, row.incident_id)
        if incident is None:
            raise PermanentError(f"incident {row.incident_id} does not exist")
        if silences.record(session, incident, created, approval_id=row.id, now=now) is not None:
            log.info("silence recorded", extra={"incident": incident.id, "approval": row.id,
                                                "silence_id": created.silence_id})


def _incident(db: Database, incident_id: int) -> Incident:
    with db.read() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise PermanentError(f"incident {incident_id} does not exist")
        return incident
