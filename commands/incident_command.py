"""`/incident`: an incident steered from its channel, and the open incidents listed anywhere.

One Bolt listener reads the subcommand and hands it to one small handler per subcommand; each
answers privately within Slack's 3 s (commands.slash.answer_in_time), in the asker's language
(English or Japanese, their Slack locale). In an incident's channel (the incident whose
`channel_id` the command came from): `status`, `timeline [page]`, and the changes `ack`,
`severity P1..P4`, `state <state>`, `note <text>`, `resolve [note]`, `reopen`, `escalate`,
`assign` and `update` (commands.roles). Anywhere: `list`, `help`. A change is first put to the
one policy (bot.policy, as for the card's buttons: members of the incident's channel), then made
by the same domain functions as the card's buttons and the webhooks (bot.escalation,
bot.incident_ops), which record it on the timeline and refresh the card.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlmodel import Session

from bot import escalation, incident_ops, storm
from bot.card_view import CardView, load_card_view
from bot.config import SEVERITIES, OncallConfig
from bot.db import Database
from bot.lifecycle import InvalidTransition
from bot.models import Incident, IncidentStatus, Paging, StormMember
from bot.policy import Act, Decision, Policy, Requester
from commands.blockkit import LIMITS, clip, escape, mrkdwn, section, trusted_mrkdwn
from commands.card_buttons import split_answer, split_group
from commands.cards import actor_text
from commands.feature import Feature
from commands.i18n import Catalog
from commands.ids import COMMAND_INCIDENT
from commands.middleware import who_asks
from commands.postmortem import postmortem_change
from commands.roles import RoleCommands
from commands.slack_time import duration, slack_time
from commands.slash import Answer, answer_in_time, asker_language, escalation_levels, within_or_none
from commands.visibility import hidden_from
from integrations.slack import SlackClient

__all__ = ["LIST_SHOWN", "TIMELINE_PAGE", "Ask", "IncidentCommand", "slack_to_plain"]

log = logging.getLogger(__name__)

TIMELINE_PAGE = 40  # entries per `/incident timeline` page
LIST_SHOWN = 30  # open incidents `/incident list` shows (the most severe, then the oldest)
ENTRY_TEXT = 400  # characters of one timeline entry shown (as on the card)

S = IncidentStatus
T = TypeVar("T")
# As on the card (commands.cards keeps the same icons).
SEVERITY_ICON = {"P1": ":red_circle:", "P2": ":large_orange_circle:", "P3": ":large_yellow_circle:",
                 "P4": ":large_blue_circle:"}

_t = Catalog("incident_command", {
    "status_entry": {"en": "status ", "ja": "状態 "},
    "status_title": {"en": "{icon} *{severity} · {title}* · incident #{id}",
                     "ja": "{icon} *{severity} · {title}* · インシデント #{id}"},
    "help": {
        "en": "*`/incident`* (only you see the answers)\n"
              "In an incident's channel:\n"
              "• `status`: the incident's card in short\n"
              "• `ack`: acknowledge it (you become its commander if it has none)\n"
              "• `severity P1`…`P4`: change its severity (escalation follows the new one)\n"
              "• `state <state>`: move it on ({states})\n"
              "• `note <text>`: add a line to its timeline\n"
              "• `assign commander|scribe|comms @user`: give a role (they are invited here)\n"
              "• `update`: post a status update (a form), here and in the announcement's thread\n"
              "• `timeline [page]`: its whole timeline, {per_page} entries a page\n"
              "• `resolve [note]` · `reopen` · `escalate` (page now, or the next level)\n"
              "• `postmortem`: once resolved, its post-mortem as a file here (again: a new version)\n"
              "• `split <group>`: in an alert storm's channel, give one of its groups an incident of its own\n"
              "Anywhere:\n"
              "• `new [title]`: declare an incident (a form: title, severity, service, private)\n"
              "• `list`: the open incidents\n"
              "• `help`: this",
        "ja": "*`/incident`*(回答はあなたにだけ表示されます)\n"
              "インシデントのチャンネルで:\n"
              "• `status`: インシデントカードの要約\n"
              "• `ack`: 確認(指揮者がいなければあなたが指揮者になります)\n"
              "• `severity P1`…`P4`: 重大度を変更(エスカレーションは新しい重大度に従います)\n"
              "• `state <状態>`: 状態を進める({states})\n"
              "• `note <テキスト>`: タイムラインに記録\n"
              "• `assign commander|scribe|comms @ユーザー`: 役割を割り当てる(このチャンネルに招待)\n"
              "• `update`: 状況報告を投稿(フォーム)。ここと告知のスレッドに投稿します\n"
              "• `timeline [ページ]`: タイムライン全体(1 ページ {per_page} 件)\n"
              "• `resolve [メモ]` · `reopen`(再オープン) · `escalate`(今すぐ呼び出し、または次のレベルへ)\n"
              "• `postmortem`: 解決後、ポストモーテムをファイルとしてここに投稿(再実行で新しい版)\n"
              "• `split <グループ>`: アラートストームのチャンネルで、グループを専用のインシデントに分離\n"
              "どこでも:\n"
              "• `new [タイトル]`: インシデントを宣言(フォーム: タイトル、重大度、サービス、非公開)\n"
              "• `list`: 対応中のインシデント一覧\n"
              "• `help`: このヘルプ"},
    # split (a storm's groups)
    "split_not_storm": {"en": "`split` works in an alert storm's channel: it gives one of the storm's groups an "
                              "incident of its own.",
                        "ja": "`split` はアラートストームのチャンネルで使います。ストームのグループを専用の"
                              "インシデントに分離します。"},
    "split_none": {"en": "No group of this storm is firing: there is nothing to split out.",
                   "ja": "このストームで発火中のグループはありません。分離するものはありません。"},
    "split_usage": {"en": "Name a group by its number (on its row of the storm card): `/incident split <number>`. "
                          "Firing groups:\n{groups}",
                    "ja": "グループを番号(ストームカードの行に表示)で指定してください: `/incident split <番号>`。"
                          "発火中のグループ:\n{groups}"},
    "split_unknown": {"en": "No firing group of this storm has the number or title `{word}`. Firing groups:\n{groups}",
                      "ja": "このストームに番号またはタイトルが `{word}` の発火中グループはありません。"
                            "発火中のグループ:\n{groups}"},
    "split_ambiguous": {"en": "`{word}` is in the titles of {count} firing groups; name one by its number:\n{groups}",
                        "ja": "`{word}` は発火中の {count} グループのタイトルに含まれます。番号で指定してください:"
                              "\n{groups}"},
    "split_group": {"en": "• group {group}: *{severity}* {title}", "ja": "• グループ {group}: *{severity}* {title}"},
    "split_more": {"en": "…and {count} more", "ja": "…ほか {count} 件"},
    "unknown": {"en": "`{word}` is not an `/incident` subcommand.",
                "ja": "`{word}` は `/incident` のサブコマンドではありません。"},
    "not_here": {"en": "This channel is not an incident's channel: run this in an incident's channel; "
                       "`/incident list` shows them.",
                 "ja": "このチャンネルはインシデントのチャンネルではありません。"
                       "インシデントのチャンネルで実行してください。"
                       "`/incident list` で一覧を表示できます。"},
    "gone": {"en": "This incident no longer exists.", "ja": "このインシデントはもう存在しません。"},
    # refusals (bot.policy's reasons)
    "not_in_channel": {"en": "Only members of {where} can {act}; join the channel first.",
                       "ja": "{where} のメンバーだけが{act}ことができます。先にチャンネルに参加してください。"},
    "membership_unknown": {"en": "Could not check that you are in {where} ({error}); try again.",
                           "ja": "{where} のメンバーか確認できませんでした({error})。もう一度お試しください。"},
    "not_a_responder": {"en": "Only this incident's responders, on-call and commander can {act}.",
                        "ja": "このインシデントの対応者、オンコール担当者、指揮者だけが{act}ことができます。"},
    # status
    "status_state": {"en": "State *{state}* · open for {age} (since {since})",
                     "ja": "状態 *{state}* · 発生から {age}({since} から)"},
    "status_resolved": {"en": "State *{state}* · lasted {age} · resolved {at} by {who}",
                        "ja": "状態 *{state}* · 継続時間 {age} · {at} に {who} が解決"},
    "status_people": {"en": "Commander: {commander} · Acknowledged: {acked}",
                      "ja": "指揮者: {commander} · 確認: {acked}"},
    "unassigned": {"en": "unassigned", "ja": "未割り当て"},
    "not_acked": {"en": "not yet", "ja": "未確認"},
    "status_paging": {"en": "PagerDuty: level {level} paged", "ja": "PagerDuty: レベル {level} を呼び出し済み"},
    "status_next": {"en": "Next: `/incident state <state>` with {states}",
                    "ja": "次の状態: `/incident state <状態>`({states})"},
    "card_link": {"en": "the card", "ja": "カード"},
    "open_card": {"en": "Open its card", "ja": "カードを開く"},
    "card_missing": {"en": "its card is not posted yet", "ja": "カードはまだ投稿されていません"},
    # ack
    "acked": {"en": ":eyes: You acknowledged incident #{id}; escalation that waits for an ack is stopped.",
              "ja": ":eyes: インシデント #{id} を確認しました。確認待ちのエスカレーションは止まります。"},
    "acked_next": {"en": "It is still *detected*: `/incident state triaged` once its impact is known.",
                   "ja": "状態はまだ *detected* です。影響範囲を確認したら `/incident state triaged` "
                         "を実行してください。"},
    "already_acked": {"en": "Already acknowledged by {who}.", "ja": "{who} が確認済みです。"},
    "already_resolved": {"en": "This incident is already resolved.", "ja": "このインシデントは解決済みです。"},
    # severity
    "severity_usage": {"en": "Give the severity: `/incident severity P1` (P1, P2, P3 or P4; it is {current}).",
                       "ja": "重大度を指定してください: `/incident severity P1`(P1、P2、P3、P4。現在は {current})。"},
    "severity_same": {"en": "It is already {severity}.", "ja": "すでに {severity} です。"},
    "severity_set": {"en": "Severity {before} → *{after}*; escalation follows the {after} timetable.",
                     "ja": "重大度を {before} → *{after}* に変更しました。エスカレーションは {after} "
                           "の時刻表に従います。"},
    "severity_set_closed": {"en": "Severity {before} → *{after}* (it is resolved: nothing pages).",
                            "ja": "重大度を {before} → *{after}* に変更しました(解決済みのため呼び出しはありません)。"},
    # state
    "state_usage": {"en": "Give the state: `/incident state investigating`. From *{state}* it can become: {states}.",
                    "ja": "状態を指定してください: `/incident state investigating`。*{state}* "
                          "からは次の状態にできます: {states}。"},
    "state_unknown": {"en": "`{word}` is not a state. The states are: {all}. From *{state}* it can become: "
                            "{states}.",
                      "ja": "`{word}` は状態ではありません。状態: {all}。*{state}* からは次の状態にできます: {states}。"
                            ""},
    "state_same": {"en": "It is already *{state}*.", "ja": "すでに *{state}* です。"},
    "state_invalid": {"en": "An incident that is *{state}* cannot become *{to}*. From *{state}* it can become: "
                            "{states}.",
                      "ja": "*{state}* のインシデントは *{to}* にできません。*{state}* からは次の状態にできます: "
                            "{states}。"},
    "state_final": {"en": "An incident in *{state}* cannot change state any more.",
                    "ja": "*{state}* のインシデントはこれ以上状態を変更できません。"},
    "state_set": {"en": "State {before} → *{after}*.", "ja": "状態を {before} → *{after}* に変更しました。"},
    # note, resolve, reopen, escalate
    "note_usage": {"en": "Write the note after the word: `/incident note rolled back api to v41`.",
                   "ja": "note の後にメモを書いてください: `/incident note api を v41 にロールバック`。"},
    "noted": {"en": ":memo: Added to the timeline of incident #{id}.",
              "ja": ":memo: インシデント #{id} のタイムラインに追加しました。"},
    "resolved": {"en": ":white_check_mark: Resolved incident #{id}.",
                 "ja": ":white_check_mark: インシデント #{id} を解決しました。"},
    "reopened": {"en": ":rotating_light: Reopened incident #{id}: it is *detected* again and escalation starts over.",
                 "ja": ":rotating_light: インシデント #{id} を再オープンしました。状態は *detected* に戻り、"
                       "エスカレーションは最初からやり直します。"},
    "not_resolved": {"en": "It is not resolved (it is *{state}*): nothing to reopen.",
                     "ja": "解決済みではありません(現在 *{state}*)。再オープンするものはありません。"},
    "postmortem_final": {"en": "It is in *postmortem*: it cannot be reopened.",
                         "ja": "*postmortem* のため再オープンできません。"},
    "paged": {"en": ":rotating_light: Paging *{level}* through PagerDuty now.",
              "ja": ":rotating_light: PagerDuty で *{level}* を呼び出します。"},
    "escalated": {"en": ":arrow_double_up: Escalated to *{level}*.",
                  "ja": ":arrow_double_up: *{level}* にエスカレーションしました。"},
    "not_configured": {"en": ":warning: Nobody was paged: PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY, or a "
                             "pagerduty route matching this incident's labels).",
                       "ja": ":warning: 誰も呼び出されませんでした。PagerDuty "
                             "が設定されていません(PAGERDUTY_ROUTING_KEY か、"
                             "このインシデントのラベルに一致する pagerduty のルートを設定してください)。"},
    "top_level": {"en": "Nothing to escalate: the top level is already paged, or the incident is resolved.",
                  "ja": "エスカレーションできません。最上位のレベルを呼び出し済みか、インシデントが解決済みです。"},
    # timeline
    "timeline_title": {"en": "*Timeline of incident #{id}* · page {page} of {pages} (entries {first}-{last} of "
                             "{total}, newest last)",
                       "ja": "*インシデント #{id} のタイムライン* · {page}/{pages} ページ(全 {total} 件中 "
                             "{first}-{last} 件目、"
                             "新しいものが最後)"},
    "timeline_more": {"en": "`/incident timeline {next}` for the next page.",
                      "ja": "次のページは `/incident timeline {next}`。"},
    "timeline_empty": {"en": "Nothing on the timeline of incident #{id} yet.",
                       "ja": "インシデント #{id} のタイムラインはまだ空です。"},
    "timeline_past": {"en": "There is no page {page}: the timeline has {pages} (`/incident timeline {pages}` is the "
                            "last).",
                      "ja": "{page} ページはありません。タイムラインは {pages} ページです(最後は "
                            "`/incident timeline {pages}`)。"},
    "timeline_usage": {"en": "Give a page number: `/incident timeline 2`.",
                       "ja": "ページ番号を指定してください: `/incident timeline 2`。"},
    # list
    "list_title": {"en": "*{count} open incident(s)*, the most severe first:",
                   "ja": "*対応中のインシデント {count} 件*(重大度順):"},
    "list_empty": {"en": "No open incidents.", "ja": "対応中のインシデントはありません。"},
    "list_private": {"en": ":lock: _private incident_", "ja": ":lock: _非公開のインシデント_"},
    "list_more": {"en": "…and {more} more.", "ja": "…ほか {more} 件。"},
    "list_line": {"en": "{icon} *{severity}* {where} {title} · {state} · {age} · commander {commander}",
                  "ja": "{icon} *{severity}* {where} {title} · {state} · {age} · 指揮者 {commander}"},
})

# What each change is, in the refusal ("Only members of #inc can <act>").
_ACTS: dict[Act, dict[str, str]] = {
    Act.ACK: {"en": "acknowledge it", "ja": "確認する"},
    Act.RESOLVE: {"en": "resolve it", "ja": "解決する"},
    Act.ESCALATE: {"en": "page or escalate it", "ja": "呼び出しやエスカレーションをする"},
    Act.CHANGE_SEVERITY: {"en": "change its severity", "ja": "重大度を変更する"},
    Act.CHANGE_STATE: {"en": "change its state", "ja": "状態を変更する"},
    Act.ADD_NOTE: {"en": "add to its timeline", "ja": "タイムラインに記録する"},
    Act.REOPEN: {"en": "reopen it", "ja": "再オープンする"},
    Act.ASSIGN_ROLE: {"en": "assign its roles", "ja": "役割を割り当てる"},
    Act.POST_UPDATE: {"en": "post its status updates", "ja": "状況報告を投稿する"},
}


_SLACK_ENTITY = re.compile(r"<([@#!]?)([^<>|]*)(?:\|([^<>]*))?>")


def slack_to_plain(text: str) -> str:
    """A command's text (`should_escape`: Slack sends `&lt;`, `<@U1|ann>`, `<#C1|general>`,
    `<https://x|x>`) as the plain text the timeline keeps; whoever shows it escapes it again."""
    def entity(match: re.Match[str]) -> str:
        sigil, target, label = match.groups()
        if sigil in ("@", "#"):
            return sigil + (label or target)
        if sigil == "!":
            return label if label and label.startswith("@") else "@" + (label or target.split("^")[0])
        return target if not label or label == target else f"{label} ({target})"

    plain = _SLACK_ENTITY.sub(entity, text)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@dataclass(frozen=True)
class Ask:
    """One `/incident` request: who, where, the words after the subcommand and their raw text."""

    user: str
    channel: str
    args: list[str]
    rest: str
    language: str
    trigger_id: str = ""  # the command's: opens a modal (`new`) within 3 s


Handler = Callable[[Ask], Awaitable[Answer]]
InIncident = Callable[[Ask, Incident], Awaitable[Answer]]


class IncidentCommand:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, policy: Policy, *,
                 clock: Callable[[], datetime], on_commit: Callable[[], None], new: Handler | None = None) -> None:
        self.db, self.config, self.slack, self.policy = db, config, slack, policy
        self.clock, self.on_commit = clock, on_commit
        self._roles = RoleCommands(db, config, slack, clock=clock, on_commit=on_commit, changed=self._changed,
                                   refusal=self._refusal)  # assign, update (and the modal, the posts)
        self._anywhere: dict[str, Handler] = {"list": self._list, "help": self._help,
                                              **({"new": new} if new else {})}  # new: commands.declare
        self._in_incident: dict[str, InIncident] = {
            "status": self._status, "timeline": self._timeline, "ack": self._ack, "severity": self._severity,
            "state": self._state, "note": self._note, "resolve": self._resolve, "reopen": self._reopen,
            "escalate": self._escalate, "assign": self._roles.assign, "update": self._roles.update,
            "split": self._split,
            "postmortem": lambda ask, inc: self._changed(Act.CHANGE_STATE, ask, inc, postmortem_change(
                self.config, ask.user, ask.language)),
        }

    def feature(self) -> Feature:
        roles = self._roles.feature()
        return Feature(commands={COMMAND_INCIDENT: self.on_command}, handlers=roles.handlers, views=roles.views)

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await answer_in_time(ack, respond, self.answer(command), what=COMMAND_INCIDENT)

    async def answer(self, command: dict[str, Any]) -> Answer:
        user, channel = str(command.get("user_id", "")), str(command.get("channel_id", ""))
        language = await asker_language(self.slack, user, self.config.runbooks.locale)
        word, rest = [*str(command.get("text", "")).split(maxsplit=1), "", ""][:2]  # any whitespace separates
        subcommand = word.lower()
        ask = Ask(user=user, channel=channel, args=rest.split(), rest=rest.strip(), language=language,
                  trigger_id=str(command.get("trigger_id", "")))
        if subcommand in self._anywhere or subcommand == "":
            return await self._anywhere.get(subcommand, self._help)(ask)
        if subcommand not in self._in_incident:
            unknown = _t("unknown", language, word=escape(clip(word, 40)))
            return Answer(f"{unknown}\n{self._help_text(language)}")
        incident = await asyncio.to_thread(self._incident_of, channel)
        if incident is None:
            return Answer(_t("not_here", language))
        log.info("/incident", extra={"incident": incident.id, "subcommand": subcommand, "user": user})
        return await self._in_incident[subcommand](ask, incident)

    # -- storage ---------------------------------------------------------------------------------

    def _incident_of(self, channel: str) -> Incident | None:
        with self.db.read() as session:
            return incident_ops.incident_in_channel(session, channel)

    def _change(self, incident_id: int | None, change: Callable[[Session, Incident, datetime], T]) -> T | None:
        """One change in one transaction, the incident's row locked (as the card's buttons do);
        None when the incident is gone."""
        with self.db.session() as session:
            incident = session.get(Incident, incident_id, with_for_update=True)
            if incident is None:
                return None
            return change(session, incident, self.clock())

    async def _changed(self, act: Act, ask: Ask, incident: Incident,
                       change: Callable[[Session, Incident, datetime], Answer]) -> Answer:
        """Put the change to the policy, then make it; the outbox runs what it queued at once."""
        refused = await self._refusal(act, ask, incident)
        if refused is not None:
            return refused
        answer = await asyncio.to_thread(self._change, incident.id, change)
        self.on_commit()
        return answer if answer is not None else Answer(_t("gone", ask.language))

    async def _refusal(self, act: Act, ask: Ask, incident: Incident) -> Answer | None:
        requester = await who_asks(self.slack, ask.user, self.policy.deciding_channel(incident))
        decision = self.policy.decide(act, requester, incident)
        if decision.allowed:
            return None
        log.info("refused", extra={"incident": incident.id, "user": ask.user, "act": act.name,
                                   "reason": decision.reason})
        return Answer(_refusal_text(decision, act, requester, ask.language))

    # -- anywhere --------------------------------------------------------------------------------

    async def _help(self, ask: Ask) -> Answer:
        return Answer(self._help_text(ask.language))

    def _help_text(self, language: str) -> str:
        return _t("help", language, states=", ".join(s.value for s in incident_ops.STATES), per_page=TIMELINE_PAGE)

    async def _list(self, ask: Ask) -> Answer:
        found = await asyncio.to_thread(self._open_incidents)
        if not found:
            return Answer(_t("list_empty", ask.language))
        shown = found[:LIST_SHOWN]
        now = self.clock()
        wheres = await asyncio.gather(*(self._where(o.incident, ask.language) for o in shown))
        hidden = await hidden_from(self.slack, self.policy, ask.user, [o.incident for o in shown])
        lines = [_t("list_title", ask.language, count=len(found))]
        for item, where in zip(shown, wheres, strict=True):
            inc = item.incident
            lines.append("• " + _t(
                "list_line", ask.language, icon=SEVERITY_ICON.get(inc.severity, ":rotating_light:"),
                severity=inc.severity, where=where, state=_state(inc),
                title=_t("list_private", ask.language) if inc.id in hidden else escape(clip(inc.title, 150)),
                age=duration(now - item.started_at, ask.language),
                commander=actor_text(inc.commander, ask.language) if inc.commander else _t("unassigned", ask.language)))
        if len(found) > len(shown):
            lines.append(_t("list_more", ask.language, more=len(found) - len(shown)))
        return _blocks_answer(lines)

    def _open_incidents(self) -> list[incident_ops.OpenIncident]:
        with self.db.read() as session:
            return incident_ops.open_incidents(session)

    async def _where(self, incident: Incident, language: str) -> str:
        """A link to where the incident is worked: its channel, else its card (in a thread)."""
        if incident.channel_id:
            return f"<#{incident.channel_id}>"
        link = await self._card_link(incident, f"#{incident.id} {_t('card_link', language)}")
        return link or f"#{incident.id}"

    async def _card_link(self, incident: Incident, label: str) -> str | None:
        """A link to the card message (chat.getPermalink); None when Slack is slow or refuses."""
        if not (incident.card_channel_id and incident.card_ts):
            return None
        url = await within_or_none(self.slack.permalink(incident.card_channel_id, incident.card_ts))
        return f"<{url}|{label}>" if url else None

    # -- reads in the incident's channel -----------------------------------------------------------

    async def _status(self, ask: Ask, incident: Incident) -> Answer:
        language, now = ask.language, self.clock()
        view = await asyncio.to_thread(self._card_view, incident.id, now)
        if view is None:
            return Answer(_t("gone", language))
        inc = view.incident
        icon = SEVERITY_ICON.get(inc.severity, ":rotating_light:")
        lines = [_t("status_title", language, icon=icon, severity=inc.severity, id=inc.id,
                    title=escape(clip(inc.title, 200)))]
        if inc.resolved_at is not None:
            lines.append(_t("status_resolved", language, state=_state(inc),
                            age=duration(inc.resolved_at - view.started_at, language),
                            at=slack_time(inc.resolved_at, now),
                            who=actor_text(inc.resolved_by, language)))
        else:
            lines.append(_t("status_state", language, state=_state(inc), age=duration(now - view.started_at, language),
                            since=slack_time(view.started_at, now)))
        lines.append(_t("status_people", language,
                        commander=actor_text(inc.commander, language) if inc.commander else _t("unassigned", language),
                        acked=actor_text(inc.acknowledged_by, language) if inc.acknowledged_by else (
                            escape(clip(view.paging.acked_in_pagerduty_by, 100)) + " (PagerDuty)"
                            if view.paging and view.paging.acked_in_pagerduty_by else _t("not_acked", language))))
        if view.paging is not None and view.paging.level >= 1:
            lines.append(_t("status_paging", language, level=view.paging.level))
        reachable = incident_ops.reachable(inc)
        if reachable:
            lines.append(_t("status_next", language, states=_states(reachable)))
        link = await self._card_link(inc, _t("open_card", language))
        lines.append(link or _t("card_missing", language))
        return Answer("\n".join(lines))

    def _card_view(self, incident_id: int | None, now: datetime) -> CardView | None:
        with self.db.read() as session:
            incident = session.get(Incident, incident_id)
            return load_card_view(session, incident, self.config, now) if incident is not None else None

    async def _timeline(self, ask: Ask, incident: Incident) -> Answer:
        language = ask.language
        if ask.args and not ask.args[0].isdigit():
            return Answer(_t("timeline_usage", language))
        page = int(ask.args[0]) if ask.args else 1
        found = await asyncio.to_thread(self._timeline_page, incident.id or 0, page)
        if found.total == 0:
            return Answer(_t("timeline_empty", language, id=incident.id))
        if not found.entries:
            return Answer(_t("timeline_past", language, page=page, pages=found.pages))
        now = self.clock()
        lines = [_t("timeline_title", language, id=incident.id, page=found.page, pages=found.pages, first=found.first,
                    last=found.first + len(found.entries) - 1, total=found.total)]
        lines += [f"{slack_time(e.at, now)} {actor_text(e.actor, language)}: "
                  + (_t("status_entry", language) if e.kind == "status" else "") + mrkdwn(e.text, ENTRY_TEXT)["text"]
                  for e in found.entries]
        if found.page < found.pages:
            lines.append(_t("timeline_more", language, next=found.page + 1))
        return _blocks_answer(lines)

    def _timeline_page(self, incident_id: int, page: int) -> incident_ops.TimelinePage:
        with self.db.read() as session:
            return incident_ops.timeline_page(session, incident_id, page, TIMELINE_PAGE)

    # -- changes ---------------------------------------------------------------------------------

    async def _ack(self, ask: Ask, incident: Incident) -> Answer:
        language = ask.language

        def ack(session: Session, inc: Incident, now: datetime) -> Answer:
            if escalation.acknowledge(session, inc, ask.user, now, "slack"):
                text = _t("acked", language, id=inc.id)
                if IncidentStatus(inc.status) == S.DETECTED:
                    text += "\n" + _t("acked_next", language)
                return Answer(text)
            if not inc.is_open:
                return Answer(_t("already_resolved", language))
            who = actor_text(inc.acknowledged_by, language) if inc.acknowledged_by else "PagerDuty"
            return Answer(_t("already_acked", language, who=who))

        return await self._changed(Act.ACK, ask, incident, ack)

    async def _severity(self, ask: Ask, incident: Incident) -> Answer:
        language = ask.language
        wanted = ask.args[0].upper() if len(ask.args) == 1 else ""
        if wanted not in SEVERITIES:
            return Answer(_t("severity_usage", language, current=incident.severity))

        def change(session: Session, inc: Incident, now: datetime) -> Answer:
            before = inc.severity
            if not incident_ops.change_severity(session, inc, wanted, ask.user, now, self.config):
                return Answer(_t("severity_same", language, severity=wanted))
            key = "severity_set" if inc.is_open else "severity_set_closed"
            return Answer(_t(key, language, before=before, after=wanted))

        return await self._changed(Act.CHANGE_SEVERITY, ask, incident, change)

    async def _state(self, ask: Ask, incident: Incident) -> Answer:
        language, current = ask.language, _state(incident)
        reachable = incident_ops.reachable(incident)
        if not reachable:
            return Answer(_t("state_final", language, state=current))
        if len(ask.args) != 1:
            return Answer(_t("state_usage", language, state=current, states=_states(reachable)))
        word = ask.args[0].lower()
        try:
            wanted = IncidentStatus(word)
        except ValueError:
            return Answer(_t("state_unknown", language, word=escape(clip(word, 40)), state=current,
                             all=_states(list(incident_ops.STATES)), states=_states(reachable)))
        if wanted == IncidentStatus(incident.status):
            return Answer(_t("state_same", language, state=current))
        if wanted not in reachable:  # checked again under the lock: it may have moved meanwhile
            return Answer(_t("state_invalid", language, state=current, to=wanted.value, states=_states(reachable)))

        def change(session: Session, inc: Incident, now: datetime) -> Answer:
            before = _state(inc)
            try:
                incident_ops.set_state(session, inc, wanted, ask.user, now, self.config)
            except InvalidTransition:
                return Answer(_t("state_invalid", language, state=before, to=wanted.value,
                                 states=_states(incident_ops.reachable(inc))))
            return Answer(_t("state_set", language, before=before, after=wanted.value))

        act = Act.RESOLVE if wanted == S.RESOLVED else Act.REOPEN if IncidentStatus(incident.status) == S.RESOLVED \
            and wanted == S.DETECTED else Act.CHANGE_STATE
        return await self._changed(act, ask, incident, change)

    async def _note(self, ask: Ask, incident: Incident) -> Answer:
        language = ask.language
        text = slack_to_plain(ask.rest).strip()
        if not text:
            return Answer(_t("note_usage", language))

        def note(session: Session, inc: Incident, now: datetime) -> Answer:
            incident_ops.add_note(session, inc, ask.user, text, now)
            return Answer(_t("noted", language, id=inc.id))

        return await self._changed(Act.ADD_NOTE, ask, incident, note)

    async def _resolve(self, ask: Ask, incident: Incident) -> Answer:
        language = ask.language
        reason = clip(slack_to_plain(ask.rest).strip(), incident_ops.NOTE_LIMIT)

        def resolve(session: Session, inc: Incident, now: datetime) -> Answer:
            if escalation.resolve(session, inc, ask.user, now, "slack", reason=reason):
                return Answer(_t("resolved", language, id=inc.id))
            return Answer(_t("already_resolved", language))

        return await self._changed(Act.RESOLVE, ask, incident, resolve)

    async def _reopen(self, ask: Ask, incident: Incident) -> Answer:
        language = ask.language
        if IncidentStatus(incident.status) == S.POSTMORTEM:
            return Answer(_t("postmortem_final", language))

        def reopen(session: Session, inc: Incident, now: datetime) -> Answer:
            if incident_ops.reopen(session, inc, ask.user, now, self.config):
                return Answer(_t("reopened", language, id=inc.id))
            if IncidentStatus(inc.status) == S.POSTMORTEM:
                return Answer(_t("postmortem_final", language))
            return Answer(_t("not_resolved", language, state=_state(inc)))

        return await self._changed(Act.REOPEN, ask, incident, reopen)

    async def _escalate(self, ask: Ask, incident: Incident) -> Answer:
        language = ask.language

        def escalate(session: Session, inc: Incident, now: datetime) -> Answer:
            outcome = escalation.escalate_now(session, inc, ask.user, now, "slack", self.config)
            if outcome is None:
                return Answer(_t("top_level", language))
            if outcome == "not configured":
                return Answer(_t("not_configured", language))
            paging = session.get(Paging, inc.id)
            level = paging.level if paging is not None else 1
            name = escape(_level_name(self.config, inc.severity, level))
            return Answer(_t("paged" if level == 1 else "escalated", language, level=name))

        return await self._changed(Act.ESCALATE, ask, incident, escalate)

    async def _split(self, ask: Ask, incident: Incident) -> Answer:
        """A storm's group into an incident of its own, named by its number (the storm card's row
        shows it) or by a word of its title that no other firing group's has."""
        language = ask.language
        if not storm.is_storm(incident):
            return Answer(_t("split_not_storm", language))
        firing = await asyncio.to_thread(self._firing_members, incident.id or 0)
        if not firing:
            return Answer(_t("split_none", language))
        if not ask.rest:
            return Answer(_t("split_usage", language, groups=_group_lines(firing, language)))
        matches = _named_groups(firing, ask.rest)
        if len(matches) != 1:
            key = "split_ambiguous" if matches else "split_unknown"
            return Answer(_t(key, language, word=escape(clip(ask.rest, 40)), count=len(matches),
                             groups=_group_lines(matches or firing, language)))
        refused = await self._refusal(Act.CHANGE_STATE, ask, incident)
        if refused is not None:
            return refused
        done = await asyncio.to_thread(split_group, self.db, self.config, incident.id or 0, matches[0].group_id,
                                       ask.user, self.clock())
        self.on_commit()
        return Answer(split_answer(done, language))

    def _firing_members(self, storm_id: int) -> list[StormMember]:
        with self.db.read() as session:
            return [m for m in storm.members(session, storm_id) if m.status == storm.FIRING]


# -- text helpers ------------------------------------------------------------------------------------

_GROUPS_LISTED = 15


def _named_groups(firing: list[StormMember], words: str) -> list[StormMember]:
    """The firing groups `words` names: `12` or `#12` is a group's number, else a piece of its title."""
    number = words.strip().removeprefix("#")
    if number.isdigit():
        return [m for m in firing if m.group_id == int(number)]
    wanted = slack_to_plain(words).strip().casefold()
    return [m for m in firing if wanted and wanted in m.title.casefold()]


def _group_lines(members: list[StormMember], language: str) -> str:
    lines = [_t("split_group", language, group=m.group_id, severity=m.severity, title=escape(clip(m.title, 120)))
             for m in members[:_GROUPS_LISTED]]
    if len(members) > _GROUPS_LISTED:
        lines.append(_t("split_more", language, count=len(members) - _GROUPS_LISTED))
    return "\n".join(lines)


def _state(incident: Incident) -> str:
    return IncidentStatus(incident.status).value


def _states(states: list[IncidentStatus]) -> str:
    return ", ".join(f"`{s.value}`" for s in states)


def _level_name(config: OncallConfig, severity: str, level: int) -> str:
    levels = escalation_levels(config.escalation.for_severity(severity))
    return levels[level - 1].name if 1 <= level <= len(levels) else f"level {level}"


def _refusal_text(decision: Decision, act: Act, requester: Requester, language: str) -> str:
    where = f"<#{requester.channel}>" if requester.channel else "#?"
    doing = _ACTS.get(act, {}).get(language) or act.value
    if decision.reason == "membership_unknown":
        return _t("membership_unknown", language, where=where, error=escape(str(requester.lookup_error)))
    if decision.reason == "not_a_responder":
        return _t("not_a_responder", language, act=doing)
    return _t("not_in_channel", language, where=where, act=doing)


def _blocks_answer(lines: list[str]) -> Answer:
    """Lines too many for one text: sections of whole lines, each within Slack's limit; the
    first line is the text (notifications)."""
    blocks: list[dict[str, Any]] = []
    chunk: list[str] = []
    for line in lines:
        line = clip(line, LIMITS["section"])
        if chunk and len("\n".join([*chunk, line])) > LIMITS["section"]:
            blocks.append(section(trusted_mrkdwn("\n".join(chunk))))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(section(trusted_mrkdwn("\n".join(chunk))))
    return Answer(lines[0], blocks)
