"""Bolt middleware: what every Slack action on an incident needs, written once.

* `incident_of_card_button` / `incident_of_step_button` load what a click acts on into
  `context["incident"]` (and `context["step"]`), or answer that it is gone;
* `authorize(act)` asks the one policy (bot.policy) whether the clicker may, and answers a
  refusal privately, naming why, before any listener runs;
* `log_request` logs every request as it arrives; the loaders log the incident it concerns.

A middleware that refuses answers the request itself (an empty 200: Slack wants an answer
within 3 s) and does not call `next()`, so the listener never runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.response import BoltResponse

from bot import steps
from bot.db import Database
from bot.models import Incident
from bot.policy import Act, Decision, Policy, Requester
from integrations.slack import SlackClient, SlackError

__all__ = ["Middleware", "authorize", "incident_of_card_button", "incident_of_step_button", "log_request", "tell"]

log = logging.getLogger(__name__)

Middleware = Callable[..., Awaitable[None]]


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


def incident_of_card_button(db: Database) -> Middleware:
    async def load(body: dict[str, Any], context: dict[str, Any], respond: Any,
                   next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        value = _value(body)
        incident = await asyncio.to_thread(_incident, db, int(value)) if value.isdigit() else None
        if incident is None:
            text = "This incident no longer exists." if value.isdigit() else "This button does not belong to an incident."
            return _refuse(respond, body, text)
        context["incident"] = incident
        _log_target(body, incident)
        return await next()

    return load


def incident_of_step_button(db: Database) -> Middleware:
    async def load(body: dict[str, Any], context: dict[str, Any], respond: Any,
                   next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        found = await asyncio.to_thread(_step_and_incident, db, _value(body))
        if found is None:
            return _refuse(respond, body, "This runbook step is no longer available.")
        context["step"], context["incident"] = found
        _log_target(body, found[1])
        return await next()

    return load


def authorize(act: Act | Callable[[dict[str, Any]], Act], policy: Policy, slack: SlackClient) -> Middleware:
    """`act` names what the click does, or derives it from the context (a step's kind)."""
    async def check(body: dict[str, Any], context: dict[str, Any], respond: Any,
                    next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        incident: Incident = context["incident"]
        step = context.get("step")
        wanted = act if isinstance(act, Act) else act(context)
        channel = step.message_channel if step is not None else policy.deciding_channel(incident)
        requester = await _requester(slack, body["user"]["id"], channel)
        decision = policy.decide(wanted, requester, incident)
        if not decision.allowed:
            log.info("refused", extra={"incident": incident.id, "user": requester.user, "act": wanted.name,
                                       "reason": decision.reason})
            return _refuse(respond, body, refusal(decision, wanted, requester))
        return await next()

    return check


async def _requester(slack: SlackClient, user: str, channel: str | None) -> Requester:
    if channel is None:
        return Requester(user, None, False)
    try:
        return Requester(user, channel, user in await slack.channel_members(channel))
    except SlackError as exc:
        return Requester(user, channel, None, exc.error)


def refusal(decision: Decision, act: Act, requester: Requester) -> str:
    where = f"<#{requester.channel}>" if requester.channel else "the incident's channel"
    if decision.reason == "membership_unknown":
        return f"Could not check that you are in {where} ({requester.lookup_error}); try again."
    return f"Only members of {where} can {act.value}; join the channel first."


async def log_request(body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> None:
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


def _incident(db: Database, incident_id: int) -> Incident | None:
    with db.read() as session:
        return session.get(Incident, incident_id)


def _step_and_incident(db: Database, token: str) -> tuple[Any, Incident] | None:
    with db.read() as session:
        step = steps.find_step(session, token) if token else None
        incident = session.get(Incident, step.incident_id) if step is not None else None
        if step is None or incident is None or step.message_channel is None:
            return None
        return step, incident
