"""POST /slack/events: bounded and signature-checked here, then handed to Bolt.

Bolt's Starlette adapter reads the whole body before anything is checked; here a request is
refused before Bolt sees it unless its body is at most SLACK_MAX_BODY_BYTES and it is signed by
Slack: `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` under
SLACK_SIGNING_SECRET, and `X-Slack-Request-Timestamp` is within 5 minutes of the wall clock
(Slack's timestamps are real time, whatever clock the rest of the bot runs on).
400 for a malformed timestamp, 401 unsigned, stale or badly signed, 413 too big, 400 for a signed
body that is not the shape Slack gives its requests (commands.slack_envelope); never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope

from commands.http_body import BodyError, read_body
from commands.slack_envelope import EnvelopeError, checked_body

__all__ = ["MAX_SKEW_SECONDS", "SLACK_MAX_BODY_BYTES", "SlackEvents"]

log = logging.getLogger(__name__)

# Slack's events, slash commands and interaction payloads are a few KB (a modal's state, a
# message with its blocks: tens of KB); nothing Slack sends comes near this.
SLACK_MAX_BODY_BYTES = 512 * 1024
MAX_SKEW_SECONDS = 5 * 60  # as Slack's docs and Bolt: an older request may be a replay


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


class SlackEvents:
    def __init__(self, bolt: AsyncApp, signing_secret: str, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.handler = AsyncSlackRequestHandler(bolt)
        self.secret, self.wall_clock = signing_secret.encode(), wall_clock

    async def handle(self, request: Request) -> Response:
        try:
            timestamp, signature = self._signed_headers(request.headers)
            body = await read_body(request, SLACK_MAX_BODY_BYTES)
            self._verify(timestamp, body, signature)
            replaced = checked_body(body, _content_type(request.headers))
        except (_Refused, BodyError) as exc:
            log.warning("Slack request refused (%s): %s", exc.status, exc.error,
                        extra={"status": exc.status, "error": exc.error})
            return JSONResponse({"error": exc.error}, status_code=exc.status)
        except EnvelopeError as exc:
            log.warning("Slack request refused (400): %s", exc.error, extra={"status": 400, "error": exc.error})
            return JSONResponse({"error": exc.error}, status_code=400)
        scope = request.scope
        if replaced is not None:  # Bolt checks the signature again: sign what it is given
            body, scope = replaced, self._signed_scope(scope, timestamp, replaced)
        # Bolt's adapter calls `await request.body()`: give it a request that replays what was read.
        return await self.handler.handle(Request(scope, receive=_replay(body)))

    def _signed_headers(self, headers: Headers) -> tuple[bytes, bytes]:
        """Checked before the body is read: an unsigned or stale request costs no read."""
        if not self.secret:
            raise _Refused(401, "SLACK_SIGNING_SECRET is not set: set it to the Slack app's signing secret")
        timestamp, signature = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
        if timestamp is None or signature is None:
            raise _Refused(401, "unsigned request: X-Slack-Request-Timestamp and X-Slack-Signature are required")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise _Refused(400, "X-Slack-Request-Timestamp is not an integer number of seconds")
        skew = int(timestamp) - self.wall_clock()
        if abs(skew) > MAX_SKEW_SECONDS:
            raise _Refused(401, f"X-Slack-Request-Timestamp is {abs(skew):.0f} s in the "
                                f"{'future' if skew > 0 else 'past'}: more than {MAX_SKEW_SECONDS} s "
                                "(a replayed request, or this host's clock is wrong)")
        # Starlette decodes headers as latin-1: encoding back gives the bytes as sent.
        return timestamp.encode(), signature.encode("latin-1")

    def _verify(self, timestamp: bytes, body: bytes, signature: bytes) -> None:
        digest = hmac.new(self.secret, b"v0:" + timestamp + b":" + body, hashlib.sha256).hexdigest()
        expected = b"v0=" + digest.encode()
        if not hmac.compare_digest(expected, signature):
            raise _Refused(401, "wrong X-Slack-Signature: check SLACK_SIGNING_SECRET against the Slack app's "
                                "Basic Information page")

    def _signed_scope(self, scope: Scope, timestamp: bytes, body: bytes) -> Scope:
        digest = hmac.new(self.secret, b"v0:" + timestamp + b":" + body, hashlib.sha256).hexdigest()
        replaced = {b"x-slack-signature": b"v0=" + digest.encode(), b"content-length": str(len(body)).encode()}
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in replaced] + list(replaced.items())
        return {**scope, "headers": headers}


def _content_type(headers: Headers) -> str | None:
    value = headers.get("content-type")
    return value.split(";")[0] if value else None  # as Bolt's extract_content_type reads it


def _replay(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
