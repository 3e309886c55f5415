"""Notices: the one place the domain's notices (data in `slack.notify` jobs) become Slack text.

bot/ records *what* happened (`{"notice": "paging", "level": "L2 primary on-call", ...}`);
this module words it. Every value is escaped here, once, because notices are posted as a
message's `text`, where Slack parses `<!channel>`, `<@U…>` and `<url|label>`: a label, a
maintenance window's name or a PagerDuty user's name cannot ping anyone or become a link.
Only a value checked to be a Slack user id becomes a mention.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from commands.blockkit import clip, escape
from commands.i18n import Catalog, language_of

__all__ = ["NOTICE_KINDS", "invite_problems_text", "mention", "notice_text", "oncall_invited_text", "plain_text"]

SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
NAME_LIMIT = 100  # characters of an untrusted name shown in a notice


def plain_text(value: Any, limit: int = 500) -> str:
    """An untrusted value, safe where Slack parses mentions and links."""
    return escape(clip(str(value), limit))


def mention(user: Any, locale: str | None = None) -> str:
    """A Slack user id as a mention; anything else shown as (escaped) text."""
    text = str(user or "")
    return f"<@{text}>" if SLACK_USER.fullmatch(text) else plain_text(text or _t("someone", locale), NAME_LIMIT)


_t = Catalog("notices", {
    "in_pagerduty_by": {"en": "in PagerDuty by {who}", "ja": "PagerDuty で {who} が"},
    "by": {"en": "by {who}", "ja": "{who} が"},
    "someone": {"en": "someone", "ja": "誰か"},
    "on_call": {"en": "on-call", "ja": "オンコール"},
    "acked_in_pagerduty": {"en": ":eyes: Acknowledged in PagerDuty by {who}; escalation stopped.",
                           "ja": ":eyes: PagerDuty で {who} が確認しました。エスカレーションは止まりました。"},
    "acknowledged": {"en": ":eyes: {who} acknowledged; escalation stopped.",
                     "ja": ":eyes: {who} が確認しました。エスカレーションは止まりました。"},
    "nobody_in_command": {"en": "nobody has taken command yet (press *Ack* on the card)",
                          "ja": "まだ誰も指揮を取っていません(カードの *Ack* を押してください)"},
    "update_due": {"en": ":memo: Status update due (every {minutes} min): {owner}, please post where things stand.",
                   "ja": ":memo: 状況報告の時間です({minutes} 分ごと): {owner}、現状を投稿してください。"},
    "page_held": {"en": ":construction: Not paging: maintenance window *{window}* until {until} UTC: nobody is paged.",
                  "ja": ":construction: 呼び出しません: メンテナンス時間帯 *{window}*({until} UTC まで)のため、"
                        "誰も呼び出されません。"},
    "assigned": {"en": ":arrows_counterclockwise: {verb} in PagerDuty: now with {names}.",
                 "ja": ":arrows_counterclockwise: PagerDuty で{verb}: 現在の担当は {names}。"},
    "reassigned": {"en": "Reassigned", "ja": "再割り当て"},
    "escalated": {"en": "Escalated", "ja": "エスカレーション"},
    "alerts_resolved": {"en": ":white_check_mark: Resolved: every alert in the group stopped firing.",
                        "ja": ":white_check_mark: 解決: グループのすべてのアラートが止まりました。"},
    "reopened": {"en": ":rotating_light: Reopened: the alert group is firing again.",
                 "ja": ":rotating_light: 再開: アラートグループが再び発火しています。"},
    "resolved": {"en": ":white_check_mark: Resolved {who}.", "ja": ":white_check_mark: {who}解決しました。"},
    "paging": {"en": ":rotating_light: Paging {level} through PagerDuty: {why}.",
               "ja": ":rotating_light: PagerDuty で {level} を呼び出しています: {why}。"},
    "escalating": {"en": ":arrow_double_up: Escalating to {level}: {why}.",
                   "ja": ":arrow_double_up: {level} にエスカレーションします: {why}。"},
    "page_not_configured": {"en": ":warning: Should page {level} ({why}), but PagerDuty is not configured "
                                  "(set PAGERDUTY_ROUTING_KEY): nobody was paged.",
                            "ja": ":warning: {level} を呼び出すべきですが({why})、PagerDuty が設定されていません"
                                  "(PAGERDUTY_ROUTING_KEY を設定してください): 誰も呼び出されていません。"},
    "ack_overdue": {"en": ":alarm_clock: Not acknowledged within {minutes} min. "
                          "Whoever is on it: press *Ack* on the card.",
                    "ja": ":alarm_clock: {minutes} 分以内に確認されていません。"
                          "対応中の方はカードの *Ack* を押してください。"},
    # who PagerDuty has on call, invited (commands.slack_sync)
    "oncall_missing": {"en": ":pager: {level}: {missing}, so the bot cannot tell who is on call.",
                       "ja": ":pager: {level}: {missing}。そのため誰がオンコールか分かりません。"},
    "oncall_found": {"en": ":pager: {level}: {people}.", "ja": ":pager: {level}: {people}。"},
    "oncall_invited": {"en": ":pager: {level}: {people} invited.", "ja": ":pager: {level}: {people} を招待しました。"},
    "nobody_on_call": {"en": "nobody found on call", "ja": "オンコールの人が見つかりません"},
    "not_on_call": {"en": "{who} (not on call in PagerDuty: invite them by hand)",
                    "ja": "{who}(PagerDuty でオンコールではありません: 手動で招待してください)"},
    "no_slack_user": {"en": "{who} (no Slack user for {email})", "ja": "{who}({email} の Slack ユーザーがいません)"},
    "no_email": {"en": "no e-mail", "ja": "メールアドレスなし"},
    "could_not_invite": {"en": " Could not invite: {problems}.", "ja": " 招待できませんでした: {problems}。"},
    "invite_problems": {"en": "Could not invite: {problems}. Check the responders in ONCALL_CONFIG.",
                        "ja": "招待できませんでした: {problems}。ONCALL_CONFIG の responders を確認してください。"},
})


def _who(n: dict[str, Any], locale: str | None) -> str:
    if n.get("pagerduty_user"):
        return _t("in_pagerduty_by", locale, who=plain_text(n["pagerduty_user"], NAME_LIMIT))
    return _t("by", locale, who=mention(n.get("user"), locale))


# The reasons bot.escalation gives for a page, in other languages; any other reason is shown as recorded.
_WHY = {"ja": [(re.compile(r"not acknowledged within (\d+) min"), r"\1 分以内に確認されませんでした"),
               (re.compile(r"not acknowledged (\d+) min after opening"), r"開始から \1 分経っても確認されていません"),
               (re.compile(r"(P\d) pages at once"), r"\1 はすぐに呼び出します"),
               (re.compile(r"not acknowledged (\d+) min after the page"),
                r"呼び出しから \1 分経っても確認されていません"),
               (re.compile(r"unresolved (\d+) min after the page"), r"呼び出しから \1 分経っても解決していません"),
               (re.compile(r", held for business hours"), r"(営業時間まで保留)"),
               (re.compile(r"escalated by hand"), r"が手動でエスカレーションしました")]}


def _why(n: dict[str, Any], locale: str | None) -> str:
    why = str(n.get("why") or "")
    for pattern, words in _WHY.get(language_of(locale), []):
        why = pattern.sub(words, why)
    why = plain_text(why)
    return f"{mention(n['by'], locale)} {why}" if n.get("by") else why


def _level(n: dict[str, Any], locale: str | None) -> str:
    return f"*{plain_text(n.get('level') or _t('on_call', locale), NAME_LIMIT)}*"


def _acknowledged(n: dict[str, Any], locale: str | None) -> str:
    if n.get("pagerduty_user"):
        return _t("acked_in_pagerduty", locale, who=plain_text(n["pagerduty_user"], NAME_LIMIT))
    return _t("acknowledged", locale, who=mention(n.get("user"), locale))


def _update_due(n: dict[str, Any], locale: str | None) -> str:
    owner = mention(n["owner"]) if n.get("owner") else _t("nobody_in_command", locale)
    return _t("update_due", locale, minutes=plain_text(n.get("minutes")), owner=owner)


def _page_held(n: dict[str, Any], locale: str | None) -> str:
    until = datetime.fromisoformat(str(n["until"]))
    return _t("page_held", locale, window=plain_text(n.get("window"), NAME_LIMIT), until=f"{until:%Y-%m-%d %H:%M}")


def _assigned(n: dict[str, Any], locale: str | None) -> str:
    names = ", ".join(plain_text(name, NAME_LIMIT) for name in n.get("names", []))
    verb = str(n.get("verb", "reassigned"))
    verb = _t(verb, locale) if verb in ("reassigned", "escalated") else plain_text(verb.capitalize(), NAME_LIMIT)
    return _t("assigned", locale, verb=verb, names=names)


_NOTICES: dict[str, Callable[[dict[str, Any], str | None], str]] = {
    "alerts_resolved": lambda n, lc: _t("alerts_resolved", lc),
    "reopened": lambda n, lc: _t("reopened", lc),
    "resolved": lambda n, lc: _t("resolved", lc, who=_who(n, lc)),
    "acknowledged": _acknowledged,
    "paging": lambda n, lc: _t("paging", lc, level=_level(n, lc), why=_why(n, lc)),
    "escalating": lambda n, lc: _t("escalating", lc, level=_level(n, lc), why=_why(n, lc)),
    "page_not_configured": lambda n, lc: _t("page_not_configured", lc, level=_level(n, lc), why=_why(n, lc)),
    "page_held": _page_held,
    "ack_overdue": lambda n, lc: _t("ack_overdue", lc, minutes=plain_text(n.get("minutes"))),
    "update_due": _update_due,
    "pagerduty_assigned": _assigned,
}


NOTICE_KINDS = tuple(_NOTICES)


def notice_text(notice: dict[str, Any], locale: str | None = None) -> str:
    """The text of a notice, in `locale` (the configured one: notices go to the channel). A job
    written before notices were data carries its `text`."""
    kind = notice.get("notice")
    if kind is None:
        return str(notice.get("text", ""))
    render = _NOTICES.get(str(kind))
    if render is None:
        raise ValueError(f"unknown notice {kind!r}: this bot is older than the one that queued it")
    return render(notice, locale)


def oncall_invited_text(level: str, locale: str | None, *, missing: str | None = None, found: list[str] | None = None,
                        invited: bool = False, not_on_call: list[str] | None = None,
                        no_slack_user: list[tuple[str, str | None]] | None = None,
                        refused: list[tuple[str, str]] | None = None) -> str:
    """Who PagerDuty has on call at `level`, invited to the channel (or why not)."""
    name = plain_text(level, NAME_LIMIT)
    if missing:
        return _t("oncall_missing", locale, level=name, missing=plain_text(missing))
    problems = [_t("not_on_call", locale, who=plain_text(who, NAME_LIMIT)) for who in not_on_call or []]
    problems += [_t("no_slack_user", locale, who=plain_text(who, NAME_LIMIT),
                    email=plain_text(email, 200) if email else _t("no_email", locale))
                 for who, email in no_slack_user or []]
    problems += [f"{mention(user)} ({plain_text(error, NAME_LIMIT)})" for user, error in refused or []]
    people = ", ".join(mention(u) for u in found or []) or _t("nobody_on_call", locale)
    text = _t("oncall_invited" if found and invited else "oncall_found", locale, level=name, people=people)
    return text + (_t("could_not_invite", locale, problems=", ".join(problems)) if problems else "")


def invite_problems_text(problems: list[str], locale: str | None) -> str:
    """The responders Slack would not let in; `problems` are already safe text."""
    return _t("invite_problems", locale, problems=", ".join(problems))
