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

__all__ = ["NOT_CONFIGURED", "SEVERITY_ICON", "SILENCE_CHOICES", "actor_text", "announcement", "card_button_value",
           "incident_card", "read_card_button_value"]

SEVERITY_ICON = {"P1": ":red_circle:", "P2": ":large_orange_circle:", "P3": ":large_yellow_circle:",
                 "P4": ":large_blue_circle:"}
MAX_ALERTS_SHOWN = 20
DASHBOARD_KEYS = ("dashboard", "dashboard_url", "grafana_url", "grafana")
DESCRIPTION_KEYS = ("description", "message")
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
ACTOR_NAMES = {"alertmanager": "Alertmanager", "oncall-bot": "the bot", "pagerduty": "PagerDuty"}
TIMELINE_TEXT = 400  # per entry, escaped: five entries, their times and actors fit one context element


def fallback_text(incident: Incident) -> str:
    """The message `text` (notifications, search): Slack parses mentions and links here too."""
    return clip(f"[{incident.severity}] {escape(incident.title)} ({_status(incident)})", LIMITS["text"])


def _status(incident: Incident) -> str:
    # A fresh row holds the enum member, one read back the plain string: show the value either way.
    return IncidentStatus(incident.status).value


def incident_card(view: CardView) -> tuple[str, list[dict[str, Any]]]:
    """Returns (fallback text, blocks)."""
    inc = view.incident
    icon = SEVERITY_ICON.get(inc.severity, ":rotating_light:")
    blocks: list[dict[str, Any]] = [
        header(f"{inc.severity} · {inc.title}"),
        section(trusted_mrkdwn(f"{icon} *{inc.severity}* · *{_status(inc).upper()}* · incident #{inc.id}"),
                fields=_fields(view)),
    ]
    blocks += role_blocks(view)  # who holds each role, the last status update
    description = _description(inc.annotations)
    if description:
        blocks.append(section(mrkdwn(description)))
    blocks += _alert_blocks(view)
    links = _links(view)
    if links:
        blocks.append(context(trusted_mrkdwn(" · ".join(links))))
    notes = _paging_notes(view)
    if notes:
        blocks.append(context(*(trusted_mrkdwn(n) for n in notes)))
    blocks += _silence_blocks(view)
    blocks += remediation_blocks(view)
    if view.timeline:
        blocks.append(context(trusted_mrkdwn(_timeline_text(view.timeline, view.now))))
    blocks += past_incident_blocks(view)
    if inc.is_open:
        blocks.append({"type": "actions", "block_id": CARD_ACTIONS_BLOCK, "elements": _buttons(view)})
        blocks += state_button_blocks(view, card_button_value(inc, view.paging.level if view.paging else 0))
    return fallback_text(inc), blocks[: LIMITS["blocks"]]


def announcement(incident: Incident, channel_id: str | None) -> tuple[str, list[dict[str, Any]]]:
    where = f" in <#{channel_id}>" if channel_id else ""
    icon = SEVERITY_ICON.get(incident.severity, ":rotating_light:")
    line = f"{icon} *{incident.severity}* incident #{incident.id} opened{where}: {escape(incident.title)}"
    return fallback_text(incident), [section(trusted_mrkdwn(line))]


def _fields(view: CardView) -> list[dict[str, Any]]:
    inc = view.incident
    firing = sum(1 for a in view.alerts if a.status == "firing")
    pairs = [
        ("Service", escape(inc.service or "—")),
        ("Namespace", escape(inc.namespace or "—")),
        ("Started", slack_time(view.started_at, view.now)),
        ("Alerts", f"{firing} firing · {len(view.alerts) - firing} resolved"),
        ("Commander", actor_text(inc.commander) if inc.commander else "unassigned"),
    ]
    if inc.acknowledged_by:
        pairs.append(("Acknowledged", actor_text(inc.acknowledged_by)))
    if inc.resolved_at:
        lasted = duration(inc.resolved_at - view.started_at)
        pairs.append(("Resolved", f"{slack_time(inc.resolved_at, view.now)} after {lasted}\n"
                                  f"by {actor_text(inc.resolved_by)}"))
    return [trusted_mrkdwn(clip(f"*{name}*\n{value}", LIMITS["field"])) for name, value in pairs]


def _alert_blocks(view: CardView) -> list[dict[str, Any]]:
    ordered = sorted(view.alerts, key=lambda a: (a.status != "firing", a.starts_at))
    blocks: list[dict[str, Any]] = [divider()]
    common = _description(view.incident.annotations)
    for alert in ordered[:MAX_ALERTS_SHOWN]:
        blocks.append(section(_alert_text(alert, common)))
    hidden = len(ordered) - MAX_ALERTS_SHOWN + view.incident.truncated_alerts
    if hidden > 0:
        blocks.append(context(trusted_mrkdwn(f"…and {hidden} more alert(s) not shown")))
    return blocks


def _alert_text(alert: Alert, common_description: str | None) -> dict[str, Any]:
    icon = ":fire:" if alert.status == "firing" else ":white_check_mark:"
    summary = alert.annotations.get("summary", "")
    labels = " ".join(f"`{escape(k)}={escape(clip(v, 200))}`" for k, v in sorted(alert.labels.items())
                      if k != "alertname")
    source = link(alert.generator_url, "source")
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
    inc = view.incident
    notes = inc.annotations
    found = [
        link(notes.get("runbook_url"), "Runbook"),
        next((link(notes.get(k), "Dashboard") for k in DASHBOARD_KEYS if notes.get(k)), None),
        link(next((a.generator_url for a in view.alerts if a.generator_url), None), "Source"),
        link(inc.external_url, "Alertmanager"),
    ]
    return [item for item in found if item]


def _timeline_text(entries: list[TimelineEntry], now: datetime | None) -> str:
    """The last five entries, oldest first, one a line: "14:32 <@U1>: ran k8s.logs …"."""
    recent = sorted(entries, key=lambda e: (e.at, e.id or 0))[-5:]
    lines = [f"{slack_time(e.at, now)} {actor_text(e.actor)}: {_entry_text(e)}"
             for e in recent]
    return ":clock3: *Timeline*\n" + "\n".join(lines)


def _entry_text(entry: TimelineEntry) -> str:
    prefix = "status " if entry.kind == "status" else ""  # its text is only "detected → triaged"
    message = link((entry.data or {}).get("permalink"), "↗")  # a captured message (bot.timeline_capture)
    return prefix + mrkdwn(entry.text, TIMELINE_TEXT)["text"] + (f" {message}" if message else "")


def actor_text(actor: str | None) -> str:
    """Who did something, as trusted mrkdwn: a Slack user mentioned, anyone else by name (escaped)."""
    if not actor:
        return "someone unknown"
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
    blocks = []
    for index, silence in enumerate(view.silences[:MAX_SILENCES_SHOWN]):
        text = _silence_text(silence, view.now)
        if silence.expire_requested_at is not None:
            blocks.append(section(trusted_mrkdwn(f"{text}\n:hourglass_flowing_sand: being expired, asked by "
                                                 f"{actor_text(silence.expire_requested_by)}"),
                                  block_id=silence_block(index)))
            continue
        confirm = {"title": {"type": "plain_text", "text": "Expire the silence?"},
                   "text": {"type": "plain_text",
                            "text": clip(f"Alerts matching {silence.matchers} notify again.", 300)},
                   "confirm": {"type": "plain_text", "text": "Expire"},
                   "deny": {"type": "plain_text", "text": "Cancel"}}
        expire = button("Expire", silence_expire_action(index), silence.token, confirm=confirm)
        blocks.append(section(trusted_mrkdwn(text), accessory=expire, block_id=silence_block(index)))
    hidden = len(view.silences) - MAX_SILENCES_SHOWN
    if hidden > 0:
        blocks.append(context(trusted_mrkdwn(f"…and {hidden} more silence(s) not shown")))
    return blocks


def _silence_text(silence: Silence, now: datetime | None) -> str:
    matchers = escape(clip(silence.matchers, SILENCE_MATCHERS_SHOWN))  # label values: untrusted
    return (f":no_bell: *Silenced* `{matchers}` until {slack_time(silence.ends_at, now)} · approved by "
            f"{actor_text(silence.created_by)}")


# -- paging: what it did, and the buttons -------------------------------------------------------

NOT_CONFIGURED = (":warning: Nobody will be paged: PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY, "
                  "or a pagerduty route matching this incident's labels)")
_DELIVERY = {"pending": ":hourglass_flowing_sand: page pending", "failed": ":x: page failed",
             "delivered": ":pager: page delivered"}


def _paging_notes(view: CardView) -> list[str]:
    incident, paging, window = view.incident, view.paging, view.window
    if paging is None:
        return []
    if incident.is_open and paging.level == 0 and view.pagerduty_unconfigured:
        return [NOT_CONFIGURED]  # from the start, not only once the page comes due and fails
    notes: list[str] = []
    if paging.acked_in_pagerduty_by:
        acker = escape(clip(paging.acked_in_pagerduty_by, 100))
        notes.append(f":white_check_mark: Acknowledged in PagerDuty by {acker}")
    if incident.is_open and window and paging.level == 0:
        notes.append(f":construction: Maintenance window *{escape(window[0])}* until "
                     f"{slack_time(window[1], view.now)}: nobody is paged")
    elif incident.is_open and paging.held:
        notes.append(f":construction: {escape(paging.held)}")
    if paging.level > 0:
        notes.append(_delivery_note(view))
    elif incident.is_open and view.page_at and not incident.acknowledged_at and not window:
        notes.append(f":alarm_clock: Pages on-call at {slack_time(view.page_at, view.now)} unless acknowledged")
    return notes


def _delivery_note(view: CardView) -> str:
    paging = view.paging
    assert paging is not None
    state = _DELIVERY.get(paging.delivery, escape(paging.delivery))
    when = (f" at {slack_time(paging.delivered_at, view.now)}"
            if paging.delivery == "delivered" and paging.delivered_at else "")
    error = ""
    if paging.last_error and paging.delivery in ("pending", "failed"):
        reason = escape(clip(paging.last_error, 150))
        error = f" (retrying: {reason})" if paging.delivery == "pending" else f" ({reason})"
    return f"{state}{when} · PagerDuty level {paging.level}{error}"


def card_button_value(incident: Incident, level: int) -> str:
    """What every card button carries: the card's token (never the incident's id) and the paging
    level the card shows, so "Escalate now" climbs from what the clicker saw (commands.middleware)."""
    return f"{incident.card_token}.{level}"


def read_card_button_value(value: str) -> tuple[str, int] | None:
    token, _, level = value.rpartition(".")
    return (token, int(level)) if token and level.isdigit() else None


def _buttons(view: CardView) -> list[dict[str, Any]]:
    incident, paging = view.incident, view.paging
    level = paging.level if paging is not None else 0
    value = card_button_value(incident, level)
    paged = level > 0
    buttons = [] if incident.acknowledged_at else [button("Ack", CARD_ACK, value, style="primary")]
    buttons.append(button("Escalate now" if paged else "Page now", CARD_ESCALATE, value))
    buttons.append(button("Resolve", CARD_RESOLVE, value, style="danger", confirm={
        "title": {"type": "plain_text", "text": "Resolve the incident?"},
        "text": {"type": "plain_text", "text": "Timers stop and PagerDuty is resolved too."},
        "confirm": {"type": "plain_text", "text": "Resolve"}, "deny": {"type": "plain_text", "text": "Cancel"}}))
    buttons.append(_silence_menu(value))
    return buttons


SILENCE_CHOICES = ("1h", "4h", "24h")  # the card's silence menu: what commands.silence_command accepts from it


def _silence_menu(value: str) -> dict[str, Any]:
    """Silence 1h / 4h / 24h: the incident's alerts, as `/silence 1h` (commands.silence_command)."""
    return {"type": "overflow", "action_id": CARD_SILENCE,
            "options": [{"text": plain(f"Silence {choice}", LIMITS["button_text"]),
                         "value": card_silence_option(choice, value)} for choice in SILENCE_CHOICES]}
