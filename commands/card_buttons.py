"""The incident card's buttons: Ack, Resolve, Page / Escalate now, the state buttons (the
states it is likely to move to next: bot.card_memory.likely_next), and a storm card's Split out
buttons (one per group row: bot.storm_split).

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

from bot import escalation, incident_ops, storm_split
from bot.card_memory import likely_next
from bot.config import OncallConfig
from bot.db import Database
from bot.lifecycle import InvalidTransition
from bot.models import Incident, IncidentStatus
from bot.policy import Act, Policy
from commands.feature import Action, Feature
from commands.i18n import Catalog
from commands.ids import CARD_ACK, CARD_ESCALATE, CARD_RESOLVE, CARD_STATE, read_card_state_action
from commands.middleware import authorize, incident_of_card_button, tell
from commands.slash import asker_language
from commands.storm_blocks import STORM_SPLIT, read_split_value, split_card_value
from integrations.slack import SlackClient

__all__ = ["card_buttons", "split_answer", "split_group"]

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
                            action(CARD_ESCALATE, Act.ESCALATE, escalate_now),
                            _state_button(db, config, slack, policy, clock=clock, on_commit=on_commit),
                            _split_button(db, config, slack, policy, clock=clock, on_commit=on_commit)])


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


# -- the state buttons ---------------------------------------------------------------------------------

_STATE_REPLIES: dict[str, dict[str, str]] = {
    "stale": {"en": "Not changed: it is *{state}* now (it changed since the card showed *{shown}*). The card "
                    "shows the states it can move to from here.",
              "ja": "変更していません。現在の状態は *{state}* です(カードが *{shown}* を表示した後に変わりました)。"
                    "カードにここから移れる状態が表示されます。"},
    "gone": {"en": "This incident no longer exists.", "ja": "このインシデントはもう存在しません。"},
}


def _state_button(db: Database, config: OncallConfig, slack: SlackClient, policy: Policy, *,
                  clock: Callable[[], datetime], on_commit: Callable[[], None]) -> Action:
    """A state button: moves the incident from the state the card showed to the one offered, by
    bot.incident_ops.set_state (the timeline, the card); a click on a card showing a state that
    is no longer the incident's is refused privately, naming the state it is in now."""
    async def on_click(ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
        await ack()
        user = body["user"]["id"]
        parsed = read_card_state_action(str((body.get("actions") or [{}])[0].get("action_id", "")))
        if parsed is None:
            return
        reply = await asyncio.to_thread(_move, db, config, context["incident"].id, user, clock(), *parsed)
        on_commit()
        if reply:
            language = await asker_language(slack, user, config.runbooks.locale)
            key, values = reply
            texts = _STATE_REPLIES[key]
            await tell(respond, user, texts.get(language, texts["en"]).format(**values))

    return Action(CARD_STATE, on_click, (incident_of_card_button(db), authorize(Act.CHANGE_STATE, policy, slack)))


def _move(db: Database, config: OncallConfig, incident_id: int, user: str, now: datetime, shown: str,
          to: str) -> tuple[str, dict[str, str]] | None:
    """None when moved; else what to answer (a key of _STATE_REPLIES and its values)."""
    with db.session() as session:
        incident = session.get(Incident, incident_id, with_for_update=True)
        if incident is None:
            return "gone", {}
        current = IncidentStatus(incident.status).value
        offered = {state.value: state for state in likely_next(incident)}
        if current != shown or to not in offered:  # a made-up id offers nothing either
            return "stale", {"state": current, "shown": shown}
        try:
            incident_ops.set_state(session, incident, offered[to], user, now, config)
        except InvalidTransition:
            return "stale", {"state": current, "shown": shown}
        return None


# -- a storm card's Split out buttons --------------------------------------------------------------

_split_t = Catalog("storm_split", {
    "split": {"en": "Split out into incident #{id}: it gets its own channel, card and paging.",
              "ja": "インシデント #{id} に分離しました: 専用のチャンネル、カード、呼び出しを持ちます。"},
    "gone": {"en": "This storm no longer exists.", "ja": "このストームはもう存在しません。"},
    "not_in_storm": {"en": "Not split: that group is no longer in this storm (split out already?).",
                     "ja": "分離していません: そのグループはもうこのストームにありません(分離済みですか?)。"},
    "not_firing": {"en": "Not split: that group is resolved; nothing of it is left to respond to.",
                   "ja": "分離していません: そのグループは解決済みで、対応することは残っていません。"},
})


def _split_button(db: Database, config: OncallConfig, slack: SlackClient, policy: Policy, *,
                  clock: Callable[[], datetime], on_commit: Callable[[], None]) -> Action:
    """A row's Split out button: the group leaves the storm for an incident of its own. Loaded and
    authorised like the card's other buttons (the card's token, from that very card, by a
    member of its channel): the value is `<group id>:<the card's value>`."""
    async def on_click(ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
        await ack()
        user = body["user"]["id"]
        parsed = read_split_value(str((body.get("actions") or [{}])[0].get("value", "")))
        if parsed is None:
            return
        done = await asyncio.to_thread(split_group, db, config, context["incident"].id, parsed[0], user, clock())
        on_commit()
        language = await asker_language(slack, user, config.runbooks.locale)
        await tell(respond, user, split_answer(done, language))

    return Action(STORM_SPLIT, on_click, (incident_of_card_button(db, split_card_value),
                                          authorize(Act.CHANGE_STATE, policy, slack)))


def split_group(db: Database, config: OncallConfig, storm_id: int, group_id: int, user: str,
                now: datetime) -> storm_split.Split:
    """The button's and `/incident split`'s transaction (storm_split's lock order: group, then storm)."""
    with db.session() as session:
        return storm_split.split_out(session, config, storm_id, group_id, user, now)


def split_answer(done: storm_split.Split, language: str) -> str:
    return _split_t(done.refused or "split", language, id=done.incident_id)
