"""Bolt middleware: what every Slack action on an incident needs, written once.

* `incident_of_card_button` / `incident_of_step_button` load what a click acts on into
  `context["incident"]` (and `context["step"]`), or answer that it is gone;
* `authorize(act)` asks the one policy (bot.policy) whether the clicker may, and answers a
  refusal privately, naming why, before any listener runs;
* `act_once` answers a retried or replayed request without acting on it again;
* `log_request` logs every request as it arrives; the loaders log the incident it concerns.

A middleware that refuses answers the request itself (an empty 200: Slack wants an answer
within 3 s) and does not call `next()`, so the listener never runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from slack_bolt.response import BoltResponse
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col

from bot import steps
from bot.db import Database
from bot.logs import bind_incident
from bot.models import Incident, SlackDelivery
from bot.policy import Act, Decision, Policy, Requester
from commands.cards import read_card_button_value
from commands.feature import Middleware
from integrations.redis_store import RedisStore, RedisUnavailable
from integrations.slack import SlackClient, SlackError

__all__ = ["Middleware", "act_once", "authorize", "delivery_key", "incident_of_card_button", "incident_of_step_button",
           "log_request", "tell", "who_asks"]

log = logging.getLogger(__name__)


async def tell(respond: Any, user: str, text: str) -> None:
    """A private answer to whoever clicked, through response_url: chat.postEphemeral fails for
    someone not in the channel, which is exactly who gets most refusals."""
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception as exc:  # noqa: BLE001 - a courtesy note; the click itself was handled
        log.warning("could not tell %s: %s (%r)", user, text, exc)


_telling: set[asyncio.Task[None]] = set()  # refusals being sent (a reference keeps each task alive)


def _refuse(respond: Any, body: dict[str, Any], text: str) -> BoltResponse:
    """Answer Slack now (an empty 200 is the ack) and the clicker privately, in the background:
    a listener middleware that does not call next() must return the response itself."""
    task = asyncio.create_task(tell(respond, body.get("user", {}).get("id", ""), text))
    _telling.add(task)
    task.add_done_callback(_telling.discard)
    return BoltResponse(status=200, body="")


def _value(body: dict[str, Any]) -> str:
    actions = body.get("actions") or [{}]
    return str(actions[0].get("value", ""))


def incident_of_card_button(db: Database, value: Callable[[dict[str, Any]], str] = _value) -> Middleware:
    """The incident whose card holds the button: found by the card's token in the button's value,
    and only if the click came from that very message (the card's channel and ts), so a value
    copied onto another message, or made up, acts on nothing. `value`: where a card element other
    than a button carries it (a menu's chosen option: commands.silence_command)."""
    async def load(body: dict[str, Any], context: dict[str, Any], respond: Any,
                   next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        parsed = read_card_button_value(value(body))
        incident = await asyncio.to_thread(_incident_by_card, db, parsed[0]) if parsed else None
        if incident is None:
            return _refuse(respond, body, "This button does not belong to an incident that still exists.")
        container = body.get("container") or {}
        clicked_on = (container.get("channel_id"), container.get("message_ts"))
        # A card not recorded yet has no ts: (None, None) must not match a click without a container.
        if incident.card_ts is None or clicked_on != (incident.card_channel_id, incident.card_ts):
            log.warning("card button clicked on a message that is not the incident's card",
                        extra={"incident": incident.id, "message_ts": container.get("message_ts")})
            return _refuse(respond, body, "This button is not on this incident's card; use the card itself.")
        assert parsed is not None
        context["incident"], context["seen_level"] = incident, parsed[1]
        _log_target(body, incident)
        bind_incident(incident.id)  # every line logged for this click names the incident
        return await next()

    return load


def incident_of_step_button(db: Database) -> Middleware:
    async def load(body: dict[str, Any], context: dict[str, Any], respond: Any,
                   next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        found = await asyncio.to_thread(_step_and_incident, db, _value(body))
        if found is None:
            return _refuse(respond, body, "This runbook step is no longer available.")
        context["step"], context["incident"] = found
        _log_target(body, found[1])
        bind_incident(found[1].id)
        return await next()

    return load


def authorize(act: Act | Callable[[dict[str, Any]], Act], policy: Policy, slack: SlackClient) -> Middleware:
    """`act` names what the click does, or derives it from the context (a step's kind)."""
    async def check(body: dict[str, Any], context: dict[str, Any], respond: Any,
                    next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        incident: Incident = context["incident"]
        wanted = act if isinstance(act, Act) else act(context)
        channel = policy.deciding_channel(incident)
        requester = await who_asks(slack, body["user"]["id"], channel)
        decision = policy.decide(wanted, requester, incident)
        if not decision.allowed:
            log.info("refused", extra={"incident": incident.id, "user": requester.user, "act": wanted.name,
                                       "reason": decision.reason})
            return _refuse(respond, body, refusal(decision, wanted, requester))
        return await next()

    return check


MEMBERSHIP_WITHIN = 1.5  # seconds a membership check may take: it runs before the ack (Slack's 3 s)


async def who_asks(slack: SlackClient, user: str, channel: str | None) -> Requester:
    """Who is asking, and whether Slack says they are in `channel` (None: it could not say, in
    MEMBERSHIP_WITHIN seconds and SlackClient.in_channel's pages)."""
    if channel is None:
        return Requester(user, None, False)
    try:
        member = await asyncio.wait_for(slack.in_channel(channel, user), MEMBERSHIP_WITHIN)
    except SlackError as exc:
        return Requester(user, channel, None, exc.error)
    except TimeoutError:
        return Requester(user, channel, None, "timeout")
    return Requester(user, channel, member, None if member is not None else "too_many_members")


def refusal(decision: Decision, act: Act, requester: Requester) -> str:
    where = f"<#{requester.channel}>" if requester.channel else "the incident's channel"
    if decision.reason == "membership_unknown":
        return f"Could not check that you are in {where} ({requester.lookup_error}); try again."
    if decision.reason == "not_a_responder":
        return (f"Only this incident's responders, on-call and commander can {act.value}: it has no channel of its "
                "own. Ask its commander, or add yourself to the responders in ONCALL_CONFIG.")
    return f"Only members of {where} can {act.value}; join the channel first."


async def log_request(body: dict[str, Any], next: Callable[[], Awaitable[BoltResponse]]) -> None:
    """Every request, as it arrives (a global middleware runs before the listener is chosen)."""
    actions = body.get("actions") or []
    log.info("slack request", extra={
        "type": body.get("type") or ("command" if body.get("command") else (body.get("event") or {}).get("type")),
        "action": actions[0].get("action_id") if actions else body.get("command"),
        "user": (body.get("user") or {}).get("id") or body.get("user_id")})
    await next()


def _log_target(body: dict[str, Any], incident: Incident) -> None:
    actions = body.get("actions") or [{}]
    log.info("slack action", extra={"incident": incident.id, "action": actions[0].get("action_id"),
                                    "user": (body.get("user") or {}).get("id")})


REPLAY_WINDOW = timedelta(minutes=10)  # Slack's signatures are valid for 5 min; keep keys twice that


def delivery_key(body: dict[str, Any]) -> str | None:
    """What makes a Slack request the same request when it comes again: an interaction's
    trigger id with its action and time, a modal's submission (view id and hash, and its
    trigger id: a modal submitted again after `response_action: errors` keeps its id and hash,
    and that corrected submission must be acted on), a slash command's trigger id, an event's id."""
    if body.get("type") == "block_actions":
        action = (body.get("actions") or [{}])[0]
        return f"action:{body.get('trigger_id')}:{action.get('action_id')}:{action.get('action_ts')}"
    if body.get("type") == "view_submission" and (body.get("view") or {}).get("id"):
        return f"view:{body['view']['id']}:{body['view'].get('hash')}:{body.get('trigger_id')}"
    if body.get("command") and body.get("trigger_id"):
        return f"command:{body['trigger_id']}"
    if body.get("type") == "event_callback" and body.get("event_id"):
        return f"event:{body['event_id']}"
    return None


def act_once(db: Database, clock: Callable[[], datetime], redis: RedisStore | None = None) -> Middleware:
    """A retried or replayed request is answered (an empty 200) and not acted on again: Slack
    redelivers when its 3 s passed without an answer (X-Slack-Retry-Num), and a captured signed
    request stays valid for five minutes. Across replicas: Redis, one SET NX, when it is
    configured and up; else the database (SlackDelivery), slower and as correct. (A redelivery
    that straddles Redis going down or coming back is decided by the other, which has not seen
    it: the price of not writing both every time.)"""
    async def first_time(key: str) -> bool:
        if redis is not None:
            try:
                return await redis.first_time(f"slack:{key}", REPLAY_WINDOW)
            except RedisUnavailable:
                pass  # logged by the store, once: database-only coordination until it answers
        return await asyncio.to_thread(_first_time, db, key[:255], clock())

    async def once(body: dict[str, Any], request: Any,
                   next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        key = delivery_key(body)
        if key is None or await first_time(key):
            return await next()
        retry = (request.headers.get("x-slack-retry-num") or [None])[0] if request is not None else None
        log.info("duplicate Slack request ignored", extra={"key": key, "retry_num": retry})
        return BoltResponse(status=200, body="")

    return once


def _first_time(db: Database, key: str, now: datetime) -> bool:
    with db.session() as session:
        dialect = session.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        # RETURNING, not rowcount: psycopg reports -1 (unknown) for this insert, which read as "first time".
        inserted = session.execute(insert(SlackDelivery).values(key=key, received_at=now)
                                   .on_conflict_do_nothing(index_elements=["key"])
                                   .returning(col(SlackDelivery.key))).first()
        session.execute(delete(SlackDelivery).where(SlackDelivery.received_at < now - REPLAY_WINDOW))  # type: ignore[arg-type]
        return inserted is not None


def _incident_by_card(db: Database, token: str) -> Incident | None:
    with db.read() as session:
        return session.scalars(select(Incident).where(col(Incident.card_token) == token)).first()


def _step_and_incident(db: Database, token: str) -> tuple[Any, Incident] | None:
    with db.read() as session:
        step = steps.find_step(session, token) if token else None
        incident = session.get(Incident, step.incident_id) if step is not None else None
        if step is None or incident is None or step.message_channel is None:
            return None
        return step, incident
