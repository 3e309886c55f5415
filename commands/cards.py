"""The incident card and the announcement: pure functions from a `CardView` (bot.card_view, read
in one go) to Block Kit, within Slack's limits. What paging did, the buttons, the timeline: all
decided here, in one place."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from bot.card_view import CardView
from bot.models import Alert, Incident, IncidentStatus, Silence, TimelineEntry
from commands.blockkit import (
    LIMITS,
    button,
    clip,
    context,
    divider,
    escape,
    header,
    link,
    mrkdwn,
    plain,
    section,
    trusted_mrkdwn,
)
from commands.card_memory import past_incident_blocks, remediation_blocks, state_button_blocks
from commands.i18n import Catalog
from commands.ids import (
    CARD_ACK,
    CARD_ACTIONS_BLOCK,
    CARD_ESCALATE,
    CARD_RESOLVE,
    CARD_SILENCE,
    card_silence_option,
    silence_block,
    silence_expire_action,
)
from commands.role_blocks import role_blocks
from commands.slack_time import duration, slack_time
from commands.storm_blocks import storm_blocks, storm_heading

__all__ = ["NOT_CONFIGURED", "SEVERITY_ICON", "SILENCE_CHOICES", "actor_text", "announcement", "card_button_value",
           "incident_card", "read_card_button_value"]

SEVERITY_ICON = {"P1": ":red_circle:", "P2": ":large_orange_circle:", "P3": ":large_yellow_circle:",
                 "P4": ":large_blue_circle:"}
MAX_ALERTS_SHOWN = 20
DASHBOARD_KEYS = ("dashboard", "dashboard_url", "grafana_url", "grafana")
DESCRIPTION_KEYS = ("description", "message")
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
ACTOR_NAMES = {"alertmanager": "Alertmanager", "pagerduty": "PagerDuty"}
TIMELINE_TEXT = 400  # per entry, escaped: five entries, their times and actors fit one context element

# The card's and the announcement's words, in the configured language (`runbooks.locale`: CardView.locale).
_t = Catalog("cards", {
    "title_line": {"en": "{icon} *{severity}* · *{status}* · incident #{id}",
                   "ja": "{icon} *{severity}* · *{status}* · インシデント #{id}"},
    "service": {"en": "Service", "ja": "サービス"},
    "namespace": {"en": "Namespace", "ja": "Namespace"},
    "started": {"en": "Started", "ja": "開始"},
    "alerts": {"en": "Alerts", "ja": "アラート"},
    "alert_counts": {"en": "{firing} firing · {resolved} resolved", "ja": "発火中 {firing} · 解決済み {resolved}"},
    "commander": {"en": "Commander", "ja": "指揮者"},
    "unassigned": {"en": "unassigned", "ja": "未割り当て"},
    "acknowledged": {"en": "Acknowledged", "ja": "確認済み"},
    "resolved": {"en": "Resolved", "ja": "解決"},
    "resolved_value": {"en": "{at} after {lasted}\nby {who}", "ja": "{at}({lasted} 後)\n{who} が解決"},
    "more_alerts": {"en": "…and {count} more alert(s) not shown", "ja": "…ほか {count} 件のアラートは表示していません"},
    "source": {"en": "source", "ja": "ソース"},
    "link_runbook": {"en": "Runbook", "ja": "ランブック"},
    "link_dashboard": {"en": "Dashboard", "ja": "ダッシュボード"},
    "link_source": {"en": "Source", "ja": "ソース"},
    "timeline": {"en": ":clock3: *Timeline*", "ja": ":clock3: *タイムライン*"},
    "status_entry": {"en": "status ", "ja": "状態 "},
    "announce": {"en": "{icon} *{severity}* incident #{id} opened{where}: {title}",
                 "ja": "{icon} *{severity}* インシデント #{id} を開始しました{where}: {title}"},
    "announce_where": {"en": " in <#{channel}>", "ja": "(<#{channel}>)"},
    "someone": {"en": "someone unknown", "ja": "不明な人"},
    "the_bot": {"en": "the bot", "ja": "ボット"},
    # silences
    "silenced": {"en": ":no_bell: *Silenced* `{matchers}` until {until} · approved by {who}",
                 "ja": ":no_bell: *サイレンス中* `{matchers}` {until} まで · 承認: {who}"},
    "being_expired": {"en": ":hourglass_flowing_sand: being expired, asked by {who}",
                      "ja": ":hourglass_flowing_sand: 終了処理中({who} が依頼)"},
    "expire_title": {"en": "Expire the silence?", "ja": "サイレンスを終了しますか?"},
    "expire_text": {"en": "Alerts matching {matchers} notify again.",
                    "ja": "{matchers} に一致するアラートが再び通知されます。"},
    "expire": {"en": "Expire", "ja": "終了"},
    "cancel": {"en": "Cancel", "ja": "キャンセル"},
    "more_silences": {"en": "…and {count} more silence(s) not shown",
                      "ja": "…ほか {count} 件のサイレンスは表示していません"},
    "silence_for": {"en": "Silence {choice}", "ja": "{choice} サイレンス"},
    # paging
    "not_configured": {"en": ":warning: Nobody will be paged: PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY, "
                             "or a pagerduty route matching this incident's labels)",
                       "ja": ":warning: 誰も呼び出されません: PagerDuty が設定されていません(PAGERDUTY_ROUTING_KEY か、"
                             "このインシデントのラベルに一致する pagerduty ルートを設定してください)"},
    "acked_in_pagerduty": {"en": ":white_check_mark: Acknowledged in PagerDuty by {who}",
                           "ja": ":white_check_mark: PagerDuty で {who} が確認しました"},
    "window": {"en": ":construction: Maintenance window *{name}* until {until}: nobody is paged",
               "ja": ":construction: メンテナンス時間帯 *{name}*({until} まで): 誰も呼び出されません"},
    "pages_at": {"en": ":alarm_clock: Pages on-call at {at} unless acknowledged",
                 "ja": ":alarm_clock: 確認されなければ {at} にオンコールを呼び出します"},
    "page_pending": {"en": ":hourglass_flowing_sand: page pending", "ja": ":hourglass_flowing_sand: 呼び出し待ち"},
    "page_failed": {"en": ":x: page failed", "ja": ":x: 呼び出し失敗"},
    "page_delivered": {"en": ":pager: page delivered", "ja": ":pager: 呼び出し送信済み"},
    "delivered_at": {"en": " at {at}", "ja": "({at})"},
    "retrying": {"en": " (retrying: {reason})", "ja": "(再試行中: {reason})"},
    "failed_reason": {"en": " ({reason})", "ja": "({reason})"},
    "delivery": {"en": "{state}{when} · PagerDuty level {level}{error}",
                 "ja": "{state}{when} · PagerDuty レベル {level}{error}"},
    # buttons
    "ack": {"en": "Ack", "ja": "確認 (Ack)"},
    "escalate_now": {"en": "Escalate now", "ja": "今すぐエスカレーション"},
    "page_now": {"en": "Page now", "ja": "今すぐ呼び出す"},
    "resolve": {"en": "Resolve", "ja": "解決"},
    "resolve_title": {"en": "Resolve the incident?", "ja": "インシデントを解決しますか?"},
    "resolve_text": {"en": "Timers stop and PagerDuty is resolved too.",
                     "ja": "タイマーが止まり、PagerDuty も解決されます。"},
})


def fallback_text(incident: Incident) -> str:
    """The message `text` (notifications, search): Slack parses mentions and links here too."""
    return clip(f"[{incident.severity}] {escape(incident.title)} ({_status(incident)})", LIMITS["text"])


def _status(incident: Incident) -> str:
    # A fresh row holds the enum member, one read back the plain string: show the value either way.
    return IncidentStatus(incident.status).value


def incident_card(view: CardView) -> tuple[str, list[dict[str, Any]]]:
    """Returns (fallback text, blocks). A storm incident's alerts are its groups' table
    (commands.storm_blocks), cut to the room the rest of the card leaves."""
    inc = view.incident
    icon = SEVERITY_ICON.get(inc.severity, ":rotating_light:")
    blocks: list[dict[str, Any]] = [
        header(storm_heading(view) if view.storm is not None else f"{inc.severity} · {inc.title}"),
        section(trusted_mrkdwn(_t("title_line", view.locale, icon=icon, severity=inc.severity,
                                  status=_status(inc).upper(), id=inc.id)),
                fields=_fields(view)),
    ]
    blocks += role_blocks(view)  # who holds each role, the last status update
    description = _description(inc.annotations)
    if description:
        blocks.append(section(mrkdwn(description)))
    tail = _tail_blocks(view)
    if view.storm is not None:
        level = view.paging.level if view.paging else 0
        blocks += storm_blocks(view, LIMITS["blocks"] - len(blocks) - len(tail), card_button_value(inc, level))
    else:
        blocks += _alert_blocks(view)
    return fallback_text(inc), (blocks + tail)[: LIMITS["blocks"]]


def _tail_blocks(view: CardView) -> list[dict[str, Any]]:
    """What follows the alerts: links, paging, silences, remediations, timeline, the buttons."""
    inc, blocks = view.incident, []
    links = _links(view)
    if links:
        blocks.append(context(trusted_mrkdwn(" · ".join(links))))
    notes = _paging_notes(view)
    if notes:
        blocks.append(context(*(trusted_mrkdwn(n) for n in notes)))
    blocks += _silence_blocks(view)
    blocks += remediation_blocks(view)
    if view.timeline:
        blocks.append(context(trusted_mrkdwn(_timeline_text(view.timeline, view.now, view.locale))))
    blocks += past_incident_blocks(view)
    if inc.is_open:
        blocks.append({"type": "actions", "block_id": CARD_ACTIONS_BLOCK, "elements": _buttons(view)})
        blocks += state_button_blocks(view, card_button_value(inc, view.paging.level if view.paging else 0))
    return blocks


def announcement(incident: Incident, channel_id: str | None,
                 locale: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    where = _t("announce_where", locale, channel=channel_id) if channel_id else ""
    icon = SEVERITY_ICON.get(incident.severity, ":rotating_light:")
    line = _t("announce", locale, icon=icon, severity=incident.severity, id=incident.id, where=where,
              title=escape(incident.title))
    return fallback_text(incident), [section(trusted_mrkdwn(line))]


def _fields(view: CardView) -> list[dict[str, Any]]:
    inc, locale = view.incident, view.locale
    firing = sum(1 for a in view.alerts if a.status == "firing")
    pairs = [
        ("service", escape(inc.service or "—")),
        ("namespace", escape(inc.namespace or "—")),
        ("started", slack_time(view.started_at, view.now)),
        ("alerts", _t("alert_counts", locale, firing=firing, resolved=len(view.alerts) - firing)),
        ("commander", actor_text(inc.commander, locale) if inc.commander else _t("unassigned", locale)),
    ]
    if inc.acknowledged_by:
        pairs.append(("acknowledged", actor_text(inc.acknowledged_by, locale)))
    if inc.resolved_at:
        pairs.append(("resolved", _t("resolved_value", locale, at=slack_time(inc.resolved_at, view.now),
                                     lasted=duration(inc.resolved_at - view.started_at, locale),
                                     who=actor_text(inc.resolved_by, locale))))
    return [trusted_mrkdwn(clip(f"*{_t(name, locale)}*\n{value}", LIMITS["field"])) for name, value in pairs]


def _alert_blocks(view: CardView) -> list[dict[str, Any]]:
    ordered = sorted(view.alerts, key=lambda a: (a.status != "firing", a.starts_at))
    blocks: list[dict[str, Any]] = [divider()]
    common = _description(view.incident.annotations)
    for alert in ordered[:MAX_ALERTS_SHOWN]:
        blocks.append(section(_alert_text(alert, common, view.locale)))
    hidden = len(ordered) - MAX_ALERTS_SHOWN + view.incident.truncated_alerts
    if hidden > 0:
        blocks.append(context(trusted_mrkdwn(_t("more_alerts", view.locale, count=hidden))))
    return blocks


def _alert_text(alert: Alert, common_description: str | None, locale: str) -> dict[str, Any]:
    icon = ":fire:" if alert.status == "firing" else ":white_check_mark:"
    summary = alert.annotations.get("summary", "")
    labels = " ".join(f"`{escape(k)}={escape(clip(v, 200))}`" for k, v in sorted(alert.labels.items())
                      if k != "alertname")
    source = link(alert.generator_url, _t("source", locale))
    head = f"{icon} *{escape(clip(alert.alertname, 200))}*" + (f" — {escape(clip(summary, 500))}" if summary else "")
    description = _description(alert.annotations)
    detail = ""
    if description and description != common_description:
        # The room the other parts leave (at least a line's worth; long labels are cut instead).
        room = max(300, LIMITS["section"] - len(head) - len(labels) - len(source or "") - 3)
        detail = mrkdwn(description, room)["text"]
    text = "\n".join(p for p in (head, detail, labels, source) if p)
    return trusted_mrkdwn(_safe_clip(text, LIMITS["section"]))


def _description(annotations: dict[str, str]) -> str | None:
    return next((annotations[k] for k in DESCRIPTION_KEYS if annotations.get(k)), None)


def _safe_clip(text: str, limit: int) -> str:
    # Cutting composed mrkdwn may split a `code` span or an entity; close what was cut.
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    cut = cut[: cut.rfind("&")] if cut.rfind("&") > cut.rfind(";") else cut
    return cut + ("`…" if cut.count("`") % 2 else "…")


def _links(view: CardView) -> list[str]:
    inc, locale = view.incident, view.locale
    notes = inc.annotations
    found = [
        link(notes.get("runbook_url"), _t("link_runbook", locale)),
        next((link(notes.get(k), _t("link_dashboard", locale)) for k in DASHBOARD_KEYS if notes.get(k)), None),
        link(next((a.generator_url for a in view.alerts if a.generator_url), None), _t("link_source", locale)),
        link(inc.external_url, "Alertmanager"),
    ]
    return [item for item in found if item]


def _timeline_text(entries: list[TimelineEntry], now: datetime | None, locale: str) -> str:
    """The last five entries, oldest first, one a line: "14:32 <@U1>: ran k8s.logs …"."""
    recent = sorted(entries, key=lambda e: (e.at, e.id or 0))[-5:]
    lines = [f"{slack_time(e.at, now)} {actor_text(e.actor, locale)}: {_entry_text(e, locale)}"
             for e in recent]
    return _t("timeline", locale) + "\n" + "\n".join(lines)


def _entry_text(entry: TimelineEntry, locale: str) -> str:
    prefix = _t("status_entry", locale) if entry.kind == "status" else ""  # its text is only "detected → triaged"
    message = link((entry.data or {}).get("permalink"), "↗")  # a captured message (bot.timeline_capture)
    return prefix + mrkdwn(entry.text, TIMELINE_TEXT)["text"] + (f" {message}" if message else "")


def actor_text(actor: str | None, locale: str | None = None) -> str:
    """Who did something, as trusted mrkdwn: a Slack user mentioned, anyone else by name (escaped)."""
    if not actor:
        return _t("someone", locale)
    if actor == "oncall-bot":
        return _t("the_bot", locale)
    if SLACK_USER.match(actor):
        return f"<@{actor}>"
    source, _, name = actor.partition(":")
    if source == "pagerduty" and name:
        return f"{escape(clip(name, 64))} (PagerDuty)"
    return escape(ACTOR_NAMES.get(actor, clip(actor, 64)))


# -- silences: what each silences, until when, by whom; its Expire button ----------------------------

MAX_SILENCES_SHOWN = 5
SILENCE_MATCHERS_SHOWN = 500  # characters of the matchers, before escaping


def _silence_blocks(view: CardView) -> list[dict[str, Any]]:
    """One section per silence that has neither ended nor been expired (bot.silences.shown, as of
    the card's `now`): its matchers, its end, who approved it, and an Expire button carrying only
    the silence's opaque token; once someone asked, who did instead of the button."""
    blocks, locale = [], view.locale
    for index, silence in enumerate(view.silences[:MAX_SILENCES_SHOWN]):
        text = _silence_text(silence, view.now, locale)
        if silence.expire_requested_at is not None:
            asked = _t("being_expired", locale, who=actor_text(silence.expire_requested_by, locale))
            blocks.append(section(trusted_mrkdwn(f"{text}\n{asked}"), block_id=silence_block(index)))
            continue
        confirm = {"title": _plain(_t("expire_title", locale)),
                   "text": _plain(clip(_t("expire_text", locale, matchers=silence.matchers), 300)),
                   "confirm": _plain(_t("expire", locale)), "deny": _plain(_t("cancel", locale))}
        expire = button(_t("expire", locale), silence_expire_action(index), silence.token, confirm=confirm)
        blocks.append(section(trusted_mrkdwn(text), accessory=expire, block_id=silence_block(index)))
    hidden = len(view.silences) - MAX_SILENCES_SHOWN
    if hidden > 0:
        blocks.append(context(trusted_mrkdwn(_t("more_silences", locale, count=hidden))))
    return blocks


def _silence_text(silence: Silence, now: datetime | None, locale: str) -> str:
    matchers = escape(clip(silence.matchers, SILENCE_MATCHERS_SHOWN))  # label values: untrusted
    return _t("silenced", locale, matchers=matchers, until=slack_time(silence.ends_at, now),
              who=actor_text(silence.created_by, locale))


# -- paging: what it did, and the buttons -------------------------------------------------------

NOT_CONFIGURED = _t("not_configured", "en")
_DELIVERY = {"pending": "page_pending", "failed": "page_failed", "delivered": "page_delivered"}


def _paging_notes(view: CardView) -> list[str]:
    incident, paging, window, locale = view.incident, view.paging, view.window, view.locale
    if paging is None:
        return []
    if incident.is_open and paging.level == 0 and view.pagerduty_unconfigured:
        return [_t("not_configured", locale)]  # from the start, not only once the page comes due and fails
    notes: list[str] = []
    if paging.acked_in_pagerduty_by:
        notes.append(_t("acked_in_pagerduty", locale, who=escape(clip(paging.acked_in_pagerduty_by, 100))))
    if incident.is_open and window and paging.level == 0:
        notes.append(_t("window", locale, name=escape(window[0]), until=slack_time(window[1], view.now)))
    elif incident.is_open and paging.held:
        notes.append(f":construction: {escape(paging.held)}")
    if paging.level > 0:
        notes.append(_delivery_note(view))
    elif incident.is_open and view.page_at and not incident.acknowledged_at and not window:
        notes.append(_t("pages_at", locale, at=slack_time(view.page_at, view.now)))
    return notes


def _delivery_note(view: CardView) -> str:
    paging, locale = view.paging, view.locale
    assert paging is not None
    state = _t(_DELIVERY[paging.delivery], locale) if paging.delivery in _DELIVERY else escape(paging.delivery)
    when = (_t("delivered_at", locale, at=slack_time(paging.delivered_at, view.now))
            if paging.delivery == "delivered" and paging.delivered_at else "")
    error = ""
    if paging.last_error and paging.delivery in ("pending", "failed"):
        reason = escape(clip(paging.last_error, 150))
        error = _t("retrying" if paging.delivery == "pending" else "failed_reason", locale, reason=reason)
    return _t("delivery", locale, state=state, when=when, level=paging.level, error=error)


def _plain(text: str) -> dict[str, str]:
    """A confirm dialog's text (plain_text, no emoji flag: as Slack's own examples)."""
    return {"type": "plain_text", "text": text}


def card_button_value(incident: Incident, level: int) -> str:
    """What every card button carries: the card's token (never the incident's id) and the paging
    level the card shows, so "Escalate now" climbs from what the clicker saw (commands.middleware)."""
    return f"{incident.card_token}.{level}"


def read_card_button_value(value: str) -> tuple[str, int] | None:
    token, _, level = value.rpartition(".")
    return (token, int(level)) if token and level.isdigit() else None


def _buttons(view: CardView) -> list[dict[str, Any]]:
    incident, paging, locale = view.incident, view.paging, view.locale
    level = paging.level if paging is not None else 0
    value = card_button_value(incident, level)
    buttons = [] if incident.acknowledged_at else [button(_t("ack", locale), CARD_ACK, value, style="primary")]
    buttons.append(button(_t("escalate_now" if level > 0 else "page_now", locale), CARD_ESCALATE, value))
    buttons.append(button(_t("resolve", locale), CARD_RESOLVE, value, style="danger", confirm={
        "title": _plain(_t("resolve_title", locale)), "text": _plain(_t("resolve_text", locale)),
        "confirm": _plain(_t("resolve", locale)), "deny": _plain(_t("cancel", locale))}))
    buttons.append(_silence_menu(value, locale))
    return buttons


SILENCE_CHOICES = ("1h", "4h", "24h")  # the card's silence menu: what commands.silence_command accepts from it


def _silence_menu(value: str, locale: str) -> dict[str, Any]:
    """Silence 1h / 4h / 24h: the incident's alerts, as `/silence 1h` (commands.silence_command)."""
    return {"type": "overflow", "action_id": CARD_SILENCE,
            "options": [{"text": plain(_t("silence_for", locale, choice=choice), LIMITS["button_text"]),
                         "value": card_silence_option(choice, value)} for choice in SILENCE_CHOICES]}
