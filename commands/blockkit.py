"""Block Kit helpers shared by every message builder: Slack's limits in one place.

Untrusted text (alert labels, annotations, runbook text) goes through `mrkdwn()` or
`plain()`: escaped, and cut with a visible marker instead of being rejected by Slack.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "LIMITS", "MARK", "button", "clip", "context", "divider", "escape", "header", "link", "mrkdwn", "plain", "safe_url",
    "section", "trusted_mrkdwn",
]

# docs.slack.dev/reference/block-kit (see ../shared/reference/platform.md §1.6)
LIMITS = {
    "blocks": 50, "header": 150, "section": 3000, "field": 2000, "fields": 10, "context_elements": 10,
    "button_text": 75, "button_value": 2000, "action_id": 255, "url": 3000, "actions": 25, "text": 3000,
}
MARK = "…"


def clip(text: str, limit: int, mark: str = MARK) -> str:
    """Cut to at most `limit` characters (Slack counts characters, not bytes)."""
    return text if len(text) <= limit else text[: max(0, limit - len(mark))] + mark


def escape(text: str) -> str:
    # Slack's three control characters; escaping '<' also defuses <!channel> and <@U…>.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: str, limit: int = LIMITS["section"]) -> dict[str, Any]:
    """Untrusted text as a mrkdwn object: escaped, then clipped (never mid-entity)."""
    escaped = escape(text)
    if len(escaped) > limit:
        escaped = re.sub(r"&[a-z]{0,3}$", "", escaped[: limit - len(MARK)]) + MARK
    return {"type": "mrkdwn", "text": escaped or " "}


def trusted_mrkdwn(text: str, limit: int = LIMITS["section"]) -> dict[str, Any]:
    """Text we composed ourselves (links, mentions), already escaped where needed."""
    return {"type": "mrkdwn", "text": clip(text, limit) or " "}


def plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": clip(text, limit) or " ", "emoji": True}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(text, LIMITS["header"])}


def section(text: dict[str, Any], *, fields: list[dict[str, Any]] | None = None,
            accessory: dict[str, Any] | None = None, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": text}
    if fields:
        block["fields"] = fields[: LIMITS["fields"]]
    if accessory:
        block["accessory"] = accessory
    if block_id:
        block["block_id"] = block_id[:255]
    return block


def context(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "context", "elements": list(elements[: LIMITS["context_elements"]])}


def divider() -> dict[str, Any]:
    return {"type": "divider"}


def safe_url(url: str | None) -> str | None:
    """Only http(s) URLs without characters that would break Slack's <url|text> syntax."""
    if not url or len(url) > LIMITS["url"] or not re.match(r"https?://", url):
        return None
    if re.search(r"[\s<>|]", url):
        return None
    return url


def link(url: str | None, text: str) -> str | None:
    target = safe_url(url)
    return f"<{target}|{escape(text)}>" if target else None


def button(text: str, action_id: str, value: str, *, style: str | None = None,
           confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button", "text": plain(text, LIMITS["button_text"]),
        "action_id": action_id[: LIMITS["action_id"]], "value": value[: LIMITS["button_value"]],
    }
    if style in ("primary", "danger"):
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element
