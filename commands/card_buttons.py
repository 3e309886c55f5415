"""The incident card's buttons: Ack, Resolve, Page / Escalate now.

Each listener acknowledges within Slack's 3 s and makes one domain call in a short
transaction; the middleware before it (commands.middleware) has already loaded the
incident and checked that the clicker may act on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlmodel import Session

from bot import escalation
from bot.config import OncallConfig
from bot.db import Database
from bot.models import Incident
from bot.policy import Act, Policy
from commands.feature import Action, Feature
from commands.ids import CARD_ACK, CARD_ESCALATE, CARD_RESOLVE
from commands.middleware import authorize, incident_of_card_button, tell
from integrations.slack import SlackClient

__all__ = ["card_buttons"]

# One domain call: (session, incident, user, now, level the clicker saw) -> the private answer
# when nothing changed, "" when something did.
Apply = Callable[[Session, Incident, str, datetime, int], str]


def card_buttons(db: Database, config: OncallConfig, slack: SlackClient, policy: Policy, *,
                 clock: Callable[[], datetime], on_commit: Callable[[], None]) -> Feature:
    def listener(apply: Apply) -> Any:
        async def on_click(ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
            await ack()
            user = body["user"]["id"]
            reply = await asyncio.to_thread(_apply, db, context["incident"].id, user, clock(), context["seen_level"],
                                            apply)
            on_commit()
            if reply:
                await tell(respond, user, reply)

        return on_click

    def escalate_now(session: Session, incident: Incident, user: str, now: datetime, seen: int) -> str:
        try:
            if escalation.escalate_now(session, incident, user, now, "slack", config, seen_level=seen):
                return ""
        except escalation.AlreadyEscalated as exc:
            return (f"Not escalated again: it was escalated since this card was drawn (now PagerDuty level "
                    f"{exc.level}). Click again to go one level higher.")
        return "Nothing to escalate: the top level is already paged, or the incident is resolved."

    def action(action_id: str, act: Act, apply: Apply) -> Action:
        return Action(action_id, listener(apply), (incident_of_card_button(db), authorize(act, policy, slack)))

    return Feature(actions=[action(CARD_ACK, Act.ACK, _ack), action(CARD_RESOLVE, Act.RESOLVE, _resolve),
                            action(CARD_ESCALATE, Act.ESCALATE, escalate_now)])


def _apply(db: Database, incident_id: int, user: str, now: datetime, seen: int, apply: Apply) -> str:
    with db.session() as session:
        incident = session.get(Incident, incident_id, with_for_update=True)
        if incident is None:
            return "This incident no longer exists."
        return apply(session, incident, user, now, seen)


def _ack(session: Session, incident: Incident, user: str, now: datetime, seen: int) -> str:
    if escalation.acknowledge(session, incident, user, now, "slack"):
        return ""
    if not incident.is_open:
        return "This incident is already resolved."
    return f"Already acknowledged{f' by <@{incident.acknowledged_by}>' if incident.acknowledged_by else ''}."


def _resolve(session: Session, incident: Incident, user: str, now: datetime, seen: int) -> str:
    return "" if escalation.resolve(session, incident, user, now, "slack") else "This incident is already resolved."
