"""A signed Slack request, checked for the shape Slack gives it before Bolt and the listeners read it.

Bolt parses the body itself (JSON, a form, or a form whose `payload` field is JSON: its own
`parse_body`, used here so both read the same thing) and the listeners read the envelope's
fields as Slack documents them (platform.md §1.7): `user.id` a string, `actions` a list of
objects with an `action_id`, `view.state.values` a map of maps of inputs, an event's `type`.
A body that is not that shape is no request Slack sends (Slack signed it, so it is a bug or a
leaked secret): refused with a 400 naming the field, rather than a TypeError inside Bolt or a
listener (a 500, or a traceback after the ack). Only the types of what is read are checked;
unknown fields pass.

Text no database stores (NUL and lone surrogates: PostgreSQL refuses both) is replaced by
U+FFFD, so what a person typed is stored as it reads instead of failing the request.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from slack_bolt.request.internals import parse_body

__all__ = ["EnvelopeError", "checked_body"]


class EnvelopeError(Exception):
    """Not a request Slack sends: answer 400 with `error`."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def checked_body(raw: bytes, content_type: str | None) -> bytes | None:
    """None when Bolt may parse `raw` as it is; the body to give Bolt instead when text in it had
    to be replaced. EnvelopeError when it is not a Slack request."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"not a Slack request: the body is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        parsed = parse_body(text, content_type)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError; nested too deeply
        raise EnvelopeError(f"not a Slack request: the body is not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(parsed, dict):
        raise EnvelopeError("not a Slack request: the body is not a JSON object")
    try:
        _Envelope.model_validate(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])[:200] or "body"
        raise EnvelopeError(f"not a Slack request: {where}: {first['msg'][:200]}") from exc
    if not _holds_refused(parsed):
        return None
    cleaned = _replaced(parsed)
    if content_type == "application/json" or text.startswith("{"):  # as parse_body decides
        return json.dumps(cleaned).encode()
    if "payload" in text:  # parse_body read its `payload` field (a form without one parses as {})
        return urlencode({"payload": json.dumps(cleaned)}).encode()
    return urlencode(cleaned).encode()  # a slash command's fields


# -- replacing what no database stores -------------------------------------------------------------

_REFUSED = re.compile("[\x00\ud800-\udfff]")


def _holds_refused(value: Any) -> bool:
    if isinstance(value, str):
        return _REFUSED.search(value) is not None
    if isinstance(value, dict):
        return any(_holds_refused(k) or _holds_refused(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_refused(v) for v in value)
    return False


def _replaced(value: Any) -> Any:
    if isinstance(value, str):
        return _REFUSED.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replaced(k): _replaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replaced(v) for v in value]
    return value


# -- the shape ------------------------------------------------------------------------------------

class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Who(_Open):  # a user, team, channel or enterprise, as interactions name them
    id: str
    team_id: str | None = None
    name: str | None = None


class _Option(_Open):
    value: str


class _Action(_Open):
    action_id: str
    block_id: str | None = None
    value: str | None = None
    action_ts: str | None = None
    selected_option: _Option | None = None


class _Input(_Open):  # one input's state in a submitted modal
    type: str | None = None
    value: str | None = None
    selected_option: _Option | None = None
    selected_options: list[_Option] | None = None
    selected_user: str | None = None
    selected_users: list[str] | None = None


class _State(_Open):
    values: dict[str, dict[str, _Input]] = {}


class _View(_Open):
    id: str | None = None
    callback_id: str | None = None
    private_metadata: str | None = None
    hash: str | None = None
    state: _State | None = None


class _Container(_Open):
    channel_id: str | None = None
    message_ts: str | None = None
    view_id: str | None = None


class _Message(_Open):
    ts: str | None = None
    thread_ts: str | None = None
    text: str | None = None
    user: str | None = None


class _Item(_Open):
    type: str | None = None
    channel: str | None = None
    ts: str | None = None


class _Event(_Open):
    type: str
    user: str | None = None
    channel: str | dict[str, Any] | None = None  # an object in channel_* events
    channel_id: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    event_ts: str | None = None
    text: str | None = None
    tab: str | None = None
    reaction: str | None = None
    item: _Item | None = None

    @model_validator(mode="after")
    def _where(self) -> _Event:
        if self.type == "app_mention" and not self.channel:  # the bot answers in that channel
            raise ValueError("an app_mention event names its channel")
        return self


class _Authorization(_Open):
    enterprise_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    is_enterprise_install: bool | None = None


_INTERACTIONS = {"block_actions", "view_submission", "view_closed", "message_action", "shortcut", "block_suggestion"}


class _Envelope(_Open):
    type: str | None = None
    user: _Who | None = None
    team: _Who | None = None
    enterprise: _Who | str | None = None
    channel: _Who | None = None
    container: _Container | None = None
    actions: list[_Action] | None = None
    view: _View | None = None
    message: _Message | None = None
    state: _State | None = None
    event: _Event | None = None
    authorizations: list[_Authorization] | None = None
    callback_id: str | None = None
    trigger_id: str | None = None
    response_url: str | None = None
    message_ts: str | None = None
    action_ts: str | None = None
    event_id: str | None = None
    team_id: str | None = None
    enterprise_id: str | None = None

    @model_validator(mode="after")
    def _what_its_type_needs(self) -> _Envelope:
        # What Bolt's matchers and every listener of that type take for granted.
        needs = {"event_callback": ["event"], "block_actions": ["user", "actions"],
                 "view_submission": ["user", "view"], "view_closed": ["user", "view"],
                 "message_action": ["user", "callback_id"], "shortcut": ["user", "callback_id"],
                 "block_suggestion": ["user"]}.get(self.type or "", [])
        missing = [name for name in needs if not getattr(self, name)]
        if missing:
            raise ValueError(f"a {self.type} request needs {' and '.join(missing)}")
        if self.type in ("view_submission", "view_closed") and self.view and not self.view.callback_id:
            raise ValueError(f"a {self.type} request names its view's callback_id")
        return self
