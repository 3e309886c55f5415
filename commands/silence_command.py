"""`/silence <duration> [label=value ...]` and the card's "Silence 1h / 4h / 24h" menu: an
Alertmanager silence of an incident's alerts, through the approval flow.

* Where: `/silence` in an incident's channel (the incident whose channel it is); the menu on the
  incident's card (commands.middleware finds the incident by the card's token, only on the card
  itself, and asks the policy before the listener runs).
* What: the labels the incident's alert group has in common as matchers
  (bot.silences.incident_matchers), or the given `label=value` words, the incident's alertname
  added when they name none; for 1m to 24h, as the `alertmanager.silence` action accepts. The
  action's own parameter model validates them, as it does a runbook's silence.
* Who: the one policy first (`Act.SILENCE`: the channel's members, as for the card's buttons);
  then the approval policy. The action's risk (bot.actions.risk_of, with `remediations.risk`)
  and whether the requester may approve it themselves (low risk with `self_approve_low`, and
  them among the approvers: Approvals.may_approve, as at a click). If they may, the request is
  recorded as approved by them and runs at once (audited like any approval); otherwise the
  approval message goes to the incident's channel (or the card's thread) for a second person.
  Either way commands.approvals runs it once, crash-safe (commands.silences reconciles an
  interrupted run with Alertmanager), and the silence is recorded on the timeline and the card.
* Every answer is private, in the asker's language, within Slack's 3 s (commands.slash).
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot import incident_ops, silences
from bot.action_params import ParamContext, ParamError
from bot.action_runner import validate_params
from bot.actions import get_action, risk_of
from bot.approvals import ApprovalRefused
from bot.config import OncallConfig
from bot.db import Database
from bot.models import ApprovalRequest, Incident
from bot.param_syntax import parse_duration
from bot.policy import Act, Policy
from commands.approvals import Approvals
from commands.blockkit import clip, escape
from commands.cards import SILENCE_CHOICES, actor_text
from commands.feature import Action, Feature
from commands.i18n import Catalog
from commands.ids import CARD_SILENCE, COMMAND_SILENCE, read_card_silence_option
from commands.incident_command import slack_to_plain
from commands.middleware import authorize, incident_of_card_button, tell, who_asks
from commands.slack_time import duration as duration_text
from commands.slack_time import slack_time
from commands.slash import Answer, answer_in_time, asker_language
from integrations.slack import SlackClient

if TYPE_CHECKING:
    from integrations.alertmanager import AlertmanagerClient

__all__ = ["LONGEST", "SHORTEST", "SilenceCommand"]

log = logging.getLogger(__name__)

# What the `alertmanager.silence` action accepts (bot.param_syntax.SilenceDuration), said first in words.
SHORTEST, LONGEST = timedelta(minutes=1), timedelta(hours=24)
# The silence's own comment in Alertmanager (its reader may not be in Slack); the action adds the
# incident, the request and the card's link (commands.silences.comment_reference).
_COMMENT = {"command": "silenced with /silence in Slack", "card": "silenced from the incident card in Slack"}
_MATCHERS_SHOWN = 500

_t = Catalog("silence_command", {
    "help": {
        "en": "*`/silence <duration> [label=value ...]`* in an incident's channel (only you see the answer): "
              "silence the incident's alerts in Alertmanager for 1m to 24h (`30m`, `2h`, `1h30m`).\n"
              "• Without matchers: the labels its alerts have in common.\n"
              "• With them (`pod=api-1`, `namespace=~\"prod-.*\"`, `severity!=info`): those, and its alertname "
              "when you name none.\n"
              "The card's *Silence* menu does the same for 1h, 4h or 24h. A silence the policy lets you approve "
              "yourself runs at once; otherwise it waits for a second person's approval in the channel.",
        "ja": "*`/silence <期間> [ラベル=値 ...]`* をインシデントのチャンネルで(回答はあなたにだけ表示されます): "
              "インシデントのアラートを Alertmanager で 1m〜24h サイレンスします(`30m`、`2h`、`1h30m`)。\n"
              "• マッチャーなし: アラートに共通するラベル。\n"
              "• マッチャーあり(`pod=api-1`、`namespace=~\"prod-.*\"`、`severity!=info`): その条件。"
              "alertname を指定しなければインシデントの alertname を加えます。\n"
              "カードの *Silence* メニューでも 1h・4h・24h で同じことができます。ポリシー上あなた自身が承認できる"
              "サイレンスはすぐに実行され、それ以外はチャンネルで別の人の承認を待ちます。"},
    "not_here": {"en": "This channel is not an incident's channel: run `/silence` in the incident's channel "
                       "(`/incident list` shows them), or use the *Silence* menu on its card.",
                 "ja": "このチャンネルはインシデントのチャンネルではありません。インシデントのチャンネルで `/silence` "
                       "を実行するか(`/incident list` で一覧を表示できます)、"
                       "カードの *Silence* メニューを使ってください。"},
    "quotes": {"en": "A quote is not closed in `{text}`; write `/silence 2h pod=\"api 1\"`.",
               "ja": "`{text}` の引用符が閉じていません。`/silence 2h pod=\"api 1\"` のように書いてください。"},
    "duration": {"en": "`{word}` is not a duration from 1m to 24h: write `/silence 2h`, `/silence 30m` or "
                       "`/silence 1h30m`.",
                 "ja": "`{word}` は 1m〜24h の期間ではありません。`/silence 2h`、`/silence 30m`、`/silence 1h30m` "
                       "のように書いてください。"},
    "menu_choice": {"en": "That is not one of the card's silence choices (1h, 4h, 24h); use `/silence <duration>`.",
                    "ja": "カードのサイレンスの選択肢(1h、4h、24h)ではありません。"
                          "`/silence <期間>` を使ってください。"},
    "invalid": {"en": "Nothing was silenced: {reason}. `/silence help` shows how.",
                "ja": "サイレンスしませんでした: {reason}。書き方は `/silence help` で確認できます。"},
    "no_alertname": {"en": "This incident's alerts have no alertname in common, so there is nothing narrow to "
                           "silence: name the matchers, e.g. `/silence 1h alertname=HighLatency pod=api-1`.",
                     "ja": "このインシデントのアラートには共通の alertname がないため、範囲を絞ったサイレンスが"
                           "できません。マッチャーを指定してください(例: `/silence 1h alertname=HighLatency "
                           "pod=api-1`)。"},
    "not_configured": {"en": "Alertmanager is not configured (set ALERTMANAGER_URL and restart the bot): nothing "
                             "was silenced.",
                       "ja": "Alertmanager が設定されていません(ALERTMANAGER_URL を設定して"
                             "ボットを再起動してください)。サイレンスしませんでした。"},
    "gone": {"en": "This incident no longer exists.", "ja": "このインシデントはもう存在しません。"},
    # refusals (bot.policy's reasons)
    "not_in_channel": {"en": "Only members of {where} can silence its alerts; join the channel first.",
                       "ja": "{where} のメンバーだけがアラートをサイレンスできます。"
                             "先にチャンネルに参加してください。"},
    "membership_unknown": {"en": "Could not check that you are in {where} ({error}); try again.",
                           "ja": "{where} のメンバーか確認できませんでした({error})。もう一度お試しください。"},
    "not_a_responder": {"en": "Only this incident's responders, on-call and commander can silence its alerts.",
                        "ja": "このインシデントの対応者、オンコール担当者、指揮者だけがアラートをサイレンスできます。"},
    # refusals (bot.approvals' reasons)
    "switched_off": {"en": "Remediations, silences among them, are switched off (`remediations.enabled: false` in "
                           "ONCALL_CONFIG): nothing was silenced.",
                     "ja": "サイレンスを含む対処は無効になっています(ONCALL_CONFIG の `remediations.enabled: false`)。"
                           "サイレンスしませんでした。"},
    "resolved": {"en": "This incident is resolved: nothing was silenced.",
                 "ja": "このインシデントは解決済みです。サイレンスしませんでした。"},
    "incident_budget": {"en": "This incident has used its budget of {limit} remediations, silences among them "
                              "(`remediations.budget_per_incident`): nothing was silenced.",
                        "ja": "このインシデントは対処(サイレンスを含む)の上限 {limit} 件に達しています"
                              "(`remediations.budget_per_incident`)。サイレンスしませんでした。"},
    "daily_budget": {"en": "The budget of {limit} remediations in 24 hours, silences among them, is used "
                           "(`remediations.budget_per_day`): nothing was silenced.",
                     "ja": "24 時間の対処(サイレンスを含む)の上限 {limit} 件に達しています"
                           "(`remediations.budget_per_day`)。サイレンスしませんでした。"},
    # outcomes
    "running": {"en": ":no_bell: Silencing `{matchers}` for {duration} (until {until}), approved by you (a low-risk "
                      "silence you may approve yourself): the card shows it once Alertmanager has it.",
                "ja": ":no_bell: `{matchers}` を {duration}({until} まで)サイレンスします。あなた自身の承認で実行します"
                      "(自分で承認できる低リスクのサイレンス)。Alertmanager に登録されるとカードに表示されます。"},
    "needs_approval": {"en": ":lock: Silencing `{matchers}` for {duration} needs a second person's approval (risk "
                             "*{risk}*): the request is in {where}, until {expires}.",
                       "ja": ":lock: `{matchers}` を {duration} サイレンスするには別の人の承認が必要です(リスク "
                             "*{risk}*)。依頼を {where} に投稿します。期限は {expires} です。"},
    "pending": {"en": "{who} already asked to silence `{matchers}` {when}; approve or deny that request in {where}.",
                "ja": "{who} が {when} に `{matchers}` のサイレンスを依頼済みです。"
                      "{where} で承認または却下してください。"},
    "covered": {"en": "`{matchers}` is already silenced until {until} (approved by {who}); nothing was added.",
                "ja": "`{matchers}` は {until} までサイレンス済みです({who} が承認)。追加はしませんでした。"},
    "card_thread": {"en": "the card's thread", "ja": "カードのスレッド"},
})


@dataclass(frozen=True)
class _Outcome:
    """What the request came to, read inside its transaction."""

    kind: str  # running | needs_approval | pending | covered | gone
    at: datetime | None = None  # pending: when it was asked; needs_approval: its expiry; covered: its end
    who: str | None = None


class SilenceCommand:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, policy: Policy, approvals: Approvals,
                 alertmanager: AlertmanagerClient | None, *, clock: Callable[[], datetime],
                 on_commit: Callable[[], None]) -> None:
        self.db, self.config, self.slack, self.policy = db, config, slack, policy
        self.approvals, self.alertmanager = approvals, alertmanager
        self.clock, self.kick = clock, on_commit

    def feature(self) -> Feature:
        menu = Action(CARD_SILENCE, self.on_menu, (incident_of_card_button(self.db, value=_card_value),
                                                   authorize(Act.SILENCE, self.policy, self.slack)))
        return Feature(commands={COMMAND_SILENCE: self.on_command}, actions=[menu])

    # -- `/silence` ----------------------------------------------------------------------------------

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await answer_in_time(ack, respond, self.answer(command), what=COMMAND_SILENCE)

    async def answer(self, command: dict[str, Any]) -> Answer:
        user, channel = str(command.get("user_id", "")), str(command.get("channel_id", ""))
        language = await asker_language(self.slack, user, self.config.runbooks.locale)
        text = slack_to_plain(str(command.get("text", ""))).strip()
        try:
            words = shlex.split(text)
        except ValueError:
            return Answer(_t("quotes", language, text=escape(clip(text, 200))))
        if not words or words[0].lower() in ("help", "-h", "--help"):
            return Answer(_t("help", language))
        incident = await asyncio.to_thread(self._incident_in, channel)
        if incident is None:
            return Answer(_t("not_here", language))
        refused = await self._refusal(user, incident, language)
        if refused is not None:
            return Answer(refused)
        return Answer(await self.silence(incident, user, words[0], words[1:] or None, language, source="command"))

    def _incident_in(self, channel: str) -> Incident | None:
        with self.db.read() as session:
            return incident_ops.incident_in_channel(session, channel)

    async def _refusal(self, user: str, incident: Incident, language: str) -> str | None:
        requester = await who_asks(self.slack, user, self.policy.deciding_channel(incident))
        decision = self.policy.decide(Act.SILENCE, requester, incident)
        if decision.allowed:
            return None
        log.info("refused", extra={"incident": incident.id, "user": user, "act": Act.SILENCE.name,
                                   "reason": decision.reason})
        where = f"<#{requester.channel}>" if requester.channel else "#?"
        if decision.reason == "membership_unknown":
            return _t("membership_unknown", language, where=where, error=escape(str(requester.lookup_error)))
        return _t("not_a_responder" if decision.reason == "not_a_responder" else "not_in_channel", language,
                  where=where)

    # -- the card's menu -----------------------------------------------------------------------------

    async def on_menu(self, ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
        """The middleware found the card's incident and let the chooser through."""
        await ack()
        user, incident = body["user"]["id"], context["incident"]
        language = await asker_language(self.slack, user, self.config.runbooks.locale)
        chosen, _ = read_card_silence_option(_chosen(body))
        if chosen not in SILENCE_CHOICES:
            text = _t("menu_choice", language)
        else:
            text = await self.silence(incident, user, chosen, None, language, source="card")
        await tell(respond, user, text)

    # -- both ----------------------------------------------------------------------------------------

    async def silence(self, incident: Incident, user: str, duration: str, words: list[str] | None, language: str,
                      *, source: str) -> str:
        """Ask for the silence (`words`: the given matchers; None: the incident's own); the answer
        to `user`, mrkdwn we composed."""
        try:
            length = parse_duration(duration)
        except ValueError:
            length = timedelta(0)
        if not SHORTEST <= length <= LONGEST:
            return _t("duration", language, word=escape(clip(duration, 40)))
        if self.alertmanager is None:
            return _t("not_configured", language)
        if not incident.is_open:
            return _t("resolved", language)
        if words is None:
            matchers = silences.incident_matchers(incident)
            if matchers is None:
                return _t("no_alertname", language)
        else:
            try:
                matchers = silences.given_matchers(words, incident.labels.get("alertname") or incident.alertname)
            except ValueError as exc:
                return _t("invalid", language, reason=escape(str(exc)))
        spec = get_action(silences.ACTION)
        assert spec is not None
        try:
            params = validate_params(spec.name, {"matchers": matchers, "duration": duration,
                                                 "comment": _COMMENT[source]}, ParamContext())
        except ParamError as exc:
            return _t("invalid", language, reason=escape(clip(str(exc), 500)))
        risk = risk_of(spec, params, None, self.config.remediations.risk)
        values = params.model_dump(mode="json")
        shown = escape(clip(str(values["matchers"]), _MATCHERS_SHOWN))
        try:
            outcome = await asyncio.to_thread(self._request, incident.id, user, values, risk,
                                              await self._self_approved(risk, user, incident))
        except ApprovalRefused as exc:
            known = exc.reason in ("switched_off", "resolved", "incident_budget", "daily_budget")
            return _t(exc.reason if known else "invalid", language, limit=exc.limit, reason=escape(str(exc)))
        self.kick()
        now = self.clock()
        where = f"<#{incident.channel_id}>" if incident.channel_id else _t("card_thread", language)
        log.info("silence asked", extra={"incident": incident.id, "user": user, "outcome": outcome.kind,
                                         "risk": risk, "source": source})
        if outcome.kind == "gone":
            return _t("gone", language)
        if outcome.kind == "pending":
            return _t("pending", language, who=actor_text(outcome.who, language), matchers=shown, where=where,
                      when=slack_time(outcome.at or now, now))
        if outcome.kind == "covered":
            return _t("covered", language, matchers=shown, until=slack_time(outcome.at or now, now),
                      who=actor_text(outcome.who, language))
        if outcome.kind == "running":
            return _t("running", language, matchers=shown, duration=duration_text(length),
                      until=slack_time(now + length, now))
        return _t("needs_approval", language, matchers=shown, duration=duration_text(length), risk=escape(risk),
                  where=where, expires=slack_time(outcome.at or now, now))

    async def _self_approved(self, risk: str, user: str, incident: Incident) -> bool:
        """May the requester approve this request themselves, by the approval policy?"""
        policy = self.config.remediations
        if risk != "low" or not policy.self_approve_low:
            return False
        now = self.clock()  # the request as it would be stored (may_approve reads its requester and risk)
        asked = ApprovalRequest(token="", incident_id=incident.id or 0, step_id=0, action=silences.ACTION, risk=risk,
                                requested_by=user, requested_at=now, expires_at=now)
        return (await self.approvals.may_approve(asked, user, incident)).allowed

    def _request(self, incident_id: int | None, user: str, params: dict[str, Any], risk: str,
                 self_approved: bool) -> _Outcome:
        """In one transaction with the incident's row locked (two `/silence` at once: one request);
        ApprovalRefused rolls it back."""
        with self.db.session() as session:
            incident = session.get(Incident, incident_id, with_for_update=True)
            if incident is None:
                return _Outcome("gone")
            asked = silences.request(session, incident, user, self.clock(), self.config.remediations, params=params,
                                     risk=risk, self_approved=self_approved, channel=incident.channel_id)
            if asked.pending is not None:
                return _Outcome("pending", asked.pending.requested_at, asked.pending.requested_by)
            if asked.covering is not None:
                return _Outcome("covered", asked.covering.ends_at, asked.covering.created_by)
            assert asked.request is not None
            log.info("silence requested", extra={"incident": incident.id, "approval": asked.request.id,
                                                 "self_approved": self_approved})
            if self_approved:
                return _Outcome("running")
            return _Outcome("needs_approval", asked.request.expires_at)


def _chosen(body: dict[str, Any]) -> str:
    """The value of the option chosen in a menu (an overflow's action carries no `value`)."""
    action = (body.get("actions") or [{}])[0]
    return str((action.get("selected_option") or {}).get("value", ""))


def _card_value(body: dict[str, Any]) -> str:
    """What every card element carries (the card's token and level), from a silence option's value."""
    return read_card_silence_option(_chosen(body))[1]
