"""The incident card: a pure function from the incident to Block Kit, within Slack's limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.models import Alert, Incident, TimelineEntry
from commands.blockkit import (
    LIMITS, clip, context, divider, escape, header, link, mrkdwn, section, trusted_mrkdwn,
)
from commands.slack_time import duration, slack_time

__all__ = ["CardView", "incident_card", "announcement", "actor_text"]

SEVERITY_ICON = {"P1": ":red_circle:", "P2": ":large_orange_circle:", "P3": ":large_yellow_circle:",
                 "P4": ":large_blue_circle:"}
MAX_ALERTS_SHOWN = 20
DASHBOARD_KEYS = ("dashboard", "dashboard_url", "grafana_url", "grafana")
DESCRIPTION_KEYS = ("description", "message")
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
ACTOR_NAMES = {"alertmanager": "Alertmanager", "oncall-bot": "the bot", "pagerduty": "PagerDuty"}
TIMELINE_TEXT = 400  # per entry, escaped: five entries, their times and actors fit one context element


@dataclass
class CardView:
    incident: Incident
    alerts: list[Alert]
    timeline: list[TimelineEntry] = field(default_factory=list)  # newest last
    actions: list[dict[str, Any]] = field(default_factory=list)  # buttons added by other features
    notes: list[str] = field(default_factory=list)  # trusted mrkdwn lines, e.g. paging state
    now: datetime | None = None  # when the card is rendered: times of another day show their date

    @property
    def started_at(self) -> datetime:
        """When the problem began: the earliest `startsAt` of its alerts (Go's zero time, year 1,
        means unset), else when the bot heard of it."""
        starts = [a.starts_at for a in self.alerts if a.starts_at.year > 1]
        return min(starts, default=self.incident.created_at)


def fallback_text(incident: Incident) -> str:
    return clip(f"[{incident.severity}] {incident.title} ({incident.status})", 3000)


def incident_card(view: CardView) -> tuple[str, list[dict[str, Any]]]:
    """Returns (fallback text, blocks)."""
    inc = view.incident
    icon = SEVERITY_ICON.get(inc.severity, ":rotating_light:")
    blocks: list[dict[str, Any]] = [
        header(f"{inc.severity} · {inc.title}"),
        section(trusted_mrkdwn(f"{icon} *{inc.severity}* · *{str(inc.status).upper()}* · incident #{inc.id}"),
                fields=_fields(view)),
    ]
    description = _description(inc.annotations)
    if description:
        blocks.append(section(mrkdwn(description)))
    blocks += _alert_blocks(view)
    links = _links(view)
    if links:
        blocks.append(context(trusted_mrkdwn(" · ".join(links))))
    if view.notes:
        blocks.append(context(*(trusted_mrkdwn(n) for n in view.notes)))
    if view.timeline:
        blocks.append(context(trusted_mrkdwn(_timeline_text(view.timeline, view.now))))
    if view.actions:
        blocks.append({"type": "actions", "block_id": "incident_actions",
                       "elements": view.actions[: LIMITS["actions"]]})
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
        ("Commander", f"<@{inc.commander}>" if inc.commander else "unassigned"),
    ]
    if inc.acknowledged_by:
        pairs.append(("Acknowledged", f"<@{inc.acknowledged_by}>"))
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
    return prefix + mrkdwn(entry.text, TIMELINE_TEXT)["text"]


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
