"""PagerDuty: small typed clients over the `pagerduty` package (7.x, on httpx2).

Knows nothing of incidents of ours; it speaks PagerDuty only:

* `PagerDutyEvents` sends Events API v2 events (trigger / acknowledge / resolve), validated
  against the documented limits before anything is sent (platform.md §2.1).
* `PagerDutyRest` reads on-call users (now, or every shift in a window: `oncall_shifts`) and
  escalation policies, finds incidents by incident key, escalates them and adds notes through
  REST API v2 (§2.2).
* `verify_webhook_signature` and `WebhookEvent` check and parse inbound v3 webhooks.

Synchronous, like the library: call it through `asyncio.to_thread`. Every failure leaves this
module as `PagerDutyError`; library and httpx2 exceptions never do.

Retries are bounded (§0 #4: the library would retry a 429 forever, with sleeps doubling from
3 s). By default a call makes at most one quick retry (after `backoff` seconds) on 429, a network
error or, for the Events API only, a 5xx; what still fails comes out as
`PagerDutyError(retryable=True, retry_after=...)` for the durable outbox to reschedule. REST 5xx
are not retried inside a call (as in the library: a POST is not idempotent).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx2
import pagerduty
import pydantic
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from integrations.errors import IntegrationError

__all__ = [
    "PagerDutyEvents", "PagerDutyRest", "PagerDutyError",
    "PagerDutyEvent", "EventLink", "EventAction", "Severity", "IncidentStatus",
    "OnCallUser", "EscalationPolicy", "EscalationLevel", "EscalationTarget", "PdIncident",
    "verify_webhook_signature", "WebhookEvent", "WebhookIncident", "WebhookReference",
    "INCIDENT_EVENT_TYPES", "MAX_SUMMARY", "MAX_DEDUP_KEY", "MAX_EVENT_BYTES", "ROUTING_KEY_LENGTH",
    "ONCALL_WINDOW_MAX", "OnCallHook",
]

# Told of every call as it ends, for metrics: (method, outcome, seconds). `method` is a fixed
# name ("events.trigger", "incidents.escalate", ...), `outcome` "ok", "http_<status>",
# "unreachable" (no answer) or "invalid" (an answer that is not PagerDuty's, a bad argument).
OnCallHook = Callable[[str, str, float], None]


EventAction = Literal["trigger", "acknowledge", "resolve"]
Severity = Literal["critical", "error", "warning", "info"]
IncidentStatus = Literal["triggered", "acknowledged", "resolved"]

ROUTING_KEY_LENGTH = 32
MAX_SUMMARY = 1024
MAX_DEDUP_KEY = 255
MAX_EVENT_BYTES = 512 * 1024

# The v3 webhook event types the bot reacts to; any other type still parses.
INCIDENT_EVENT_TYPES = frozenset({"incident.triggered", "incident.acknowledged", "incident.escalated",
                                  "incident.reassigned", "incident.resolved"})

# GET /oncalls: "The search range cannot exceed 3 months" (api-schema); ask for less.
ONCALL_WINDOW_MAX = timedelta(days=90)

_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_EVENTS_RETRIED = (429, 500, 502, 503, 504)  # the library's Events client retries 5xx too
_REST_RETRIED = (429,)


# -- errors -------------------------------------------------------------------------------------

class PagerDutyError(IntegrationError):
    """A failed PagerDuty call. `status` is the HTTP status (None: no response: network, TLS,
    configuration), `message` PagerDuty's own error message when it sent one, `retryable` whether
    the same call may succeed later (429, 5xx, no response), `retry_after` seconds to wait when the
    server said so (Retry-After, else ratelimit-reset). `code` is the REST API error code (2016:
    From header missing, 2020: rate limit, ...) and `errors` PagerDuty's list of details."""

    def __init__(self, status: int | None, message: str, retryable: bool, retry_after: float | None = None,
                 *, code: int | None = None, errors: tuple[str, ...] = ()) -> None:
        super().__init__(f"PagerDuty {status}: {message}" if status else f"PagerDuty: {message}")
        self.status, self.message, self.retryable, self.retry_after = status, message, retryable, retry_after
        self.code, self.errors = code, errors

    def __repr__(self) -> str:
        return (f"PagerDutyError(status={self.status!r}, message={self.message!r}, retryable={self.retryable!r}, "
                f"retry_after={self.retry_after!r}, code={self.code!r})")


def _retry_after(headers: httpx2.Headers) -> float | None:
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return max(0.0, (when - datetime.now(UTC)).total_seconds())
    reset = headers.get("ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset))
        except ValueError:
            return None
    return None


def _from_response(response: httpx2.Response, fallback: str) -> PagerDutyError:
    """REST errors are {"error": {"message", "code", "errors"}}; Events API errors are
    {"status", "message", "errors"}; anything else is reported as (truncated) text."""
    status = response.status_code
    message, code, errors = "", None, tuple[str, ...]()
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        inner: dict[str, Any] = error if isinstance(error, dict) else body
        message = str(inner.get("message") or "")
        code = inner.get("code") if isinstance(inner.get("code"), int) else None
        if isinstance(inner.get("errors"), list):
            errors = tuple(str(e) for e in inner["errors"])
        if not message and isinstance(error, str):
            message = error
    if not message:
        text = (response.text or "").strip()
        message = text[:300] if text else (response.reason_phrase or fallback)
    full = f"{message}: {'; '.join(errors)}" if errors else message
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    return PagerDutyError(status, full, retryable, _retry_after(response.headers) if retryable else None,
                          code=code, errors=errors)


@contextmanager
def _boundary(operation: str) -> Iterator[None]:
    """Converts whatever the library (or httpx2, or our response models) raises."""
    try:
        yield
    except PagerDutyError:
        raise
    except pagerduty.HttpError as exc:
        response = exc.response
        if response is None or not response.status_code:
            raise PagerDutyError(None, f"{operation}: {exc}", True) from exc
        if response.is_success or 300 <= response.status_code < 400:
            # a 2xx without the expected body, or a redirect: the server is not PagerDuty as we know it
            raise PagerDutyError(response.status_code, f"{operation}: unexpected response: {exc}", False) from exc
        raise _from_response(response, operation) from exc
    except pagerduty.UrlError as exc:
        raise PagerDutyError(None, f"{operation}: {exc}", False) from exc
    except pagerduty.Error as exc:  # no response: connection refused/reset, TLS, timeouts (after retries)
        cause = exc.__cause__
        detail = f"{exc.msg} ({cause.__class__.__name__}: {cause})" if cause else str(exc)
        raise PagerDutyError(None, f"{operation}: {detail}", True) from exc
    except httpx2.TransportError as exc:
        raise PagerDutyError(None, f"{operation}: {exc.__class__.__name__}: {exc}", True) from exc
    except httpx2.HTTPError as exc:
        raise PagerDutyError(None, f"{operation}: {exc.__class__.__name__}: {exc}", False) from exc
    except (pydantic.ValidationError, KeyError) as exc:  # a 2xx body without the fields PagerDuty documents
        raise PagerDutyError(None, f"{operation}: unexpected response shape: {exc!r}", False) from exc


@contextmanager
def _timed(on_call: OnCallHook | None, method: str, operation: str) -> Iterator[None]:
    """One call to PagerDuty through `_boundary`, its outcome and duration told to `on_call`."""
    started, outcome = time.perf_counter(), "invalid"  # what _boundary lets through is a bug of ours
    try:
        with _boundary(operation):
            yield
        outcome = "ok"
    except PagerDutyError as exc:
        outcome = f"http_{exc.status}" if exc.status else "unreachable" if exc.retryable else "invalid"
        raise
    finally:
        if on_call is not None:
            on_call(method, outcome, time.perf_counter() - started)


# -- client plumbing ----------------------------------------------------------------------------

def _verify(verify: ssl.SSLContext | str | bool) -> ssl.SSLContext | bool:
    """httpx2 deprecates verify=<path>; build the context ourselves (file or directory of CAs)."""
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    return verify


def _bound(client: pagerduty.ApiClient, *, statuses: tuple[int, ...], retries: int, backoff: float,
           timeout: float) -> None:
    """At most `retries` retries in all (HTTP statuses and network errors), the first after
    `backoff` seconds. The library treats retry[status] == 0 as "default", which for 429 means
    forever, so every listed status gets at least 1 and max_http_attempts caps the total
    (max_http_attempts = -1 stops at the first failure)."""
    if retries < 0:
        raise ValueError("retries must be >= 0")
    client.retry = {status: max(retries, 1) for status in statuses}
    client.max_http_attempts = retries - 1
    client.max_network_attempts = retries
    client.sleep_timer = backoff / client.sleep_timer_base
    client.timeout = timeout  # type: ignore[assignment]  # the library annotates it as int (60)


# -- Events API v2 ------------------------------------------------------------------------------

class EventLink(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    href: str = Field(min_length=1)
    text: str | None = None


class PagerDutyEvent(BaseModel):
    """One Events API v2 event. Validated on construction against PagerDuty's rules: a 32-char
    routing key, dedup_key ≤ 255 chars (required for acknowledge/resolve), and on trigger a
    summary (≤ 1024 chars), a source and a severity; the whole event ≤ 512 KB. `class_` is sent
    as payload.class. On acknowledge/resolve the payload fields are not sent."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    routing_key: str = Field(min_length=ROUTING_KEY_LENGTH, max_length=ROUTING_KEY_LENGTH)
    action: EventAction = "trigger"
    dedup_key: str | None = Field(default=None, min_length=1, max_length=MAX_DEDUP_KEY)
    summary: str | None = Field(default=None, max_length=MAX_SUMMARY)
    source: str | None = None
    severity: Severity | None = None
    timestamp: datetime | None = None
    component: str | None = None
    group: str | None = None
    class_: str | None = Field(default=None, alias="class")
    custom_details: dict[str, Any] | None = None
    links: tuple[EventLink, ...] = ()

    @model_validator(mode="after")
    def _rules(self) -> PagerDutyEvent:
        if self.action == "trigger":
            missing = [name for name in ("summary", "source", "severity") if not getattr(self, name)]
            if missing:
                raise ValueError(f"a trigger event needs {', '.join(missing)}")
        elif not self.dedup_key:
            raise ValueError(f"an {self.action} event needs a dedup_key")
        size = len(json.dumps(self.wire_body(), separators=(",", ":")).encode())
        if size > MAX_EVENT_BYTES:
            raise ValueError(f"the event is {size} bytes; PagerDuty accepts at most {MAX_EVENT_BYTES}")
        return self

    def payload(self) -> dict[str, Any] | None:
        """The `payload` object as sent (trigger only)."""
        if self.action != "trigger":
            return None
        payload: dict[str, Any] = {"summary": self.summary, "source": self.source, "severity": self.severity}
        if self.timestamp is not None:
            stamp = self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=UTC)
            payload["timestamp"] = stamp.isoformat()
        for key, value in (("component", self.component), ("group", self.group), ("class", self.class_)):
            if value is not None:
                payload[key] = value
        if self.custom_details is not None:
            payload["custom_details"] = self.custom_details
        return payload

    def wire_body(self) -> dict[str, Any]:
        """The JSON body PagerDuty receives at POST /v2/enqueue."""
        body: dict[str, Any] = {"routing_key": self.routing_key, "event_action": self.action}
        if self.dedup_key is not None:
            body["dedup_key"] = self.dedup_key
        if self.action == "trigger":
            body["payload"] = self.payload()
            if self.links:
                body["links"] = [link.model_dump(exclude_none=True) for link in self.links]
        return body


class PagerDutyEvents:
    """Events API v2 on `pagerduty.EventsApiV2Client` (one client, one connection pool, per
    routing key: the library injects the key it was built with into every body). Thread-safe."""

    def __init__(self, *, base_url: str = "https://events.pagerduty.com", verify: ssl.SSLContext | str | bool = True,
                 timeout: float = 10.0, retries: int = 1, backoff: float = 0.5,
                 on_call: OnCallHook | None = None) -> None:
        if not base_url.startswith("https://"):
            raise PagerDutyError(None, f"base URL must use https:// (got {base_url!r})", False)
        self.base_url = base_url.rstrip("/")
        self._verify, self._timeout, self._retries, self._backoff = _verify(verify), timeout, retries, backoff
        self._clients: dict[str, pagerduty.EventsApiV2Client] = {}
        self._lock = threading.Lock()
        self._on_call = on_call

    def _client(self, routing_key: str) -> pagerduty.EventsApiV2Client:
        with self._lock:
            client = self._clients.get(routing_key)
            if client is None:
                with _boundary("configuring the Events API client"):
                    client = pagerduty.EventsApiV2Client(routing_key, base_url=self.base_url, verify=self._verify)
                _bound(client, statuses=_EVENTS_RETRIED, retries=self._retries, backoff=self._backoff,
                       timeout=self._timeout)
                self._clients[routing_key] = client
            return client

    def send(self, event: PagerDutyEvent) -> str:
        """Send the event; returns the dedup_key (PagerDuty's own when a trigger had none)."""
        body = event.wire_body()
        properties = {key: value for key, value in body.items()
                      if key not in ("routing_key", "event_action", "dedup_key")}
        with _timed(self._on_call, f"events.{event.action}", f"Events API {event.action}"):
            return self._client(event.routing_key).send_event(event.action, dedup_key=event.dedup_key, **properties)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def __enter__(self) -> PagerDutyEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- REST API v2 --------------------------------------------------------------------------------

class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class OnCallUser(_Model):
    """A user on call for an escalation policy at one level, from `start` to `end`. `schedule_id`
    is None when the policy targets the user directly (then `start`/`end` are None too: always
    on call)."""

    id: str
    name: str
    email: str
    escalation_level: int
    schedule_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    escalation_policy_id: str | None = None


def _oncall_user(oncall: dict[str, Any]) -> OnCallUser:
    """One entry of GET /oncalls (include[]=users: the user object, else its reference)."""
    user = oncall.get("user") or {}
    return OnCallUser(id=user["id"], name=user.get("name") or user.get("summary") or user["id"],
                      email=user.get("email") or "", escalation_level=int(oncall["escalation_level"]),
                      schedule_id=_ref_id(oncall.get("schedule")), start=oncall.get("start"), end=oncall.get("end"),
                      escalation_policy_id=_ref_id(oncall.get("escalation_policy")))


def _instant(at: datetime) -> str:
    """A time as GET /oncalls takes it: ISO 8601 in UTC (`Z`), to the second."""
    if at.tzinfo is None:
        raise ValueError("an on-call window needs aware datetimes")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EscalationTarget(_Model):
    id: str
    type: str  # "user" or "schedule" ("_reference" dropped)
    name: str | None = None


class EscalationLevel(_Model):
    level: int  # 1-based, as PUT /incidents/{id} escalation_level counts
    delay_minutes: int
    targets: tuple[EscalationTarget, ...] = ()


class EscalationPolicy(_Model):
    id: str
    name: str
    num_loops: int = 0
    html_url: str | None = None
    levels: tuple[EscalationLevel, ...] = ()


class PdIncident(_Model):
    id: str
    number: int
    title: str
    status: IncidentStatus
    urgency: str | None = None
    incident_key: str | None = None
    html_url: str | None = None
    service_id: str | None = None
    escalation_policy_id: str | None = None
    assignee_ids: tuple[str, ...] = ()
    created_at: datetime | None = None


def _ref_id(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) else None


def _incident(raw: dict[str, Any]) -> PdIncident:
    return PdIncident(
        id=raw["id"], number=raw.get("incident_number") or raw.get("number") or 0,
        title=raw.get("title") or raw.get("summary") or "", status=raw["status"], urgency=raw.get("urgency"),
        incident_key=raw.get("incident_key"), html_url=raw.get("html_url"), service_id=_ref_id(raw.get("service")),
        escalation_policy_id=_ref_id(raw.get("escalation_policy")),
        assignee_ids=tuple(a["assignee"]["id"] for a in raw.get("assignments") or [] if _ref_id(a.get("assignee"))),
        created_at=raw.get("created_at"))


def _path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


class PagerDutyRest:
    """REST API v2 on `pagerduty.RestApiV2Client` with an API token (`Token token=...`).
    `default_from` is the From header incident writes need with an account-level token."""

    def __init__(self, api_token: str, *, default_from: str | None = None, base_url: str = "https://api.pagerduty.com",
                 verify: ssl.SSLContext | str | bool = True, timeout: float = 10.0, retries: int = 1,
                 backoff: float = 0.5, on_call: OnCallHook | None = None) -> None:
        self._on_call = on_call
        with _boundary("configuring the REST API client"):
            self._client = pagerduty.RestApiV2Client(api_token, default_from=default_from,
                                                     base_url=base_url.rstrip("/"), verify=_verify(verify))
        _bound(self._client, statuses=_REST_RETRIED, retries=retries, backoff=backoff, timeout=timeout)

    def oncall_users(self, escalation_policy_id: str, *, escalation_level: int | None = None) -> list[OnCallUser]:
        """Who is on call now for the policy (all pages of GET /oncalls, earliest=true, users
        included), ordered by escalation level; one entry per (level, user)."""
        params: dict[str, Any] = {"escalation_policy_ids": [escalation_policy_id], "earliest": True,
                                  "include": ["users"]}
        seen: set[tuple[int, str]] = set()
        users: list[OnCallUser] = []
        with _timed(self._on_call, "oncalls.list", f"GET /oncalls for {escalation_policy_id}"):
            for oncall in self._client.iter_all("/oncalls", params=params):
                found = _oncall_user(oncall)
                if escalation_level is not None and found.escalation_level != escalation_level:
                    continue
                if (found.escalation_level, found.id) in seen:
                    continue
                seen.add((found.escalation_level, found.id))
                users.append(found)
        users.sort(key=lambda u: u.escalation_level)
        return users

    def oncall_shifts(self, escalation_policy_ids: Sequence[str], *, since: datetime,
                      until: datetime) -> list[OnCallUser]:
        """Every level of the policies at once, from `since` to `until`: one GET /oncalls (all its
        pages) for the on-call periods overlapping that window, with earliest=true (the earliest
        period per policy, level and user: whoever is on call at `since`, and each other person's
        next shift), users included. Ordered by policy, level, then start (always on call first).
        The window may not exceed ONCALL_WINDOW_MAX, nor end before it starts."""
        if not escalation_policy_ids:
            return []
        if until < since or until - since > ONCALL_WINDOW_MAX:
            raise PagerDutyError(None, f"an on-call window must run forward and last at most {ONCALL_WINDOW_MAX.days} "
                                 "days", False)
        params: dict[str, Any] = {"escalation_policy_ids": list(escalation_policy_ids), "since": _instant(since),
                                  "until": _instant(until), "earliest": True, "include": ["users"]}
        with _timed(self._on_call, "oncalls.list", f"GET /oncalls for {', '.join(escalation_policy_ids)}"):
            shifts = [_oncall_user(oncall) for oncall in self._client.iter_all("/oncalls", params=params)]
        epoch = datetime.min.replace(tzinfo=UTC)
        shifts.sort(key=lambda u: (u.escalation_policy_id or "", u.escalation_level, u.start or epoch))
        return shifts

    def escalation_policy(self, policy_id: str) -> EscalationPolicy:
        with _timed(self._on_call, "escalation_policies.get", f"GET /escalation_policies/{policy_id}"):
            raw = self._client.rget(_path("escalation_policies", policy_id))
            levels = tuple(
                EscalationLevel(level=index, delay_minutes=int(rule.get("escalation_delay_in_minutes") or 0),
                                targets=tuple(EscalationTarget(id=t["id"],
                                                               type=str(t.get("type", "")).removesuffix("_reference"),
                                                               name=t.get("summary") or t.get("name"))
                                              for t in rule.get("targets") or []))
                for index, rule in enumerate(raw.get("escalation_rules") or [], start=1))
            return EscalationPolicy(id=raw["id"], name=raw.get("name") or raw.get("summary") or raw["id"],
                                    num_loops=int(raw.get("num_loops") or 0), html_url=raw.get("html_url"),
                                    levels=levels)

    def find_incident(self, incident_key: str, service_id: str | None = None) -> PdIncident | None:
        """The incident with this incident key (an Events API dedup_key): an open one when there
        is one, else the most recent; None when there is none."""
        params: dict[str, Any] = {"incident_key": incident_key, "date_range": "all", "limit": 100}
        if service_id is not None:
            params["service_ids"] = [service_id]
        with _timed(self._on_call, "incidents.list", f"GET /incidents?incident_key={incident_key}"):
            found = [_incident(raw) for raw in self._client.rget("/incidents", params=params)]
        found = [incident for incident in found if incident.incident_key in (None, incident_key)]
        if not found:
            return None
        return max(found, key=lambda i: (i.status != "resolved", i.number))

    def escalate(self, incident_id: str, level: int) -> PdIncident:
        """PUT /incidents/{id} with escalation_level (1-based); needs From."""
        if level < 1:
            raise PagerDutyError(None, f"escalation level must be >= 1 (got {level})", False)
        with _timed(self._on_call, "incidents.escalate", f"escalating incident {incident_id} to level {level}"):
            raw = self._client.rput(_path("incidents", incident_id),
                                    json={"type": "incident_reference", "escalation_level": level})
            return _incident(raw)

    def add_note(self, incident_id: str, content: str) -> None:
        """POST /incidents/{id}/notes; needs From."""
        if not content.strip():
            raise PagerDutyError(None, "a note needs content", False)
        with _timed(self._on_call, "incidents.notes.create", f"adding a note to incident {incident_id}"):
            self._client.rpost(_path("incidents", incident_id, "notes"), json={"content": content})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PagerDutyRest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- webhooks v3 (inbound) ----------------------------------------------------------------------

def verify_webhook_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when `X-PagerDuty-Signature` holds a v1 signature (hex HMAC-SHA256 of the raw body
    under `secret`). The header may carry several comma-separated signatures while a secret is
    rotated; one match is enough. Compared in constant time; other versions are ignored."""
    if not secret or not header:
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    matched = False
    for item in header.split(","):
        version, _, signature = item.strip().partition("=")
        if version == "v1" and signature:  # as bytes: a non-ASCII str would make compare_digest raise
            matched |= hmac.compare_digest(expected, signature.strip().lower().encode("utf-8", "replace"))
    return matched


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _storable_time(moment: datetime) -> datetime:
    """`moment`, unless it has no UTC equivalent (year 1 east of UTC, 9999 west of it): the nearest one."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC) if moment.year == 1 else datetime.max.replace(tzinfo=UTC)
    return moment


class WebhookReference(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: str
    type: str | None = None
    summary: str | None = None
    self_: str | None = Field(default=None, alias="self")
    html_url: str | None = None


class WebhookIncident(BaseModel):
    """`event.data` when its type is "incident"."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    id: str = Field(max_length=64)  # PagerDuty's ids are a few characters; the bot keeps one in 64
    type: str = "incident"
    self_: str | None = Field(default=None, alias="self")
    html_url: str | None = None
    number: int | None = None
    status: str | None = None
    incident_key: str | None = None
    created_at: datetime | None = None
    title: str | None = None
    urgency: str | None = None
    service: WebhookReference | None = None
    assignees: tuple[WebhookReference, ...] = ()
    escalation_policy: WebhookReference | None = None
    teams: tuple[WebhookReference, ...] = ()
    priority: WebhookReference | None = None
    resolve_reason: Any = None


class WebhookEvent(BaseModel):
    """A v3 webhook: parse the whole body, `WebhookEvent.model_validate_json(raw)`; the
    {"event": {...}} envelope is unwrapped. `incident` is set when `data.type` is "incident";
    `incident_id` also covers data that refers to an incident (notes, responders, status
    updates). Unknown event types parse too (`is_incident_event` is then False)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    event_type: str
    resource_type: str
    occurred_at: Annotated[AwareDatetime, AfterValidator(_storable_time)]  # compared with ours: an offset is required
    agent: WebhookReference | None = None
    client: dict[str, Any] | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    incident: WebhookIncident | None = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, value: Any) -> Any:
        value = _without_nul(value)  # names and ids are stored, and PostgreSQL refuses NUL in text
        if isinstance(value, dict) and isinstance(value.get("event"), dict) and "event_type" not in value:
            value = value["event"]
        if isinstance(value, dict):
            data = value.get("data")
            if isinstance(data, dict) and data.get("type") == "incident" and "incident" not in value:
                value = {**value, "incident": data}
        return value

    @property
    def is_incident_event(self) -> bool:
        return self.event_type in INCIDENT_EVENT_TYPES

    @property
    def incident_id(self) -> str | None:
        if self.incident is not None:
            return self.incident.id
        return _ref_id(self.data.get("incident"))
