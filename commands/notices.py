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

__all__ = ["NOTICE_KINDS", "mention", "notice_text", "plain_text"]

SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
NAME_LIMIT = 100  # characters of an untrusted name shown in a notice


def plain_text(value: Any, limit: int = 500) -> str:
    """An untrusted value, safe where Slack parses mentions and links."""
    return escape(clip(str(value), limit))


def mention(user: Any) -> str:
    """A Slack user id as a mention; anything else shown as (escaped) text."""
    text = str(user or "")
    return f"<@{text}>" if SLACK_USER.fullmatch(text) else plain_text(text or "someone", NAME_LIMIT)


def _who(notice: dict[str, Any]) -> str:
    if notice.get("pagerduty_user"):
        return f"in PagerDuty by {plain_text(notice['pagerduty_user'], NAME_LIMIT)}"
    return f"by {mention(notice.get('user'))}"


def _why(notice: dict[str, Any]) -> str:
    why = plain_text(notice.get("why") or "")
    return f"{mention(notice['by'])} {why}" if notice.get("by") else why


def _level(notice: dict[str, Any]) -> str:
    return f"*{plain_text(notice.get('level') or 'on-call', NAME_LIMIT)}*"


def _acknowledged(n: dict[str, Any]) -> str:
    if n.get("pagerduty_user"):
        return f":eyes: Acknowledged in PagerDuty by {plain_text(n['pagerduty_user'], NAME_LIMIT)}; escalation stopped."
    return f":eyes: {mention(n.get('user'))} acknowledged; escalation stopped."


def _update_due(n: dict[str, Any]) -> str:
    owner = mention(n["owner"]) if n.get("owner") else "nobody has taken command yet (press *Ack* on the card)"
    return (f":memo: Status update due (every {plain_text(n.get('minutes'))} min): {owner}, "
            "please post where things stand.")


def _page_held(n: dict[str, Any]) -> str:
    until = datetime.fromisoformat(str(n["until"]))
    return (f":construction: Not paging: maintenance window *{plain_text(n.get('window'), NAME_LIMIT)}* until "
            f"{until:%Y-%m-%d %H:%M} UTC: nobody is paged.")


def _assigned(n: dict[str, Any]) -> str:
    names = ", ".join(plain_text(name, NAME_LIMIT) for name in n.get("names", []))
    return f":arrows_counterclockwise: {str(n.get('verb', 'reassigned')).capitalize()} in PagerDuty: now with {names}."


_NOTICES: dict[str, Callable[[dict[str, Any]], str]] = {
    "alerts_resolved": lambda n: ":white_check_mark: Resolved: every alert in the group stopped firing.",
    "reopened": lambda n: ":rotating_light: Reopened: the alert group is firing again.",
    "resolved": lambda n: f":white_check_mark: Resolved {_who(n)}.",
    "acknowledged": _acknowledged,
    "paging": lambda n: f":rotating_light: Paging {_level(n)} through PagerDuty: {_why(n)}.",
    "escalating": lambda n: f":arrow_double_up: Escalating to {_level(n)}: {_why(n)}.",
    "page_not_configured": lambda n: (f":warning: Should page {_level(n)} ({_why(n)}), but PagerDuty is not "
                                      "configured (set PAGERDUTY_ROUTING_KEY): nobody was paged."),
    "page_held": _page_held,
    "ack_overdue": lambda n: (f":alarm_clock: Not acknowledged within {plain_text(n.get('minutes'))} min. "
                              "Whoever is on it: press *Ack* on the card."),
    "update_due": _update_due,
    "pagerduty_assigned": _assigned,
}


NOTICE_KINDS = tuple(_NOTICES)


def notice_text(notice: dict[str, Any]) -> str:
    """The text of a notice. A job written before notices were data carries its `text`."""
    kind = notice.get("notice")
    if kind is None:
        return str(notice.get("text", ""))
    render = _NOTICES.get(str(kind))
    if render is None:
        raise ValueError(f"unknown notice {kind!r}: this bot is older than the one that queued it")
    return render(notice)
