"""Requests as Slack sends them to /slack/events: signed, form-encoded, real shapes (platform.md §1.1, §1.7)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.conftest import SIGNING_SECRET


def trigger_id() -> str:
    """Slack gives every interaction its own trigger id (`<counter>.<app>.<hex>`)."""
    return f"{next(_TRIGGERS)}.{int(time.time())}.{secrets.token_hex(16)}"


_TRIGGERS = itertools.count(1000)


def signed_headers(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    signature = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}


def slash_command(command: str, text: str = "", *, user: str = "U0ALICE", channel: str = "C0INCIDENTS",
                  response_url: str = "http://127.0.0.1:9/commands/T0001/1/x") -> bytes:
    return urlencode({
        "token": "legacy", "team_id": "T0001", "team_domain": "acme", "channel_id": channel,
        "channel_name": "incidents", "user_id": user, "user_name": user.lower(), "command": command,
        "text": text, "api_app_id": "A0001", "is_enterprise_install": "false",
        "response_url": response_url, "trigger_id": trigger_id(),
    }).encode()


def block_actions(action_id: str, value: str, *, user: str = "U0ALICE", channel: str = "C0INCIDENTS",
                  message: dict[str, Any] | None = None, block_id: str = "b",
                  response_url: str = "http://127.0.0.1:9/actions/T0001/1/x") -> bytes:
    message = message or {"type": "message", "ts": "1700000000.000100", "text": "", "blocks": []}
    payload = {
        "type": "block_actions", "user": {"id": user, "username": user.lower(), "name": user.lower(),
                                          "team_id": "T0001"},
        "api_app_id": "A0001", "token": "legacy",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id(), "team": {"id": "T0001", "domain": "acme"}, "enterprise": None,
        "is_enterprise_install": False, "channel": {"id": channel, "name": "incident"},
        "message": message, "state": {"values": {}}, "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": block_id, "type": "button", "value": value,
                     "text": {"type": "plain_text", "text": "Run", "emoji": True},
                     "action_ts": f"{time.time():.6f}"}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def post_to_slack_events(base_url: str, body: bytes, **sign: Any) -> httpx.Response:
    return httpx.post(f"{base_url}/slack/events", content=body, headers=signed_headers(body, **sign), timeout=10)


def view_submission(view: dict[str, Any], values: dict[str, dict[str, Any]], *, user: str = "U0ALICE",
                    user_team: str = "T0001") -> bytes:
    """A modal submitted: the view as the fake opened it (views.open), with the inputs' state.
    `user_team`: the submitter's own workspace (another one's for a Slack Connect user)."""
    submitted = {**view, "team_id": "T0001", "app_id": "A0001", "bot_id": "B0001", "root_view_id": view["id"],
                 "previous_view_id": None, "state": {"values": values}}
    payload = {
        "type": "view_submission", "team": {"id": "T0001", "domain": "acme"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": user_team},
        "api_app_id": "A0001", "token": "legacy", "trigger_id": trigger_id(), "view": submitted,
        "response_urls": [], "is_enterprise_install": False, "enterprise": None,
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def message_action(callback_id: str, message: dict[str, Any], *, user: str = "U0ALICE", channel: str = "C0GENERAL",
                   response_url: str = "http://127.0.0.1:9/actions/T0001/1/x", user_team: str = "T0001") -> bytes:
    """A message shortcut chosen on `message` (its `ts`, `text`, `user`), as Slack sends it."""
    payload = {
        "type": "message_action", "token": "legacy", "action_ts": f"{time.time():.6f}",
        "team": {"id": "T0001", "domain": "acme"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": user_team},
        "channel": {"id": channel, "name": "general"}, "is_enterprise_install": False, "enterprise": None,
        "callback_id": callback_id, "trigger_id": trigger_id(), "response_url": response_url,
        "message_ts": message["ts"], "message": {"type": "message", **message},
    }
    return urlencode({"payload": json.dumps(payload)}).encode()
