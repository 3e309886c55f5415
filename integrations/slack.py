"""Slack Web API: a small typed client over slack_sdk's AsyncWebClient.

Knows nothing of incidents. Every failure comes out as `SlackError`, which says
whether retrying can help and, for rate limits, when.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from integrations.errors import IntegrationError

__all__ = ["MEMBER_PAGES", "REQUIRED_SCOPES", "Channel", "ChannelInfo", "ChannelMessage", "Identity", "RateLimiter",
           "SlackClient", "SlackError", "SlackUser", "make_web_client"]

log = logging.getLogger(__name__)

# Errors that a later attempt can get past; anything else is a problem with the request.
_TRANSIENT = {"ratelimited", "rate_limited", "internal_error", "fatal_error", "request_timeout",
              "service_unavailable", "team_added_to_org"}
# Errors that only a person can fix, in the Slack app (token, scopes) or in the workspace (the
# bot's channel): retrying soon cannot help, but the work must wait, not be dropped.
_APP_SETUP = {"not_authed", "invalid_auth", "account_inactive", "token_revoked", "token_expired",
              "missing_scope", "no_permission", "team_access_not_granted", "ekm_access_denied"}
_CHANNEL_SETUP = {"channel_not_found", "not_in_channel", "is_archived"}
# The bot scopes the bot uses (manifest.yml requests exactly these); /readyz names any missing.
REQUIRED_SCOPES = frozenset({
    "commands", "chat:write", "channels:manage", "channels:read", "channels:history", "groups:write",
    "groups:read", "groups:history", "users:read", "users:read.email", "usergroups:read", "files:write",
    "app_mentions:read", "reactions:read", "pins:read",
})
_INVITE_CHUNK = 100  # conversations.invite takes at most 100 users per call
_HISTORY_PAGES = 5  # pages of 200 searched for a message of our own: the newest 1,000
# conversations.members gives at most 1,000 a page; a membership check reads at most this many
# pages (5,000 members) before it says it cannot tell: a few round trips, within an ack's 3 s.
MEMBER_PAGES = 5


class SlackError(IntegrationError):
    def __init__(self, method: str, error: str, *, status: int | None = None, retry_after: float | None = None,
                 detail: Any = None, channel: str | None = None) -> None:
        super().__init__(f"Slack {method} failed: {error}" + (f" (HTTP {status})" if status else ""))
        self.method, self.error, self.status = method, error, status
        self.retry_after, self.detail = retry_after, detail
        self.channel = channel  # the channel the call named, if any
        self.retryable = error in _TRANSIENT or status is None or status == 429 or status >= 500

    @property
    def app_setup(self) -> bool:
        """The token or its scopes are wrong: fixed in the Slack app's settings."""
        return self.error in _APP_SETUP

    @property
    def channel_setup(self) -> bool:
        """The channel is gone, archived, or the bot is not in it: fixed in the workspace."""
        return self.error in _CHANNEL_SETUP

    @property
    def fix(self) -> str:
        """What a person should do about it, in one sentence."""
        if self.error == "missing_scope":
            needed = self.detail.get("needed") if isinstance(self.detail, dict) else None
            return f"add the scope {needed or '(see manifest.yml)'} to the Slack app and reinstall it"
        if self.app_setup:
            return "the bot token is not valid: reinstall the Slack app and update SLACK_BOT_TOKEN"
        if self.error == "not_in_channel":
            return "invite the bot to the channel (/invite @oncall-bot)"
        if self.channel_setup:
            return "the channel does not exist or is archived: create it or fix channels.announce in ONCALL_CONFIG"
        return "see the error in Slack's API documentation"


@dataclass(frozen=True)
class Identity:
    """Who the token is (auth.test): the bot's user id, its workspace and the scopes it was granted."""

    user_id: str
    team: str
    scopes: frozenset[str]
    team_id: str = ""  # the workspace the app is installed in (auth.test's team_id)


@dataclass(frozen=True)
class SlackUser:
    """A person as users.info describes them: their own workspace and whether they are a guest."""

    id: str
    team_id: str
    guest: bool  # a multi-channel (is_restricted) or single-channel (is_ultra_restricted) guest
    locale: str | None


@dataclass(frozen=True)
class ChannelInfo:
    id: str
    name: str
    is_member: bool
    is_archived: bool


@dataclass(frozen=True)
class Channel:
    id: str
    name: str


@dataclass(frozen=True)
class ChannelMessage:
    """A message as conversations.history / replies give it: who wrote it (a user id; a bot's
    message without one: its bot id), its text as Slack stores it (mrkdwn, entities), its thread."""

    ts: str
    user: str
    text: str
    thread_ts: str | None


def make_web_client(token: str, base_url: str, *, timeout: int = 15,
                    on_ratelimited: Callable[[str], None] | None = None) -> AsyncWebClient:
    """The client the bot (and Bolt) use: 429 honours Retry-After once; whatever else fails
    reaches the durable outbox. `on_ratelimited(method)` is told of every 429 (for metrics)."""
    client = AsyncWebClient(token=token, base_url=base_url, timeout=timeout)
    # Only a 429 is retried in place (Slack did nothing). A dropped connection or a 5xx may
    # come after Slack did the work: the outbox retries those, and the retry looks for its own
    # earlier result first, which an in-place retry would not.
    client.retry_handlers = [_RateLimitRetry(max_retry_count=1, on_ratelimited=on_ratelimited)]
    return client


class _RateLimitRetry(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry, telling of each 429 it sees: the one it retries never reaches
    `_call_response`, and it is the one that says the bot runs close to Slack's limits."""

    def __init__(self, *, max_retry_count: int, on_ratelimited: Callable[[str], None] | None) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._on_ratelimited = on_ratelimited

    async def can_retry_async(self, *, state: Any, request: Any, response: Any = None,
                              error: Exception | None = None) -> bool:
        if self._on_ratelimited is not None and error is None and response is not None \
                and response.status_code == 429:
            self._on_ratelimited(str(request.url).split("?")[0].rsplit("/", 1)[-1])
        return await super().can_retry_async(state=state, request=request, response=response, error=error)


class RateLimiter(Protocol):
    async def wait(self, method: str, channel: str | None) -> float | None:
        """Return once the call may go (None), or the seconds after which to try it again."""


class _Unlimited:
    async def wait(self, method: str, channel: str | None) -> float | None:
        return None


class SlackClient:
    def __init__(self, web: AsyncWebClient, *, on_call: Callable[[str, str, float], None] | None = None,
                 limiter: RateLimiter | None = None) -> None:
        """`on_call(method, outcome, seconds)` is told of every call as it ends (for metrics); `limiter` paces them
        (integrations.slack_rate: Slack's limits, shared by the replicas)."""
        self.web = web
        self._limiter = limiter or _Unlimited()
        self._on_call = on_call or (lambda method, outcome, seconds: None)

    async def _call(self, method: str, **args: Any) -> dict[str, Any]:
        return dict((await self._call_response(method, **args)).data)

    async def _call_response(self, method: str, **args: Any) -> Any:
        args = {k: v for k, v in args.items() if v is not None}
        if (later := await self._limiter.wait(method, args.get("channel"))) is not None:
            raise SlackError(method, "ratelimited", retry_after=later, channel=args.get("channel"))
        started = time.perf_counter()
        try:
            response = await self.web.api_call(method, json=args) if _json_method(method) else \
                await self.web.api_call(method, data=_form(args))
        except SlackApiError as exc:
            status = exc.response.status_code
            retry_after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
            error = exc.response.get("error", "unknown_error") if isinstance(exc.response.data, dict) else str(exc)
            self._on_call(method, error, time.perf_counter() - started)
            raise SlackError(method, error, status=status,
                             retry_after=float(retry_after) if retry_after else None,
                             detail=exc.response.data, channel=args.get("channel")) from exc
        except (SlackClientError, OSError, TimeoutError) as exc:
            self._on_call(method, "unreachable", time.perf_counter() - started)
            raise SlackError(method, f"Slack unreachable at {self.web.base_url} ({exc.__class__.__name__}: {exc}); "
                                     "check SLACK_API_URL and the network") from exc
        self._on_call(method, "ok", time.perf_counter() - started)
        return response

    async def identity(self) -> Identity:
        response = await self._call_response("auth.test")
        scopes = response.headers.get("x-oauth-scopes") or response.headers.get("X-OAuth-Scopes") or ""
        data = dict(response.data)
        return Identity(user_id=str(data.get("user_id", "")), team=str(data.get("team", "")),
                        team_id=str(data.get("team_id", "")),
                        scopes=frozenset(s.strip() for s in str(scopes).split(",") if s.strip()))

    async def channel_info(self, channel: str) -> ChannelInfo:
        data = await self._call("conversations.info", channel=channel)
        found = data["channel"]
        return ChannelInfo(id=found["id"], name=found.get("name", ""), is_member=bool(found.get("is_member")),
                           is_archived=bool(found.get("is_archived")))

    async def find_channel(self, name: str, *, creator: str, private: bool = False) -> Channel | None:
        """The unarchived channel of this name that `creator` made, if there is one."""
        types = "private_channel" if private else "public_channel"
        async for found in self._channels(types, exclude_archived=True):
            if found.get("name") == name and found.get("creator") == creator:
                return Channel(id=found["id"], name=found["name"])
        return None

    async def find_channel_by_name(self, name: str) -> ChannelInfo | None:
        async for found in self._channels("public_channel,private_channel", exclude_archived=False):
            if found.get("name") == name:
                return ChannelInfo(id=found["id"], name=name, is_member=bool(found.get("is_member")),
                                   is_archived=bool(found.get("is_archived")))
        return None

    async def _channels(self, types: str, *, exclude_archived: bool) -> AsyncIterator[dict[str, Any]]:
        cursor = ""
        while True:
            data = await self._call("conversations.list", types=types, exclude_archived=exclude_archived,
                                    limit=1000, cursor=cursor or None)
            for found in data.get("channels", []):
                yield found
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return

    async def find_message(self, channel: str, event_type: str, payload: dict[str, Any], *,
                           thread_ts: str | None = None) -> str | None:
        """The ts of a recent message carrying this metadata (all of `payload`'s keys equal),
        in the channel or in one thread. How a retried post finds what it already posted."""
        method, where = ("conversations.replies", {"ts": thread_ts}) if thread_ts else ("conversations.history", {})
        cursor = ""
        for _ in range(_HISTORY_PAGES):
            data = await self._call(method, channel=channel, limit=200, include_all_metadata=True,
                                    cursor=cursor or None, **where)
            for message in data.get("messages", []):
                meta = message.get("metadata") or {}
                found = meta.get("event_payload") or {}
                if meta.get("event_type") == event_type and all(found.get(k) == v for k, v in payload.items()):
                    return str(message["ts"])
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return None
        return None

    async def find_file(self, channel: str, filename: str) -> str | None:
        """The id of a file named `filename` shared in a recent message of the channel (the newest
        1,000): how a retried upload finds what an earlier attempt shared."""
        cursor = ""
        for _ in range(_HISTORY_PAGES):
            data = await self._call("conversations.history", channel=channel, limit=200, cursor=cursor or None)
            for message in data.get("messages", []):
                for shared in message.get("files") or []:
                    if isinstance(shared, dict) and shared.get("name") == filename and shared.get("id"):
                        return str(shared["id"])
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return None
        return None

    async def archive_channel(self, channel: str) -> bool:
        """Archive a channel the bot is in; False when it already was."""
        try:
            await self._call("conversations.archive", channel=channel)
        except SlackError as exc:
            if exc.error == "already_archived":
                return False
            raise
        return True

    async def create_channel(self, name: str, *, private: bool = False) -> Channel:
        data = await self._call("conversations.create", name=name, is_private=private)
        return Channel(id=data["channel"]["id"], name=data["channel"]["name"])

    async def set_topic(self, channel: str, topic: str) -> None:
        await self._call("conversations.setTopic", channel=channel, topic=topic[:250])

    async def invite(self, channel: str, users: Sequence[str]) -> list[tuple[str, str]]:
        """Invite users; returns (user, error) for those Slack refused (already members excluded)."""
        refused: list[tuple[str, str]] = []
        for start in range(0, len(users), _INVITE_CHUNK):
            chunk = list(users[start:start + _INVITE_CHUNK])
            try:
                await self._call("conversations.invite", channel=channel, users=",".join(chunk), force=True)
            except SlackError as exc:
                if exc.error == "already_in_channel":
                    continue
                if exc.retryable or not isinstance(exc.detail, dict) or "errors" not in exc.detail:
                    raise
                refused += [(e.get("user", "?"), e.get("error", exc.error)) for e in exc.detail["errors"]
                            if e.get("error") != "already_in_channel"]
        return refused

    async def post_message(self, channel: str, text: str, *, blocks: list[dict[str, Any]] | None = None,
                           thread_ts: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """`metadata` ({"event_type", "event_payload"}) lets `find_message` find this message again."""
        data = await self._call("chat.postMessage", channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                                unfurl_links=False, metadata=metadata)
        return str(data["ts"])

    async def update_message(self, channel: str, ts: str, text: str, *,
                             blocks: list[dict[str, Any]] | None = None) -> None:
        await self._call("chat.update", channel=channel, ts=ts, text=text, blocks=blocks)

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> str:
        """A modal for the person whose click gave `trigger_id` (usable once, within 3 s)."""
        data = await self._call("views.open", trigger_id=trigger_id, view=view)
        return str(data["view"]["id"])

    async def publish_home(self, user: str, view: dict[str, Any]) -> str:
        """The app's Home tab as `user` sees it (views.publish: the whole view, replaced)."""
        data = await self._call("views.publish", user_id=user, view=view)
        return str(data["view"]["id"])

    async def post_ephemeral(self, channel: str, user: str, text: str,
                             blocks: list[dict[str, Any]] | None = None) -> None:
        await self._call("chat.postEphemeral", channel=channel, user=user, text=text, blocks=blocks)

    async def user_id_by_email(self, email: str) -> str | None:
        try:
            data = await self._call("users.lookupByEmail", email=email)
        except SlackError as exc:
            if exc.error == "users_not_found":
                return None
            raise
        return str(data["user"]["id"])

    async def usergroup_members(self, usergroup: str) -> list[str]:
        data = await self._call("usergroups.users.list", usergroup=usergroup)
        return list(data.get("users", []))

    async def in_channel(self, channel: str, user: str, *, pages: int = MEMBER_PAGES) -> bool | None:
        """Whether `user` is a member of `channel`: conversations.members read a page of 1,000 at a
        time until `user` is among them or Slack has no more (False); None when `pages` pages did
        not say (a channel of more members than that). Slack has no cheaper way to ask about one
        member; callers bound the time too."""
        cursor = ""
        for _ in range(pages):
            data = await self._call("conversations.members", channel=channel, limit=1000, cursor=cursor or None)
            if user in data.get("members", []):
                return True
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return False
        return None

    async def user_account(self, user: str) -> SlackUser:
        """users.info: the person's workspace, whether they are a guest, their locale."""
        found = (await self._call("users.info", user=user, include_locale=True))["user"]
        return SlackUser(id=str(found.get("id") or user), team_id=str(found.get("team_id") or ""),
                         guest=bool(found.get("is_restricted") or found.get("is_ultra_restricted")),
                         locale=found.get("locale") or None)

    async def user_locale(self, user: str) -> str:
        data = await self._call("users.info", user=user, include_locale=True)
        return str(data["user"].get("locale") or "en-US")

    async def user_name(self, user: str) -> str | None:
        """How Slack shows the user: their display name, else their real name, else their handle."""
        found = (await self._call("users.info", user=user))["user"]
        profile = found.get("profile") or {}
        name = profile.get("display_name") or profile.get("real_name") or found.get("real_name") or found.get("name")
        return str(name) if name else None

    async def message(self, channel: str, ts: str, *, thread_ts: str | None = None) -> ChannelMessage | None:
        """One message by its ts: a top-level one (conversations.history up to `ts` inclusive,
        limit 1), else a reply in a thread (conversations.replies of its thread, or of its own ts,
        which Slack answers with that reply); None when Slack has no such message."""
        if not thread_ts or thread_ts == ts:
            data = await self._call("conversations.history", channel=channel, latest=ts, inclusive=True, limit=1)
            found = next((m for m in data.get("messages", []) if m.get("ts") == ts), None)
            if found is not None:
                return _channel_message(found)
        cursor = ""
        for _ in range(_HISTORY_PAGES):
            try:
                data = await self._call("conversations.replies", channel=channel, ts=thread_ts or ts, limit=200,
                                        cursor=cursor or None)
            except SlackError as exc:
                if exc.error == "thread_not_found":
                    return None
                raise
            found = next((m for m in data.get("messages", []) if m.get("ts") == ts), None)
            if found is not None:
                return _channel_message(found)
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or ""
            if not cursor:
                return None
        return None

    async def permalink(self, channel: str, ts: str) -> str:
        data = await self._call("chat.getPermalink", channel=channel, message_ts=ts)
        return str(data["permalink"])

    async def upload_file(self, channel: str, content: bytes, filename: str, *, title: str,
                          thread_ts: str | None = None, comment: str | None = None) -> str | None:
        """Upload and share a file (files.getUploadURLExternal, the bytes, files.completeUploadExternal);
        its file id, when Slack names it."""
        try:
            done = await self.web.files_upload_v2(channel=channel, content=content, filename=filename, title=title,
                                                  thread_ts=thread_ts, initial_comment=comment)
            found = done.get("file") or {}
            return str(found["id"]) if isinstance(found, dict) and found.get("id") else None
        except SlackApiError as exc:
            raise SlackError("files.upload_v2", exc.response.get("error", "unknown_error"),
                             status=exc.response.status_code) from exc
        except (SlackClientError, OSError, TimeoutError) as exc:
            raise SlackError("files.upload_v2", f"unreachable: {exc!r}") from exc


def _channel_message(message: dict[str, Any]) -> ChannelMessage:
    return ChannelMessage(ts=str(message["ts"]), user=str(message.get("user") or message.get("bot_id") or ""),
                          text=str(message.get("text") or ""), thread_ts=message.get("thread_ts") or None)


def _json_method(method: str) -> bool:
    return method.startswith(("chat.", "views."))


def _form(args: dict[str, Any]) -> dict[str, Any]:
    return {k: ("1" if v else "0") if isinstance(v, bool) else v for k, v in args.items()}
