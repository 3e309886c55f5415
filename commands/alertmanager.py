"""POST /alertmanager: authenticate, bound, parse and persist; Slack work happens later.

Alertmanager retries 5xx and never 4xx (alertmanager#2121), so: bad input gets a 4xx
naming the problem, and a failure to persist gets a 503 so that it tries again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse

from bot import heartbeat, metrics
from bot.config import Settings
from bot.db import Database
from bot.incidents import IngestResult, Repeats, receive
from bot.logs import bind_incident
from bot.models import utcnow
from commands.http_body import BodyError, BodyTooLarge, read_body
from integrations.alertmanager import WebhookMessage

__all__ = ["WebhookEndpoint"]

log = logging.getLogger(__name__)


class _Reject(Exception):
    def __init__(self, status: int, error: str, **extra: object) -> None:
        super().__init__(error)
        self.status, self.error, self.extra = status, error, extra


class WebhookEndpoint:
    def __init__(self, settings: Settings, db: Database, on_commit: Callable[[], None],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.settings, self.db, self.on_commit, self.clock = settings, db, on_commit, clock
        self._expected = f"Bearer {settings.alertmanager_webhook_token}".encode()
        self._parsed = _ParseMemo()
        self._repeats = Repeats(db)

    async def handle(self, request: Request) -> JSONResponse:
        started = time.perf_counter()  # oncall_webhook_intake_seconds: arrival to answer, by outcome class
        try:
            self._authenticate(request)
            body = await self._read_body(request)
            # One thread hop for parse and persist: a 10 MiB body takes a while to parse, and a
            # hop costs as much as answering a repeat, so there is only one.
            message, beat, result = await self._apply(body)
        except _Reject as rej:
            metrics.WEBHOOKS.labels(outcome=f"rejected_{rej.status}").inc()
            log.warning("webhook rejected (%s): %s", rej.status, rej.error,
                        extra={"status": rej.status, "error": rej.error})
            _took(started, "rejected")
            return JSONResponse({"error": rej.error, **rej.extra}, status_code=rej.status)
        except SQLAlchemyError as exc:
            metrics.WEBHOOKS.labels(outcome="error_503").inc()
            log.error("webhook not persisted; Alertmanager will retry", extra={"error": repr(exc)})
            _took(started, "error")
            return JSONResponse({"error": "could not store the notification; retry later"}, status_code=503)
        if beat:
            self.on_commit()  # after a loss, the heartbeat queued "alerts reach the bot again"
        if result is None:
            metrics.WEBHOOKS.labels(outcome="heartbeat").inc()
            log.info("heartbeat received", extra={"group_key": message.group_key, "recorded": beat})
            _took(started, "applied")
            return JSONResponse({"incident_id": None, "outcome": "heartbeat"})
        bind_incident(result.incident_id)  # the rest of this request's lines (the access log too) name it
        if not result.repeat:  # a repeat committed nothing: no work to wake the worker for
            self.on_commit()
        metrics.WEBHOOKS.labels(outcome=result.outcome).inc()
        # A repeat is Alertmanager's repeat_interval at work, not news: debug, counted in /metrics.
        log.log(logging.DEBUG if result.repeat else logging.INFO, "webhook applied",
                extra={"incident": result.incident_id, "outcome": result.outcome, "repeat": result.repeat,
                       "group_key": message.group_key, "alerts": len(message.alerts)})
        _took(started, "repeat" if result.repeat else "applied")
        return JSONResponse({"incident_id": result.incident_id, "outcome": result.outcome})

    async def _apply(self, body: bytes) -> tuple[WebhookMessage, bool, IngestResult | None]:
        """Parse and apply `body`. A repeat of a body seen before is answered right here when
        its group's row is kept (bot.incidents.Repeats), or on SQLite from a read (a WAL
        snapshot that never waits for a writer, and costs less than the thread hop; PostgreSQL's
        read is a network round trip: that one is made in a thread)."""
        message = self._parsed.known(body)
        if message is not None and not heartbeat.split(self.settings.config.heartbeat, message)[0]:
            config, repeats = self.settings.config, self._repeats
            repeat = repeats.answer(config, message) if self.db.is_sqlite else repeats.known(config, message)
            if repeat is not None:
                return message, False, repeat
        return await asyncio.to_thread(self._receive, body)

    def _receive(self, body: bytes) -> tuple[WebhookMessage, bool, IngestResult | None]:
        """Parse and apply (in a thread): the message, whether it brought a heartbeat, the intake's result."""
        message = self._parsed.parse(body)
        beat, rest = heartbeat.split(self.settings.config.heartbeat, message)
        return message, beat, self._persist(rest, beat)

    def _authenticate(self, request: Request) -> None:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, self._expected):
            raise _Reject(401, "missing or wrong bearer token: set Alertmanager's webhook "
                               "http_config.authorization.credentials to ALERTMANAGER_WEBHOOK_TOKEN")

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.max_webhook_bytes
        # Over the limit: read on (up to a bound) only to name the group in the log.
        oversize = _Oversize()
        try:
            return await read_body(request, limit, overflow=oversize.add, read_up_to=_DRAIN_FACTOR * limit)
        except BodyTooLarge as exc:
            raise self._too_big(exc.size, limit, oversize) from exc
        except BodyError as exc:
            raise _Reject(exc.status, exc.error) from exc

    @staticmethod
    def _too_big(size: int, limit: int, seen: _Oversize) -> _Reject:
        receiver, group_key = seen.field("receiver"), seen.field("groupKey")
        log.error("webhook over the body limit: this notification is lost; lower max_alerts in Alertmanager's "
                  "webhook_config", extra={"bytes": size, "limit": limit, "receiver": receiver,
                                           "group_key": group_key})
        return _Reject(413, f"body is {size} bytes or more; the limit is {limit} "
                            "(lower max_alerts in Alertmanager's webhook_config)")

    def _persist(self, message: WebhookMessage | None, beat: bool) -> IngestResult | None:
        """Apply the notification; None when it was only the heartbeat (bot.heartbeat)."""
        if beat:  # no incident: recorded on its own, before the rest of its group (if any)
            with self.db.session() as session:
                heartbeat.record(session, self.settings.config.heartbeat, now=self.clock())
        return None if message is None else receive(self.db, self.settings.config, message, now=self.clock(),
                                                     repeats=self._repeats)


class _ParseMemo:
    """The last few thousand bodies parsed. Alertmanager re-sends every group unchanged at
    repeat_interval (twice over for an HA pair), and parsing is most of the cost of answering a
    repeat; the same bytes always parse to the same message (nothing mutates one after parsing)."""

    def __init__(self, size: int = 4096, max_body: int = 65_536) -> None:
        self._size, self._max_body = size, max_body
        self._found: OrderedDict[bytes, WebhookMessage] = OrderedDict()
        self._lock = threading.Lock()  # called from the executor's threads

    def known(self, body: bytes) -> WebhookMessage | None:
        """The message of a body parsed before, if it is still kept."""
        if len(body) > self._max_body:
            return None
        key = hashlib.blake2b(body, digest_size=16).digest()
        with self._lock:
            return self._found.get(key)

    def parse(self, body: bytes) -> WebhookMessage:
        if len(body) > self._max_body:  # rare, and not worth the memory
            return _parse(body)
        key = hashlib.blake2b(body, digest_size=16).digest()
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
                return found
        message = _parse(body)  # a _Reject is not kept: a malformed body is rare and cheap to refuse again
        with self._lock:
            self._found[key] = message
            if len(self._found) > self._size:
                self._found.popitem(last=False)
        return message


def _took(started: float, outcome: str) -> None:
    metrics.INTAKE.labels(outcome).observe(time.perf_counter() - started)


def _parse(body: bytes) -> WebhookMessage:
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise _Reject(400, "body is not valid JSON: nested too deeply; send Alertmanager's webhook payload") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise _Reject(400, f"body is not valid JSON: {str(exc)[:300]}") from exc
    try:
        return WebhookMessage.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"])[:200], "problem": err["msg"][:300]}
            for err in exc.errors()[:20]
        ]
        first = problems[0]
        raise _Reject(422, f"{first['field'] or 'body'}: {first['problem']}", problems=problems) from exc


# How far past the limit a body is read, to find its receiver and groupKey for the log.
_DRAIN_FACTOR = 4
_EDGE = 65_536  # bytes kept from each end: Alertmanager writes receiver first and groupKey last


class _Oversize:
    """The two ends of a body too big to parse, where Alertmanager puts receiver and groupKey."""

    def __init__(self, head: bytes = b"") -> None:
        self.head, self.tail, self.size = head[:_EDGE], head[-_EDGE:], len(head)

    def add(self, chunk: bytes) -> None:
        if len(self.head) < _EDGE:
            self.head += chunk[: _EDGE - len(self.head)]
        self.tail = (self.tail + chunk)[-_EDGE:]
        self.size += len(chunk)

    def field(self, name: str) -> str | None:
        """The top-level string `name` if one of the ends shows it (a nested one could match too: log only)."""
        pattern = re.compile(rb'"' + name.encode() + rb'"\s*:\s*("(?:[^"\\]|\\.){0,2048}")')
        for part in (self.tail, self.head):
            if found := pattern.search(part):
                try:
                    return str(json.loads(found.group(1)))[:2048]
                except ValueError:
                    return None
        return None
