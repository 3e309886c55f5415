"""A fake Slack Web API: real HTTP on 127.0.0.1, spoken to by slack_sdk through `base_url`.

It checks what Slack checks (token, required arguments, channel-name rules, Block Kit
limits, membership) and answers with Slack's shapes and errors (platform.md §1.3-§1.6).
Tests assert on `calls` and on the state (`channels`, messages); they never patch clients.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.slack_blocks import validate_blocks, validate_view

__all__ = ["FakeSlack", "Call", "Channel", "Message", "User"]


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    headers: dict[str, str]
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


@dataclass
class Message:
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    user: str
    thread_ts: str | None = None
    edits: int = 0
    files: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    file_objects: list[dict[str, Any]] = field(default_factory=list)  # the shared files, as history shows them
    bot_id: str | None = "B0001"  # None: a person's message (post_as)

    def as_slack(self, *, with_metadata: bool = False) -> dict[str, Any]:
        found: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text, "user": self.user,
                                 "bot_id": self.bot_id, "blocks": self.blocks}
        if self.bot_id is None:
            del found["bot_id"]
        if not self.user:  # a message Slack names no author for
            del found["user"]
        if self.thread_ts:
            found["thread_ts"] = self.thread_ts
        if with_metadata and self.metadata:
            found["metadata"] = self.metadata
        if self.file_objects:  # a file share: Slack lists the files on the message
            found["files"], found["upload"] = self.file_objects, True
        return found


@dataclass
class Channel:
    id: str
    name: str
    is_private: bool = False
    topic: str = ""
    members: set[str] = field(default_factory=set)
    archived: bool = False
    messages: list[Message] = field(default_factory=list)
    creator: str = "UADMIN"
    created: int = field(default_factory=lambda: int(time.time()))

    def as_slack(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "is_channel": not self.is_private, "is_group": self.is_private,
                "is_private": self.is_private, "is_archived": self.archived, "created": self.created,
                "creator": self.creator, "is_member": "UBOT" in self.members, "num_members": len(self.members),
                "topic": {"value": self.topic, "creator": "UBOT", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0}}


@dataclass
class User:
    id: str
    email: str
    name: str
    locale: str = "en-US"
    team_id: str = "T0001"  # their own workspace: another one's for a Slack Connect user
    guest: str | None = None  # "multi" (is_restricted) or "single" (is_ultra_restricted) channel guest

    def as_slack(self, with_locale: bool = False) -> dict[str, Any]:
        user = {"id": self.id, "team_id": self.team_id, "name": self.name, "deleted": False, "real_name": self.name,
                "tz": "Asia/Tokyo", "is_bot": False, "is_admin": False, "is_owner": False,
                "is_restricted": self.guest is not None, "is_ultra_restricted": self.guest == "single",
                "profile": {"email": self.email, "display_name": self.name, "real_name": self.name}}
        return {**user, "locale": self.locale} if with_locale else user


class _SlackError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.body = {"ok": False, "error": error, **extra}


# The bot scope each method needs (platform.md §1.4); a token without it gets `missing_scope`.
SCOPES = {
    "conversations.create": "channels:manage", "conversations.invite": "channels:manage",
    "conversations.setTopic": "channels:manage", "conversations.archive": "channels:manage",
    "conversations.info": "channels:read", "conversations.list": "channels:read",
    "conversations.members": "channels:read", "conversations.history": "channels:history",
    "conversations.replies": "channels:history", "chat.postMessage": "chat:write", "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write", "users.info": "users:read", "users.lookupByEmail": "users:read.email",
    "usergroups.users.list": "usergroups:read", "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write", "reactions.add": "reactions:write",
}
_GATEWAY_HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"  # gateway_error()'s page
TRIGGER_SECONDS = 3  # a trigger_id opens a view within 3 s of the interaction, once



class Hold:
    """A call held mid-flight: Slack has done the work (`after`) or not yet (`before`), and the
    answer waits for `release()`; a test kills the bot meanwhile, as a crash would."""

    def __init__(self, method: str, when: str, match: Callable[[dict[str, Any]], bool]) -> None:
        self.method, self.when, self.match = method, when, match
        self.reached, self._released = threading.Event(), threading.Event()

    def release(self) -> None:
        self._released.set()

    def wait_released(self) -> None:
        self._released.wait(timeout=60)


def _require(args: dict[str, Any], *names: str) -> None:
    for name in names:
        if args.get(name) in (None, ""):
            raise _SlackError("invalid_arguments",
                              response_metadata={"messages": [f"[ERROR] missing required field: {name}"]})


class FakeSlack:
    def __init__(self, token: str = "xoxb-test-token", *, bot_user_id: str = "UBOT") -> None:
        self.token, self.bot_user_id = token, bot_user_id
        self.calls: list[Call] = []
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.uploads: dict[str, bytes] = {}
        self.views: dict[str, dict[str, Any]] = {}  # view id -> the modal as opened
        self.homes: dict[str, dict[str, Any]] = {}  # user id -> the Home tab last published for them
        self.home_tab_enabled = True  # the manifest's features.app_home.home_tab_enabled
        self._used_triggers: set[str] = set()
        self.responses: list[tuple[str, dict[str, Any]]] = []  # (response_url path, message)
        self.ephemerals: list[tuple[str, str, Message]] = []  # (channel, user, message)
        self._pending_files: dict[str, dict[str, Any]] = {}
        self._failures: list[tuple[str, str, int, int | None]] = []
        self._holds: list[Hold] = []
        self._losses: list[str] = []
        self.scopes: set[str] = set(SCOPES.values()) | {"commands", "app_mentions:read", "groups:write",
                                                         "groups:read", "groups:history", "chat:write.public",
                                                         "reactions:read", "pins:read"}  # events' scopes
        self.revoked = False
        self._last_ts = 0.0
        self._down = False
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self.add_channel("incidents", channel_id="C0INCIDENTS")

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-slack", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the fake first"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- seeding and inspection --------------------------------------------------------------------

    def add_user(self, user_id: str, email: str, name: str, locale: str = "en-US", *, team_id: str = "T0001",
                 guest: str | None = None) -> User:
        with self._lock:
            self.users[user_id] = User(user_id, email, name, locale, team_id=team_id, guest=guest)
            return self.users[user_id]

    def add_usergroup(self, group_id: str, members: list[str]) -> None:
        with self._lock:
            self.usergroups[group_id] = list(members)

    def add_channel(self, name: str, *, channel_id: str | None = None, members: set[str] | None = None) -> Channel:
        with self._lock:
            channel = Channel(id=channel_id or f"C{next(self._ids):08d}", name=name,
                              members={self.bot_user_id, *(members or set())})
            self.channels[channel.id] = channel
            return channel

    create_channel = add_channel

    def post_as(self, channel_id: str, user: str, text: str, *, thread_ts: str | None = None) -> Message:
        """A person's message in a channel (or a reply in a thread), as if typed in Slack."""
        with self._lock:
            message = Message(ts=self._new_ts(), text=text, blocks=[], user=user, thread_ts=thread_ts, bot_id=None)
            self.channels[channel_id].messages.append(message)
            return message

    def channel_by_name(self, name: str) -> Channel | None:
        return next((c for c in self.channels.values() if c.name == name), None)

    def tagged(self, kind: str) -> list[tuple[str, Message]]:
        """(channel id, message) of every message whose metadata says it is a `kind`
        (card, announcement, notice, ...): "posted once" is checkable across all channels."""
        with self._lock:
            return [(c.id, m) for c in self.channels.values() for m in c.messages
                    if m.metadata and m.metadata.get("event_payload", {}).get("kind") == kind]

    def messages(self, channel_id: str | None) -> list[Message]:
        with self._lock:
            return list(self.channels[channel_id].messages) if channel_id in self.channels else []

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def count_failed(self, method: str) -> int:
        return sum(1 for c in self.calls_to(method) if not c.response.get("ok"))

    # -- failure injection -------------------------------------------------------------------------

    def fail_next(self, method: str, error: str, *, times: int = 1, status: int = 200,
                  retry_after: int | None = None) -> None:
        """The next `times` calls of `method` fail: Slack's error body, with HTTP 429 and
        Retry-After for `ratelimited`, or any status (500, 503) for server trouble."""
        with self._lock:
            self._failures += [(method, error, status, retry_after)] * times

    def gateway_error(self, method: str, *, status: int = 502, times: int = 1) -> None:
        """The next `times` calls of `method` meet Slack's edge answering an HTML error page
        (502/503/504) instead of Slack's JSON: Slack did nothing."""
        self.fail_next(method, _GATEWAY_HTML, times=times, status=status)

    def hold(self, method: str, *, when: str = "after",
             match: Callable[[dict[str, Any]], bool] = lambda args: True) -> Hold:
        """Hold the next call of `method` whose arguments `match`: its effect is applied
        (`after`) or not (`before`), and its answer waits until the test releases it."""
        hold = Hold(method, when, match)
        with self._lock:
            self._holds.append(hold)
        return hold

    def _take_hold(self, method: str, args: dict[str, Any]) -> Hold | None:
        with self._lock:
            hold = next((h for h in self._holds if h.method == method and h.match(args)), None)
            if hold:
                self._holds.remove(hold)
            return hold

    def lose_answer(self, method: str, *, times: int = 1) -> None:
        """The next `times` calls of `method` take effect, but their answer is lost: the caller
        sees HTTP 503, as when a proxy or the network drops a response Slack already acted on."""
        with self._lock:
            self._losses += [method] * times

    def _take_loss(self, method: str) -> bool:
        with self._lock:
            if method in self._losses:
                self._losses.remove(method)
                return True
            return False

    def set_down(self, down: bool) -> None:
        """Down: every call answers HTTP 503 service_unavailable, as Slack does in an outage."""
        self._down = down

    # -- dispatch ------------------------------------------------------------------------------------

    def handle(self, method: str, args: dict[str, Any],
               headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        call = Call(method, args, headers)
        hold = self._take_hold(method, args)
        if hold and hold.when == "before":
            hold.reached.set()
            hold.wait_released()
        status, body, extra = self._answer(method, args, headers)
        if self._take_loss(method):
            status, body, extra = 503, {"ok": False, "error": "service_unavailable"}, {}
        if hold and hold.when == "after":
            hold.reached.set()
            hold.wait_released()
        call.status, call.response = status, body
        with self._lock:
            self.calls.append(call)
        return status, body, extra

    def _answer(self, method: str, args: dict[str, Any],
                headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self._down:
            return 503, {"ok": False, "error": "service_unavailable"}, {}
        auth = headers.get("authorization", "")
        if not auth:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if auth != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if self.revoked:
            return 200, {"ok": False, "error": "token_revoked"}, {}
        needed = SCOPES.get(method)
        if needed and needed not in self.scopes:
            return 200, {"ok": False, "error": "missing_scope", "needed": needed,
                         "provided": ",".join(sorted(self.scopes))}, {}
        if method == "auth.test":  # Slack names the token's scopes in a header
            return 200, {"ok": True, **self._m_auth_test(args)}, {"x-oauth-scopes": ",".join(sorted(self.scopes))}
        with self._lock:
            failure = next((f for f in self._failures if f[0] == method), None)
            if failure:
                self._failures.remove(failure)
        if failure:
            _, error, status, retry_after = failure
            extra = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return status, {"ok": False, "error": error}, extra
        handler: Callable[[dict[str, Any]], dict[str, Any]] | None = getattr(self, "_m_" + method.replace(".", "_"),
                                                                             None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        try:
            with self._lock:
                return 200, {"ok": True, **handler(args)}, {}
        except _SlackError as exc:
            return 200, exc.body, {}

    def _channel(self, ref: str | None, *, member: bool = False, archived_ok: bool = False) -> Channel:
        ref = (ref or "").lstrip("#")
        channel = self.channels.get(ref) or self.channel_by_name(ref)
        if channel is None or (channel.is_private and self.bot_user_id not in channel.members):
            raise _SlackError("channel_not_found")  # a private channel does not exist for a non-member
        if member and self.bot_user_id not in channel.members:
            raise _SlackError("not_in_channel")
        if channel.archived and not archived_ok:
            raise _SlackError("is_archived")
        return channel

    def _new_ts(self) -> str:
        # Slack's ts: the wall-clock time of posting, unique per channel (microsecond steps here).
        self._last_ts = max(time.time(), self._last_ts + 0.000001)
        return f"{self._last_ts:.6f}"

    # -- methods (platform.md §1.4) ----------------------------------------------------------------

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://acme.slack.com/", "team": "Acme", "user": "oncall-bot", "team_id": "T0001",
                "user_id": self.bot_user_id, "bot_id": "B0001", "is_enterprise_install": False}

    def _m_conversations_create(self, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("name") or "")
        if not name:
            raise _SlackError("invalid_name_required")
        if len(name) > 80:
            raise _SlackError("invalid_name_maxlength")
        if any(ch not in "abcdefghijklmnopqrstuvwxyz0123456789-_" for ch in name):
            raise _SlackError("invalid_name_specials")
        if not any(ch.isalnum() for ch in name):
            raise _SlackError("invalid_name_punctuation")
        private = str(args.get("is_private")) in ("1", "true", "True")
        if private and "groups:write" not in self.scopes:  # a private channel needs groups:write, not channels:manage
            raise _SlackError("missing_scope", needed="groups:write", provided=",".join(sorted(self.scopes)))
        if self.channel_by_name(name):
            raise _SlackError("name_taken")  # archived channels keep their names too
        channel = self.add_channel(name)
        channel.is_private = private
        channel.creator = self.bot_user_id
        return {"channel": channel.as_slack()}

    def _m_conversations_invite(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "users")
        channel = self._channel(args["channel"], member=True)
        users = [u for u in str(args["users"]).split(",") if u]
        if len(users) > 100:
            raise _SlackError("invalid_arguments", response_metadata={"messages": ["[ERROR] no more than 100 users"]})
        errors = [{"user": u, "ok": False, "error": "user_not_found"} for u in users if u not in self.users]
        if errors and str(args.get("force")) not in ("1", "true"):
            raise _SlackError("user_not_found", errors=errors)
        new = [u for u in users if u in self.users and u not in channel.members]
        if not new and not errors:
            raise _SlackError("already_in_channel", errors=[{"user": u, "ok": False, "error": "already_in_channel"}
                                                           for u in users])
        channel.members.update(new)
        if errors:
            raise _SlackError("user_not_found", errors=errors)
        return {"channel": channel.as_slack()}

    def _m_conversations_setTopic(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel")
        channel = self._channel(args["channel"], member=True)
        topic = str(args.get("topic", ""))
        if len(topic) > 250:
            raise _SlackError("too_long")
        channel.topic = topic
        return {"channel": channel.as_slack()}

    def _m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._channel(args.get("channel")).as_slack()}

    def _m_conversations_list(self, args: dict[str, Any]) -> dict[str, Any]:
        types = set(str(args.get("types") or "public_channel").split(","))
        found = [c for c in self.channels.values()
                 if ("private_channel" if c.is_private else "public_channel") in types
                 and not (c.is_private and self.bot_user_id not in c.members)  # only those it is in
                 and not (c.archived and str(args.get("exclude_archived")) in ("1", "true"))]
        page, cursor = _page(found, args, default=100, most=1000)
        return {"channels": [c.as_slack() for c in page], "response_metadata": {"next_cursor": cursor}}

    def _m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel")
        channel = self._channel(args["channel"], member=True, archived_ok=True)
        top = [m for m in reversed(channel.messages) if not m.thread_ts or m.thread_ts == m.ts]  # newest first
        top = [m for m in top if _within(m.ts, args)]
        page, cursor = _page(top, args, default=100, most=999)
        with_metadata = str(args.get("include_all_metadata")) in ("1", "true", "True")
        return {"messages": [m.as_slack(with_metadata=with_metadata) for m in page], "has_more": bool(cursor),
                "response_metadata": {"next_cursor": cursor}}

    def _m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "ts")
        channel = self._channel(args["channel"], member=True, archived_ok=True)
        if not any(m.ts == args["ts"] for m in channel.messages):
            raise _SlackError("thread_not_found")
        thread = [m for m in channel.messages if m.ts == args["ts"] or m.thread_ts == args["ts"]]  # oldest first
        page, cursor = _page(thread, args, default=100, most=1000)
        with_metadata = str(args.get("include_all_metadata")) in ("1", "true", "True")
        return {"messages": [m.as_slack(with_metadata=with_metadata) for m in page], "has_more": bool(cursor),
                "response_metadata": {"next_cursor": cursor}}

    def _m_conversations_members(self, args: dict[str, Any]) -> dict[str, Any]:
        """A page of the members (default 100, at most 1,000) and the cursor of the next, as Slack pages them."""
        channel = self._channel(args.get("channel"))
        page, cursor = _page(sorted(channel.members), args, default=100, most=1000)
        return {"members": page, "response_metadata": {"next_cursor": cursor}}

    def _m_conversations_archive(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel")
        channel = self._channel(args.get("channel"), member=True, archived_ok=True)
        if channel.archived:
            raise _SlackError("already_archived")
        channel.archived = True
        return {}

    def _post(self, args: dict[str, Any], *, ephemeral: bool = False) -> Message:
        _require(args, "channel")
        channel = self._channel(args["channel"])
        blocks = _blocks(args)
        text = str(args.get("text") or "")
        if not text and not blocks:
            raise _SlackError("no_text")
        thread_ts = args.get("thread_ts") or None
        if thread_ts and not any(m.ts == thread_ts for m in channel.messages):
            raise _SlackError("thread_not_found")
        message = Message(ts=self._new_ts(), text=text[:40000], blocks=blocks, user=self.bot_user_id,
                          thread_ts=thread_ts, metadata=_metadata(args))
        if not ephemeral:
            channel.messages.append(message)
        return message

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._post(args)
        channel = self._channel(args["channel"])
        return {"channel": channel.id, "ts": message.ts,
                "message": {"type": "message", "text": message.text, "ts": message.ts, "bot_id": "B0001",
                            "blocks": message.blocks,
                            **({"thread_ts": message.thread_ts} if message.thread_ts else {})}}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "ts")
        channel = self._channel(args["channel"])
        message = next((m for m in channel.messages if m.ts == args["ts"]), None)
        if message is None:
            raise _SlackError("message_not_found")
        if message.user != self.bot_user_id:
            raise _SlackError("cant_update_message")
        text = str(args.get("text") or "")
        if len(text) > 4000:
            raise _SlackError("msg_too_long")
        blocks = _blocks(args)
        if not text and not blocks:
            raise _SlackError("no_text")
        message.text, message.blocks, message.edits = text, blocks, message.edits + 1
        return {"channel": channel.id, "ts": message.ts, "text": text, "message": {"text": text, "blocks": blocks}}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "channel", "user")
        channel = self._channel(args["channel"])
        if args["user"] not in channel.members:
            raise _SlackError("user_not_in_channel")
        message = self._post(args, ephemeral=True)
        self.ephemerals.append((channel.id, str(args["user"]), message))
        return {"message_ts": message.ts}

    def _m_chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        return {"channel": channel.id,
                "permalink": f"https://acme.slack.com/archives/{channel.id}"
                             f"/p{str(args.get('message_ts')).replace('.', '')}"}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": user.as_slack(with_locale=str(args.get("include_locale")) in ("1", "true"))}

    def _m_users_lookupByEmail(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "email")
        user = next((u for u in self.users.values() if u.email.lower() == str(args["email"]).lower()), None)
        if user is None:
            raise _SlackError("users_not_found")
        return {"user": user.as_slack()}

    def _m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "usergroup")
        if args["usergroup"] not in self.usergroups:
            raise _SlackError("no_such_subteam")
        return {"users": self.usergroups[args["usergroup"]]}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "filename")
        if int(args.get("length") or 0) <= 0:
            raise _SlackError("missing_argument")
        file_id = f"F{next(self._ids):08d}"
        self._pending_files[file_id] = {"filename": args["filename"], "length": int(args["length"])}
        return {"upload_url": f"http://127.0.0.1:{self.port}/upload/v1/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        _require(args, "files")
        files = json.loads(args["files"]) if isinstance(args["files"], str) else args["files"]
        for entry in files:
            if entry["id"] not in self.uploads:
                raise _SlackError("file_not_found")
        if args.get("channel_id"):
            message = self._post({"channel": args["channel_id"], "text": args.get("initial_comment") or " ",
                                  "thread_ts": args.get("thread_ts")})
            message.files = [f["id"] for f in files]
            message.file_objects = [{"id": f["id"], "name": self._pending_files.get(f["id"], {}).get("filename", ""),
                                     "title": f.get("title", ""), "size": len(self.uploads[f["id"]]),
                                     "user": self.bot_user_id} for f in files]
        return {"files": [{"id": f["id"], "title": f.get("title", ""),
                           "name": self._pending_files.get(f["id"], {}).get("filename", "")} for f in files]}

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        """A modal for the user who triggered it. The trigger ids of the tests' interaction
        payloads (tests.slack_requests.trigger_id) carry their issue time: `<n>.<unix time>.<hex>`."""
        _require(args, "trigger_id", "view")
        trigger = str(args["trigger_id"])
        parts = trigger.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise _SlackError("invalid_trigger_id")
        if time.time() - int(parts[1]) > TRIGGER_SECONDS:
            raise _SlackError("expired_trigger_id")
        if trigger in self._used_triggers:
            raise _SlackError("exchanged_trigger_id")
        view = json.loads(args["view"]) if isinstance(args["view"], str) else args["view"]
        problems = validate_view(view)
        if problems:
            raise _SlackError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
        self._used_triggers.add(trigger)
        view_id = f"V{next(self._ids):08d}"
        opened = {**view, "id": view_id, "hash": uuid.uuid4().hex[:16], "state": {"values": {}}}
        self.views[view_id] = opened
        return {"view": opened}

    def _m_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        """A user's Home tab, replaced whole. `hash` (optional) must be the one last published, as
        Slack guards against two publishes racing (`hash_conflict`)."""
        _require(args, "user_id", "view")
        if not self.home_tab_enabled:
            raise _SlackError("not_enabled")
        raw = args["view"]
        view = json.loads(raw) if isinstance(raw, str) else raw
        if len(raw if isinstance(raw, str) else json.dumps(raw)) > 250_000:
            raise _SlackError("view_too_large")
        problems = validate_view(view, surface="home")
        if problems:
            raise _SlackError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
        user = str(args["user_id"])
        before = self.homes.get(user)
        if args.get("hash") and (before is None or before["hash"] != args["hash"]):
            raise _SlackError("hash_conflict")
        published = {**view, "id": before["id"] if before else f"V{next(self._ids):08d}", "team_id": "T0001",
                     "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}", "state": {"values": {}},
                     "app_id": "A0001", "bot_id": "B0001", "root_view_id": None, "previous_view_id": None}
        self.homes[user] = published
        return {"view": published}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        self._channel(args.get("channel"))
        return {}

    def response_url(self, kind: str = "actions") -> str:
        """A response_url as Slack puts in interaction and slash-command payloads."""
        return f"http://127.0.0.1:{self.port}/{kind}/T0001/{next(self._ids)}/{uuid.uuid4().hex[:24]}"

    def respond(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POSTs to a response_url: JSON with text or blocks (hooks.slack.com answers a bare `ok`)."""
        try:
            message = json.loads(body)
        except ValueError:
            return 400, b"invalid_payload"
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return 400, b"no_text"
        with self._lock:
            self.responses.append((path, message))
        return 200, b"ok"

    def upload(self, file_id: str, data: bytes) -> int:
        with self._lock:
            if file_id not in self._pending_files:
                return 404
            self.uploads[file_id] = data
            return 200


def _blocks(args: dict[str, Any]) -> list[dict[str, Any]]:
    raw = args.get("blocks")
    if raw in (None, ""):
        return []
    try:
        blocks = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise _SlackError("invalid_blocks_format") from exc
    problems = validate_blocks(blocks)
    if problems:
        raise _SlackError("invalid_blocks", errors=problems,
                          response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
    return blocks


def _metadata(args: dict[str, Any]) -> dict[str, Any] | None:
    """Message metadata: {"event_type": "a_name", "event_payload": {...}} or Slack refuses it."""
    raw = args.get("metadata")
    if raw in (None, ""):
        return None
    try:
        metadata = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise _SlackError("invalid_metadata_format") from exc
    if not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str) \
            or not isinstance(metadata.get("event_payload"), dict):
        raise _SlackError("invalid_metadata_format")
    if len(json.dumps(metadata)) > 8000:
        raise _SlackError("metadata_too_large")
    return metadata


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = str(ts).partition(".")
    return int(seconds or 0), int((fraction or "0").ljust(6, "0")[:6])


def _within(ts: str, args: dict[str, Any]) -> bool:
    """conversations.history's window: after `oldest`, before `latest` (now when absent), each
    bound itself included only with `inclusive`."""
    inclusive = str(args.get("inclusive")) in ("1", "true", "True")
    key = _ts_key(ts)
    if args.get("latest") not in (None, ""):
        latest = _ts_key(str(args["latest"]))
        if key > latest or (key == latest and not inclusive):
            return False
    if args.get("oldest") not in (None, ""):
        oldest = _ts_key(str(args["oldest"]))
        if key < oldest or (key == oldest and not inclusive):
            return False
    return True


def _page(items: list[Any], args: dict[str, Any], *, default: int, most: int) -> tuple[list[Any], str]:
    """Cursor pagination as Slack does it: `limit` items from `cursor`, and the next cursor or ""."""
    limit = min(int(args.get("limit") or default), most)
    start = int(str(args.get("cursor") or "0").removeprefix("c:") or 0)
    rest = start + limit
    return items[start:rest], (f"c:{rest}" if rest < len(items) else "")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A held answer to a bot the test killed goes nowhere: that is the point, not an error.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def _handler(fake: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # keep-alive + split writes would stall 40 ms on delayed ACKs

        def log_message(self, *_: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.startswith("/upload/v1/"):
                status = fake.upload(self.path.rsplit("/", 1)[1], body)
                return self._send(status, b"OK - %d" % len(body), "text/plain")
            if self.path.startswith(("/actions/", "/commands/")):
                status, answer = fake.respond(self.path, body)
                return self._send(status, answer, "text/plain")
            if not self.path.startswith("/api/"):
                return self._send(404, b"not found", "text/plain")
            headers = {k.lower(): v for k, v in self.headers.items()}
            method, _, query = self.path[len("/api/"):].partition("?")
            # Slack takes arguments from the query string too (slack_sdk sends some methods' there).
            args = {**dict(parse_qsl(query, keep_blank_values=True)), **_args(headers, body)}
            status, answer, extra = fake.handle(method, args, headers)
            if answer.get("error") == _GATEWAY_HTML:
                return self._send(status, _GATEWAY_HTML.encode(), "text/html", extra)
            self._send(status, json.dumps(answer).encode(), "application/json; charset=utf-8", extra)

        def _send(self, status: int, payload: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _args(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    if headers.get("content-type", "").startswith("application/json"):
        return json.loads(body) if body.strip() else {}  # auth.test sends an empty JSON body
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
