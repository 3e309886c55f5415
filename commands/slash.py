"""Slash commands: what each of them needs (an answer within Slack's 3 s, in the asker's
language), `/oncall`, and the @-mention help. `/incident` is commands.incident_command,
`/runbook` commands.runbook_flow.

A command's answer is private (ephemeral). It goes in the acknowledgement itself when it is
ready within ANSWER_WITHIN seconds; otherwise the command is acknowledged empty at that point
and the answer follows through the command's `response_url` (Slack shows the user an error when
nothing answers within 3 s, and does not retry a slash command).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.config import OncallConfig
from bot.db import Database
from bot.escalation_policy import EscalationLevel, SeverityEscalation
from bot.incident_ops import service_labels
from bot.paging import LOOKAHEAD, LevelRota, PagingService, Shift
from commands.blockkit import LIMITS, clip, escape
from commands.feature import Feature
from commands.i18n import Catalog, language_of
from commands.ids import COMMAND_ONCALL
from commands.notices import mention
from commands.slack_time import duration, slack_time
from integrations.errors import IntegrationError
from integrations.slack import SlackClient, SlackError

__all__ = ["ANSWER_WITHIN", "LOCALE_WITHIN", "MENTION_HELP", "Answer",
           "OnCallCommand", "answer_in_time", "asker_language",
           "escalation_levels", "mention_feature", "within_or_none"]

log = logging.getLogger(__name__)

ANSWER_WITHIN = 2.0  # seconds of work before the acknowledgement goes out empty (Slack's limit: 3)
LOCALE_WITHIN = 1.0  # seconds users.info may take; then the configured language
LOOKUP_WITHIN = 1.5  # seconds a Slack lookup that only decorates an answer may take

MENTION_HELP = ("I open a channel and a live card for each Alertmanager alert group, post its runbook, and "
                "page through PagerDuty. Try `/incident help`, `/oncall` or `/runbook list`.")


@dataclass(frozen=True)
class Answer:
    """A private answer to a command: mrkdwn text (we composed it: untrusted parts escaped),
    and blocks when it is longer than one text should be."""

    text: str
    blocks: list[dict[str, Any]] | None = None

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"text": clip(self.text, LIMITS["text"]), "response_type": "ephemeral"}
        if self.blocks:
            message["blocks"] = self.blocks[: LIMITS["blocks"]]
        return message


FAILED = Answer("Something went wrong answering that; try again (the bot's log has the details). / "
                "応答中にエラーが発生しました。もう一度お試しください。")


async def answer_in_time(ack: Any, respond: Any, work: Awaitable[Answer], *, within: float = ANSWER_WITHIN,
                         what: str = "command") -> None:
    """Acknowledge with the answer if `work` gives it within `within` seconds, else acknowledge
    now and send the answer through response_url when it is ready."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=within)
    if task in done:
        await ack(**_outcome(task, what).message())
        return
    await ack()
    await asyncio.wait({task})
    try:
        await respond(**_outcome(task, what).message())
    except Exception as exc:  # noqa: BLE001 - the answer is lost, the work is done; say so in the log
        log.warning("could not answer %s through response_url: %r", what, exc)


def _outcome(task: asyncio.Future[Answer], what: str) -> Answer:
    exc = task.exception()
    if exc is not None:
        log.error("%s failed", what, exc_info=exc)
        return FAILED
    return task.result()


async def asker_language(slack: SlackClient, user: str, fallback: str, *, within: float = LOCALE_WITHIN) -> str:
    """`en` or `ja`: the asker's Slack locale (a command carries none: users.info), else
    `fallback` (the configured language) when Slack is slow or cannot say."""
    try:
        locale = await asyncio.wait_for(slack.user_locale(user), within)
    except (SlackError, TimeoutError):
        return language_of(fallback)  # the answer matters more than its language
    return language_of(locale or fallback)


async def within_or_none(call: Awaitable[Any], within: float = LOOKUP_WITHIN) -> Any:
    """A Slack lookup that only decorates an answer: its value, or None when slow or refused."""
    try:
        return await asyncio.wait_for(call, within)
    except (SlackError, TimeoutError):
        return None


def mention_feature() -> Feature:
    return Feature(events={"app_mention": _mention_help})


async def _mention_help(event: dict[str, Any], say: Any) -> None:
    """@oncall-bot in a channel: answer in the thread with what the bot does and its commands."""
    await say(text=MENTION_HELP, thread_ts=event.get("thread_ts") or event.get("ts"))


# -- /oncall ---------------------------------------------------------------------------------------

_t = Catalog("slash", {
    "help": {"en": "`/oncall` shows who is on call now, per escalation level; `/oncall SERVICE` for one "
                   "service (routed as its incidents are). Only you see the answer.",
             "ja": "`/oncall` で現在のオンコール担当者をエスカレーションレベルごとに表示します。"
                   "`/oncall サービス名` でそのサービスの担当者(そのインシデントと同じルーティング)を表示します。"
                   "回答はあなたにだけ表示されます。"},
    "title_all": {"en": "*Who is on call now*", "ja": "*現在のオンコール*"},
    "title_service": {"en": "*Who is on call now for `{service}`*", "ja": "*`{service}` の現在のオンコール*"},
    "policy": {"en": "PagerDuty escalation policy `{policy}`:", "ja": "PagerDuty エスカレーションポリシー `{policy}`:"},
    "nobody": {"en": "nobody on call", "ja": "オンコール担当者なし"},
    "pd_unreachable": {"en": ":warning: PagerDuty could not be reached ({error}), so this is the configuration's "
                             "view only; try again shortly.",
                       "ja": ":warning: PagerDuty に接続できませんでした({error})。以下は設定の内容だけです。"
                             "少し待ってからもう一度お試しください。"},
    "pd_no_token": {"en": ":information_source: PagerDuty is not configured (set PAGERDUTY_API_TOKEN), so who is on "
                          "call per level is not known; this is the configuration's view.",
                    "ja": ":information_source: PagerDuty が設定されていないため(PAGERDUTY_API_TOKEN "
                          "を設定してください)、"
                          "レベルごとの担当者は分かりません。以下は設定の内容です。"},
    "pd_no_policy": {"en": ":information_source: No PagerDuty escalation policy is configured for this (set "
                           "`pagerduty.escalation_policy` or a route's), so who is on call per level is not known; "
                           "this is the configuration's view.",
                     "ja": ":information_source: PagerDuty のエスカレーションポリシーが設定されていません"
                           "(`pagerduty.escalation_policy` かルートに設定してください)。"
                           "レベルごとの担当者は分かりません。"
                           "以下は設定の内容です。"},
    "responders": {"en": "*Responders* (invited to each matching incident's channel): {who}",
                   "ja": "*対応者*(一致するインシデントのチャンネルに招待): {who}"},
    "responder_rules": {"en": "*Responders* (invited to the channel of each incident matching the rule):",
                        "ja": "*対応者*(ルールに一致するインシデントのチャンネルに招待):"},
    "no_responders": {"en": "*Responders*: none configured (`responders` in ONCALL_CONFIG)",
                      "ja": "*対応者*: 設定なし(ONCALL_CONFIG の `responders`)"},
    "no_match": {"en": "*Responders*: no `responders` rule of ONCALL_CONFIG matches it",
                 "ja": "*対応者*: 一致する `responders` のルールがありません (ONCALL_CONFIG)"},
    "every_incident": {"en": "every incident", "ja": "すべてのインシデント"},
    "timetable": {"en": "*Escalation timetable*:", "ja": "*エスカレーションの時刻表*:"},
    "at_once": {"en": "at once", "ja": "即時"},
    "at": {"en": "at {minutes}", "ja": "{minutes} 後"},
    "unacknowledged": {"en": "if unacknowledged", "ja": "未確認なら"},
    "unresolved": {"en": "if unresolved", "ja": "未解決なら"},
    "business_hours": {"en": "in business hours", "ja": "営業時間内"},
    "never": {"en": "never pages", "ja": "呼び出しなし"},
    "level": {"en": "PagerDuty level {n}", "ja": "PagerDuty レベル {n}"},
    # now and next, per level
    "until": {"en": "until {at}", "ja": "{at} まで"},
    "always": {"en": "always on call", "ja": "常時オンコール"},
    "next": {"en": "next: {who} from {at}", "ja": "次: {who}({at} から)"},
    "next_unknown": {"en": "next: nobody scheduled in the next {days} days", "ja": "次: 今後 {days} 日間は予定なし"},
    "from_config": {"en": "• *{name}* ({level}): not known without PagerDuty · next: not known from config",
                    "ja": "• *{name}*({level}): PagerDuty なしでは不明 · 次: 設定からは不明"},
})


class OnCallCommand:
    """`/oncall [service]`: who is on call now per escalation level, from PagerDuty when it is
    configured (the escalation policy the service's incidents route to) and from the
    configuration (the levels, their timetable, the responders), answered privately."""

    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, paging: PagingService) -> None:
        self.db, self.config, self.slack, self.paging = db, config, slack, paging

    def feature(self) -> Feature:
        return Feature(commands={COMMAND_ONCALL: self.on_command})

    async def on_command(self, ack: Any, command: dict[str, Any], respond: Any) -> None:
        await answer_in_time(ack, respond, self.answer(command), what=COMMAND_ONCALL)

    async def answer(self, command: dict[str, Any]) -> Answer:
        language = await asker_language(self.slack, str(command.get("user_id", "")), self.config.runbooks.locale)
        words = str(command.get("text", "")).split()
        if words[:1] in (["help"], ["-h"], ["--help"]):
            return Answer(_t("help", language))
        service = words[0][:200] if words else None
        return Answer(clip("\n".join(await self.lines(language, service)), LIMITS["text"]))

    async def lines(self, language: str, service: str | None = None) -> list[str]:
        """What `/oncall [service]` says, a line each (mrkdwn, composed: also the App Home's, commands.home)."""
        labels = await asyncio.to_thread(self._labels, service) if service else {}
        lines = [_t("title_service", language, service=escape(service)) if service else _t("title_all", language)]
        lines += await self._pagerduty(labels, language)
        lines += self._responders(labels if service else None, language)
        lines += self._timetable(language)
        return lines

    def _labels(self, service: str) -> dict[str, str]:
        with self.db.read() as session:
            return service_labels(session, service)

    def _level_names(self) -> dict[int, str]:
        """PagerDuty level -> the configuration's name for it (the first severity naming it)."""
        names: dict[int, str] = {}
        for severity in ("P1", "P2", "P3", "P4"):
            for level in escalation_levels(self.config.escalation.for_severity(severity)):
                names.setdefault(level.pagerduty_level, level.name)
        return dict(sorted(names.items()))

    async def _pagerduty(self, labels: dict[str, str], language: str) -> list[str]:
        """Who is on call now and next per level, from PagerDuty in one request for every level;
        else the configuration's levels, saying what is not known."""
        _, policy = self.config.pagerduty.route(labels)
        levels = self._level_names()
        try:
            rota = await self.paging.rota(policy)
        except IntegrationError as exc:
            log.warning("/oncall: PagerDuty could not say who is on call: %s", exc)
            return [_t("pd_unreachable", language, error=escape(clip(str(exc), 200))), *self._from_config(language)]
        if rota.missing:
            return [_t("pd_no_token" if self.paging.rest is None else "pd_no_policy", language),
                    *self._from_config(language)]
        lines = [_t("policy", language, policy=escape(str(policy)))]
        for n, name in levels.items():
            level = rota.levels.get(n) or LevelRota(n)
            lines.append(f"• *{escape(name)}* ({_t('level', language, n=n)}): "
                         + await self._now_and_next(level, rota.at, language))
        return lines

    async def _now_and_next(self, level: LevelRota, at: datetime, language: str) -> str:
        """`<@U1> until 18:00 · next: <@U2> from 18:00`; `<@U1> (always on call)`."""
        now = ", ".join(await self._people(level.now)) or _t("nobody", language)
        if level.always:
            return f"{now} ({_t('always', language)})"
        ends = [s.end for s in level.now if s.end is not None]
        text = f"{now} {_t('until', language, at=slack_time(min(ends), at))}" if ends else now
        if not level.next:
            return f"{text} · {_t('next_unknown', language, days=LOOKAHEAD.days)}"
        start = min(s.start for s in level.next if s.start is not None)
        return f"{text} · " + _t("next", language, who=", ".join(await self._people(level.next)),
                                 at=slack_time(start, at))

    async def _people(self, shifts: list[Shift]) -> list[str]:
        return list(await asyncio.gather(*(self._person(s.name, s.email) for s in shifts)))

    def _from_config(self, language: str) -> list[str]:
        """The configuration's levels when PagerDuty cannot say who is on call at them."""
        return [_t("from_config", language, name=escape(name), level=_t("level", language, n=n))
                for n, name in self._level_names().items()]

    async def _person(self, name: str, email: str | None) -> str:
        """A PagerDuty user as a Slack mention when Slack knows their e-mail, else by name."""
        user = await within_or_none(self.slack.user_id_by_email(email)) if email else None
        return mention(user) if user else escape(clip(name, 100))

    def _responders(self, labels: dict[str, str] | None, language: str) -> list[str]:
        if labels is not None:
            who = self.config.responders_for(labels)
            if not who:
                return [_t("no_match" if self.config.responders else "no_responders", language)]
            return [_t("responders", language, who=", ".join(_responder(w) for w in who))]
        if not self.config.responders:
            return [_t("no_responders", language)]
        lines = [_t("responder_rules", language)]
        for rule in self.config.responders:
            match = " ".join(f"`{escape(k)}={escape(v)}`" for k, v in sorted(rule.match.items())) \
                or _t("every_incident", language)
            lines.append(f"• {match}: " + ", ".join(_responder(w) for w in rule.invite))
        return lines

    def _timetable(self, language: str) -> list[str]:
        lines = [_t("timetable", language)]
        for severity in ("P1", "P2", "P3", "P4"):
            rule = self.config.escalation.for_severity(severity)
            page = rule.page_minutes
            if page is None:
                lines.append(f"• {severity}: {_t('never', language)}")
                continue
            steps = []
            for n, level in enumerate(escalation_levels(rule)):
                at = page + level.after_minutes
                when = _t("at_once", language) if at == 0 else _t("at", language, minutes=_minutes(at, language))
                condition = "" if n == 0 else f" ({_t(level.condition(rule), language)})"
                steps.append(f"{escape(level.name)} {when}{condition}")
            hours = f" ({_t('business_hours', language)})" if rule.business_hours_only else ""
            lines.append(f"• {severity}: " + " → ".join(steps) + hours)
        return lines


def escalation_levels(rule: SeverityEscalation) -> list[EscalationLevel]:
    """The levels a severity pages (bot.escalation pages one `on-call` level when none are named)."""
    if rule.levels:
        return list(rule.levels)
    return [EscalationLevel(name="on-call", after_minutes=0, pagerduty_level=1)] if rule.page_minutes is not None \
        else []


def _minutes(minutes: int, language: str) -> str:
    return duration(timedelta(minutes=minutes), language)


def _responder(who: str) -> str:
    """A configured responder: a user mentioned, a user group as a group mention, an e-mail as text."""
    if who.startswith("S") and "@" not in who:
        return f"<!subteam^{escape(who)}>"
    return mention(who) if "@" not in who else escape(who)
