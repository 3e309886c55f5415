"""A fake PagerDuty: Events API v2 and a REST API v2 subset over real HTTPS on 127.0.0.1.

The `pagerduty` client only accepts https:// base URLs (platform.md §0 #2), so the fake serves TLS
with a throw-away CA made by trustme; point the client at `fake.base_url` with
`verify=fake.ca_file` (or `fake.ssl_context()`). One server answers both APIs (their paths do not
collide). Every request is recorded in `requests`; every accepted event in `events`.

Events API v2 (§2.1): POST /v2/enqueue with PagerDuty's validation (32-char routing key, the
three actions, summary/source/severity on trigger, severity values, 1024/255 limits, 512 KB) and
its 400 body; 202 with the dedup_key (a generated one for a trigger without). Alerts are keyed by
(routing_key, dedup_key): trigger opens an alert and an incident (incident_key = dedup_key) on the
routing key's service, a trigger on an open alert is deduplicated, acknowledge/resolve move it
on; ack/resolve for an unknown or resolved alert (or through another routing key) are dropped
but still answered 202, as PagerDuty does.

REST API v2 (§2.2), `Authorization: Token token=<api_token>` or 401: GET /oncalls (filters
escalation_policy_ids[], user_ids[], schedule_ids[]; since/until, both defaulting to the fake's
clock: the on-call periods overlapping that window, 400 when until is before since or the range
exceeds 3 months; earliest: the earliest period per policy, level and user; include[]=users;
limit/offset/total/more, limit capped at 100, offset+limit ≤ 10000; entries ordered by policy,
level and start, a period keeping its own start and end), GET /escalation_policies/{id},
GET /users/{id}, GET /incidents (incident_key, service_ids[], statuses[]), GET /incidents/{id},
PUT /incidents/{id} (From required → 400 code 2016; status, escalation_level),
POST and GET /incidents/{id}/notes (From required on POST). Unknown paths: 404 code 2100.

Bodies and error texts marked [I] in platform.md, and the ones below not quoted there (the
exact wording of most Events API validation errors, the 5xx bodies, the Events API 429 body,
the escalation-level and unknown-From errors) are our best rendering of PagerDuty's shapes, not
captured traffic.

Failure injection: `fail_next(path_prefix, status, times, retry_after)` answers the next
`times` requests whose path starts with the prefix with that status (429: PagerDuty's rate-limit
body, Retry-After and ratelimit-reset when `retry_after` is given; 5xx: an error body), counting
the client's own retries. `set_down(True)` answers every request 503; `set_down(True,
reset=True)` reads each request and then aborts the TCP connection (SO_LINGER 0: an RST, no
response), which the client sees as a network error.

Webhooks out: `send_webhook(url, secret, event_type, incident)` POSTs a v3 webhook
({"event": {...}}) signed with `X-PagerDuty-Signature: v1=<hex hmac-sha256>` (several secrets:
several comma-separated signatures, as during a rotation) and returns the HTTP status.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import trustme

__all__ = ["FakePagerDuty", "RecordedRequest", "AcceptedEvent", "Alert", "SentWebhook"]

Obj = dict[str, Any]

ROUTING_KEY_LENGTH = 32
SEVERITIES = ("critical", "error", "warning", "info")
ACTIONS = ("trigger", "acknowledge", "resolve")
MAX_EVENT_BYTES = 512 * 1024
PAGE_LIMIT_MAX = 100
ITERATION_LIMIT = 10_000

_PLURAL = {"user": "users", "schedule": "schedules", "escalation_policy": "escalation_policies",
           "service": "services", "incident": "incidents", "team": "teams"}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any  # parsed JSON when the body was JSON, text otherwise, None when empty
    headers: dict[str, str] = field(repr=False)  # lower-case names
    status: int = 0

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class AcceptedEvent:
    """An Events API v2 event answered 202. `outcome`: triggered (new alert and incident),
    deduplicated (trigger on an open alert), acknowledged, resolved, or dropped."""

    routing_key: str
    action: str
    dedup_key: str
    body: Obj
    outcome: str

    @property
    def payload(self) -> Obj:
        return self.body.get("payload") or {}


@dataclass
class Alert:
    routing_key: str
    dedup_key: str
    status: str  # triggered | acknowledged | resolved
    incident_id: str
    count: int = 1


@dataclass
class SentWebhook:
    url: str
    event_type: str
    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class _Failure:
    prefix: str
    status: int
    remaining: int
    retry_after: float | None


class _RestError(Exception):
    def __init__(self, status: int, message: str, code: int | None = None, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.errors = status, message, code, list(errors)

    def body(self) -> Obj:
        error: Obj = {"message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.errors:
            error["errors"] = self.errors
        return {"error": error}


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakePagerDuty

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ssl.SSLError)):  # clients closing or resetting connections
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        raw = self._body()
        headers = {key.lower(): value for key, value in self.headers.items()}
        fake = self.server.fake
        if fake._down == "reset":
            fake._record(RecordedRequest(self.command, url.path, query, _decode(raw), headers, 0))
            # abort: SO_LINGER 0 makes the close send an RST instead of a response
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        try:
            status, extra, payload = fake._serve(self.command, url.path, query, headers, raw)
        except Exception as exc:  # a bug in the fake: answer 500, keep the cause visible
            status, extra, payload = 500, {}, {"error": {"message": f"fake PagerDuty error: {exc!r}"}}
        body = json.dumps(payload).encode()
        fake._record(RecordedRequest(self.command, url.path, query, _decode(raw), headers, status))
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _time(query: dict[str, list[str]], key: str, default: datetime) -> datetime:
    values = query.get(key)
    if not values or values[0] == "":
        return default
    try:
        at = datetime.fromisoformat(values[0])
    except ValueError:
        raise _RestError(400, "Invalid Input Provided", 2001, [f"{key} must be an ISO 8601 date-time."]) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


ONCALL_RANGE_MAX = timedelta(days=90)  # "The search range cannot exceed 3 months"


def _flag(query: dict[str, list[str]], key: str) -> bool:
    return (query.get(key) or [""])[0].lower() == "true"


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    values = query.get(key)
    if not values or values[0] == "":
        return default
    try:
        return int(values[0])
    except ValueError:
        raise _RestError(400, "Invalid Input Provided", 2001, [f"{key} must be an integer."]) from None


class FakePagerDuty:
    """Seed with add_user / add_escalation_policy / add_service / set_oncall, start it (or use
    it as a context manager), point the clients at `base_url` with `verify=ca_file`."""

    def __init__(self, api_token: str = "fake-pagerduty-api-token", *, subdomain: str = "fake") -> None:
        self.api_token = api_token
        self.subdomain = subdomain
        self.requests: list[RecordedRequest] = []
        self.events: list[AcceptedEvent] = []
        self.webhooks: list[SentWebhook] = []
        self.alerts: dict[tuple[str, str], Alert] = {}
        self.lock = threading.RLock()
        self.clock: Callable[[], datetime] = _now  # when webhooks say their events occurred
        self._users: dict[str, Obj] = {}
        self._policies: dict[str, Obj] = {}
        self._oncall: dict[tuple[str, int], list[Obj]] = {}
        self._services: dict[str, Obj] = {}
        self._service_by_key: dict[str, str] = {}
        self._incidents: dict[str, Obj] = {}
        self._notes: dict[str, list[Obj]] = {}
        self._failures: list[_Failure] = []
        self._down: str | None = None
        self._numbers = 0
        self._ids = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: Path | None = None
        self.ca_pem: bytes = b""

    # -- lifecycle --

    def start(self) -> FakePagerDuty:
        authority = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self.ca_pem = authority.cert_pem.bytes()
        self._tmp = Path(tempfile.mkdtemp(prefix="fake-pagerduty-"))
        (self._tmp / "ca.pem").write_bytes(self.ca_pem)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        # the handshake happens in the request thread, so one slow client blocks no other
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-pagerduty", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> FakePagerDuty:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    @property
    def ca_file(self) -> str:
        assert self._tmp is not None, "start() the fake first"
        return str(self._tmp / "ca.pem")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the fake's CA (for verify=)."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    # -- seeding --

    def _new_id(self, prefix: str) -> str:
        with self.lock:
            self._ids += 1
            return f"{prefix}{self._ids:06d}"

    def add_user(self, id: str, name: str, email: str, *, time_zone: str = "Etc/UTC", role: str = "user") -> Obj:  # noqa: A002
        with self.lock:
            self._users[id] = {"id": id, "name": name, "email": email, "time_zone": time_zone, "role": role}
            return self._user(id)

    def add_escalation_policy(self, id: str, levels: Sequence[Sequence[str | Obj]],  # noqa: A002
                              delays: Sequence[int] | None = None, *, name: str | None = None,
                              num_loops: int = 0) -> Obj:
        """`levels[i]` are the targets of level i+1: user ids, or {"type": "schedule_reference",
        "id": ...} for a schedule (nobody is on call through a schedule until set_oncall says so).
        `delays[i]`: minutes before escalating past level i+1 (default 30)."""
        delays = list(delays) if delays is not None else [30] * len(levels)
        if len(delays) != len(levels):
            raise ValueError("one delay per level")
        rules = []
        with self.lock:
            for index, targets in enumerate(levels, start=1):
                parsed: list[Obj] = []
                for target in targets:
                    if isinstance(target, str):
                        if target not in self._users:
                            raise KeyError(f"unknown user {target}: add_user() first")
                        parsed.append({"type": "user_reference", "id": target})
                    else:
                        parsed.append({"type": target["type"], "id": target["id"],
                                       "summary": str(target.get("summary") or target["id"])})
                rules.append({"id": f"R{id}{index}", "escalation_delay_in_minutes": int(delays[index - 1]),
                              "targets": parsed})
            self._policies[id] = {"id": id, "name": name or id, "num_loops": num_loops, "rules": rules}
            for key in [key for key in self._oncall if key[0] == id]:
                del self._oncall[key]
            return self._policy(id, [])

    def set_oncall(self, escalation_policy_id: str, level: int, user_ids: Iterable[str], *,
                   schedule_id: str | None = None, start: datetime | None = None, end: datetime | None = None) -> None:
        """Who is on call at `level` of the policy from now on (replacing what its targets
        say), e.g. after a schedule rotation; `schedule_id` marks them as on call through it."""
        with self.lock:
            policy = self._policies[escalation_policy_id]
            if not 1 <= level <= len(policy["rules"]):
                raise ValueError(f"{escalation_policy_id} has levels 1..{len(policy['rules'])}")
            entries = []
            for user_id in user_ids:
                if user_id not in self._users:
                    raise KeyError(f"unknown user {user_id}: add_user() first")
                entries.append({"user": user_id, "schedule": schedule_id, "start": start, "end": end})
            self._oncall[(escalation_policy_id, level)] = entries

    def add_oncall_shift(self, escalation_policy_id: str, level: int, user_id: str, *, start: datetime,
                         end: datetime, schedule_id: str | None = None) -> None:
        """One more on-call period at `level` of the policy (through `schedule_id`), e.g. the next
        person of a rotation, beside whoever is on call there already."""
        with self.lock:
            policy = self._policies[escalation_policy_id]
            if not 1 <= level <= len(policy["rules"]):
                raise ValueError(f"{escalation_policy_id} has levels 1..{len(policy['rules'])}")
            if user_id not in self._users:
                raise KeyError(f"unknown user {user_id}: add_user() first")
            if end <= start:
                raise ValueError("a shift ends after it starts")
            entries = list(self._oncall_at(escalation_policy_id, level))
            entries.append({"user": user_id, "schedule": schedule_id, "start": start, "end": end})
            self._oncall[(escalation_policy_id, level)] = entries

    def add_service(self, id: str, routing_key: str, escalation_policy_id: str | None = None, *,  # noqa: A002
                    name: str | None = None) -> None:
        """The service whose Events API integration has this routing key."""
        with self.lock:
            self._services[id] = {"id": id, "name": name or id, "escalation_policy": escalation_policy_id}
            self._service_by_key[routing_key] = id

    def create_incident(self, service_id: str, title: str, *, incident_key: str | None = None) -> str:
        """An incident as if created in the web UI (triggered, assigned to level 1)."""
        with self.lock:
            return self._open_incident(service_id, title, incident_key or uuid.uuid4().hex)

    # -- failure injection --

    def fail_next(self, path_prefix: str, status: int, times: int = 1, retry_after: float | None = None) -> None:
        with self.lock:
            self._failures.append(_Failure(path_prefix, status, times, retry_after))

    def set_down(self, down: bool = True, *, reset: bool = False) -> None:
        """Down: every request is answered 503, or with `reset=True` the connection is reset
        after the request is read (no response at all). `set_down(False)` brings it back."""
        with self.lock:
            self._down = ("reset" if reset else "503") if down else None

    # -- inspection --

    def incident(self, incident_id: str) -> Obj:
        """The incident as GET /incidents/{id} returns it."""
        with self.lock:
            return self._incident_json(self._incidents[incident_id])

    def incidents(self) -> list[Obj]:
        with self.lock:
            return [self._incident_json(i) for i in self._incidents.values()]

    def escalation_level(self, incident_id: str) -> int:
        """The level the incident is at (PagerDuty's incident JSON does not show it)."""
        with self.lock:
            return int(self._incidents[incident_id]["level"])

    def notes(self, incident_id: str) -> list[Obj]:
        with self.lock:
            return copy.deepcopy(self._notes.get(incident_id, []))

    def alert(self, dedup_key: str, routing_key: str | None = None) -> Alert | None:
        with self.lock:
            for (key_routing, key), alert in self.alerts.items():
                if key == dedup_key and routing_key in (None, key_routing):
                    return copy.copy(alert)
        return None

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix) and method in (None, r.method)]

    def _record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    # -- representations --

    def _ref(self, kind: str, id: str, summary: str) -> Obj:  # noqa: A002
        plural = _PLURAL[kind]
        return {"id": id, "type": f"{kind}_reference", "summary": summary, "self": f"{self.base_url}/{plural}/{id}",
                "html_url": f"https://{self.subdomain}.pagerduty.com/{plural}/{id}"}

    def _user_ref(self, user_id: str) -> Obj:
        return self._ref("user", user_id, self._users[user_id]["name"])

    def _user(self, user_id: str) -> Obj:
        user = self._users[user_id]
        return {"id": user_id, "type": "user", "summary": user["name"], "name": user["name"], "email": user["email"],
                "time_zone": user["time_zone"], "color": "purple", "role": user["role"], "avatar_url": None,
                "description": None, "invitation_sent": False, "job_title": None, "contact_methods": [],
                "notification_rules": [], "teams": [], "self": f"{self.base_url}/users/{user_id}",
                "html_url": f"https://{self.subdomain}.pagerduty.com/users/{user_id}"}

    def _target(self, target: Obj) -> Obj:
        if target["type"] == "user_reference":
            return self._user_ref(target["id"])
        return self._ref(target["type"].removesuffix("_reference"), target["id"],
                         str(target.get("summary") or target["id"]))

    def _policy(self, policy_id: str, include: list[str]) -> Obj:
        policy = self._policies[policy_id]
        services = [self._ref("service", sid, s["name"]) for sid, s in self._services.items()
                    if s["escalation_policy"] == policy_id]
        return {"id": policy_id, "type": "escalation_policy", "summary": policy["name"], "name": policy["name"],
                "description": "", "num_loops": policy["num_loops"], "on_call_handoff_notifications": "if_has_services",
                "escalation_rules": [{"id": rule["id"],
                                      "escalation_delay_in_minutes": rule["escalation_delay_in_minutes"],
                                      "targets": [self._target(t) for t in rule["targets"]]}
                                     for rule in policy["rules"]],
                "services": services, "teams": [], "self": f"{self.base_url}/escalation_policies/{policy_id}",
                "html_url": f"https://{self.subdomain}.pagerduty.com/escalation_policies/{policy_id}"}

    def _oncall_at(self, policy_id: str, level: int) -> list[Obj]:
        if (policy_id, level) in self._oncall:
            return self._oncall[(policy_id, level)]
        rule = self._policies[policy_id]["rules"][level - 1]
        return [{"user": t["id"], "schedule": None, "start": None, "end": None}
                for t in rule["targets"] if t["type"] == "user_reference"]

    def _incident_json(self, incident: Obj) -> Obj:
        service = self._services[incident["service_id"]]
        policy_id = service["escalation_policy"]
        number = incident["number"]
        resolved = incident["status"] == "resolved"
        return {
            "id": incident["id"], "type": "incident", "summary": f"[#{number}] {incident['title']}",
            "self": f"{self.base_url}/incidents/{incident['id']}",
            "html_url": f"https://{self.subdomain}.pagerduty.com/incidents/{incident['id']}",
            "incident_number": number, "title": incident["title"], "description": incident["title"],
            "created_at": _iso(incident["created_at"]), "updated_at": _iso(incident["updated_at"]),
            "last_status_change_at": _iso(incident["updated_at"]), "status": incident["status"],
            "incident_key": incident["incident_key"], "urgency": "high",
            "service": self._ref("service", service["id"], service["name"]),
            "assignments": [] if resolved else [
                {"at": _iso(incident["updated_at"]), "assignee": self._user_ref(uid)} for uid in incident["assignees"]],
            "assigned_via": "escalation_policy",
            "acknowledgements": [{"at": _iso(incident["updated_at"]), "acknowledger": self._user_ref(uid)}
                                 for uid in incident["acknowledgers"]] if incident["status"] == "acknowledged" else [],
            "escalation_policy": (self._ref("escalation_policy", policy_id, self._policies[policy_id]["name"])
                                  if policy_id else None),
            "teams": [], "pending_actions": [], "priority": None, "resolved_at": _iso(incident["resolved_at"]),
            "alert_counts": {"all": 1, "triggered": 0 if resolved else 1, "resolved": 1 if resolved else 0},
            "is_mergeable": True, "incident_responders": [], "responder_requests": [],
            "conference_bridge": None,
        }

    def _webhook_incident(self, incident_id: str) -> Obj:
        full = self._incident_json(self._incidents[incident_id])
        return {"id": full["id"], "type": "incident", "self": full["self"], "html_url": full["html_url"],
                "number": full["incident_number"], "status": full["status"], "incident_key": full["incident_key"],
                "created_at": full["created_at"], "title": full["title"], "service": full["service"],
                "assignees": [a["assignee"] for a in full["assignments"]],
                "escalation_policy": full["escalation_policy"], "teams": [], "priority": None,
                "urgency": full["urgency"], "conference_bridge": None, "resolve_reason": None}

    # -- state changes --

    def _open_incident(self, service_id: str, title: str, incident_key: str) -> str:
        policy_id = self._services[service_id]["escalation_policy"]
        self._numbers += 1
        incident_id = f"Q{self._numbers:06d}FAKE"
        now = _now()
        assignees = [e["user"] for e in self._oncall_at(policy_id, 1)] if policy_id else []
        self._incidents[incident_id] = {"id": incident_id, "number": self._numbers, "title": title,
                                        "status": "triggered", "incident_key": incident_key, "service_id": service_id,
                                        "level": 1, "assignees": assignees, "acknowledgers": [], "created_at": now,
                                        "updated_at": now, "resolved_at": None}
        return incident_id

    def _set_status(self, incident: Obj, status: str, by: str | None = None) -> None:
        now = _now()
        incident["status"], incident["updated_at"] = status, now
        if status == "acknowledged":
            incident["acknowledgers"] = [by] if by else list(incident["assignees"][:1])
        elif status == "resolved":
            incident["resolved_at"] = now
        else:
            incident["acknowledgers"], incident["resolved_at"] = [], None
        for alert in self.alerts.values():
            if alert.incident_id == incident["id"] and alert.status != "resolved":
                alert.status = status

    # -- request handling --

    def _serve(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               raw: bytes) -> tuple[int, dict[str, str], Obj]:
        events = path.startswith("/v2/")
        with self.lock:
            if self._down == "503":
                return 503, {}, _server_error(503, events)
            for failure in self._failures:
                if failure.remaining > 0 and path.startswith(failure.prefix):
                    failure.remaining -= 1
                    return failure.status, _failure_headers(failure), _failure_body(failure.status, events)
            self._failures = [f for f in self._failures if f.remaining > 0]
            if events:
                if method == "POST" and path == "/v2/enqueue":
                    return self._enqueue(raw)
                return 404, {}, {"status": "Not Found", "message": "Not Found"}
            try:
                return self._rest(method, path, query, headers, raw)
            except _RestError as exc:
                return exc.status, {}, exc.body()

    # Events API v2

    def _enqueue(self, raw: bytes) -> tuple[int, dict[str, str], Obj]:
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            return 400, {}, {"status": "Unrecognized object", "message": "Event object format is unrecognized",
                             "errors": ["JSON parse error"]}
        errors = _event_errors(body, len(raw))
        if errors:
            return 400, {}, {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        routing_key, action = body["routing_key"], body["event_action"]
        dedup_key = body.get("dedup_key") or uuid.uuid4().hex
        alert = self.alerts.get((routing_key, dedup_key))
        is_open = alert is not None and alert.status != "resolved"
        if action == "trigger":
            if is_open:
                assert alert is not None
                alert.count += 1
                outcome = "deduplicated"
            else:
                service_id = self._service_by_key.get(routing_key)
                if service_id is None:  # an integration we were not told about: its own service, no policy
                    service_id = f"PSVC{len(self._services) + 1:03d}"
                    self.add_service(service_id, routing_key, None, name=f"Service {routing_key[:6]}")
                incident_id = self._open_incident(service_id, body["payload"]["summary"], dedup_key)
                self.alerts[(routing_key, dedup_key)] = Alert(routing_key, dedup_key, "triggered", incident_id)
                outcome = "triggered"
        elif not is_open:
            outcome = "dropped"
        else:
            assert alert is not None
            status = "acknowledged" if action == "acknowledge" else "resolved"
            incident = self._incidents[alert.incident_id]
            if incident["status"] != "resolved":
                self._set_status(incident, status)
            alert.status = status
            outcome = status
        self.events.append(AcceptedEvent(routing_key, action, dedup_key, body, outcome))
        return 202, {}, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    # REST API v2

    def _rest(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
              raw: bytes) -> tuple[int, dict[str, str], Obj]:
        if headers.get("authorization") != f"Token token={self.api_token}":
            raise _RestError(401, "Authentication failed", 2006)
        parts = [p for p in path.split("/") if p]
        include = query.get("include[]", [])
        if method == "GET" and parts == ["oncalls"]:
            return 200, {}, self._oncalls(query)
        if method == "GET" and len(parts) == 2 and parts[0] == "escalation_policies":
            if parts[1] not in self._policies:
                raise _RestError(404, "Not Found", 2100)
            return 200, {}, {"escalation_policy": self._policy(parts[1], include)}
        if method == "GET" and len(parts) == 2 and parts[0] == "users":
            if parts[1] not in self._users:
                raise _RestError(404, "Not Found", 2100)
            return 200, {}, {"user": self._user(parts[1])}
        if parts == ["incidents"] and method == "GET":
            return 200, {}, self._list_incidents(query)
        if len(parts) >= 2 and parts[0] == "incidents":
            incident = self._incidents.get(parts[1])
            if incident is None:
                raise _RestError(404, "Not Found", 2100)
            if len(parts) == 2 and method == "GET":
                return 200, {}, {"incident": self._incident_json(incident)}
            if len(parts) == 2 and method == "PUT":
                requester = self._requester(headers)
                return 200, {}, {"incident": self._update_incident(incident, _json_body(raw), requester)}
            if parts[2:] == ["notes"] and method == "GET":
                return 200, {}, {"notes": copy.deepcopy(self._notes.get(incident["id"], []))}
            if parts[2:] == ["notes"] and method == "POST":
                requester = self._requester(headers)
                return 201, {}, {"note": self._add_note(incident, _json_body(raw), requester)}
        raise _RestError(404, "Not Found", 2100)

    def _requester(self, headers: dict[str, str]) -> str:
        email = headers.get("from", "").strip()
        if not email:
            raise _RestError(400, 'You must specify a user\'s email address in the "From" header to perform '
                             "this action", 2016)
        for user_id, user in self._users.items():
            if user["email"].lower() == email.lower():
                return user_id
        raise _RestError(400, "Invalid Input Provided", 2001, ["Requester User Not Found"])

    def _page(self, items: list[Obj], query: dict[str, list[str]], wrapper: str) -> Obj:
        limit = max(1, min(_int(query, "limit", 25), PAGE_LIMIT_MAX))
        offset = _int(query, "offset", 0)
        if offset < 0 or offset + limit > ITERATION_LIMIT:
            raise _RestError(400, "Invalid Input Provided", 2001,
                             [f"Offset must be less than or equal to {ITERATION_LIMIT - limit}."])
        page = items[offset:offset + limit]
        return {wrapper: page, "limit": limit, "offset": offset, "more": offset + len(page) < len(items),
                "total": len(items) if _flag(query, "total") else None}

    def _oncalls(self, query: dict[str, list[str]]) -> Obj:
        policy_ids = query.get("escalation_policy_ids[]") or sorted(self._policies)
        user_ids = set(query.get("user_ids[]", []))
        schedule_ids = set(query.get("schedule_ids[]", []))
        full_users = "users" in query.get("include[]", [])
        earliest = _flag(query, "earliest")
        now = self.clock()
        since, until = _time(query, "since", now), _time(query, "until", now)
        if until < since:
            raise _RestError(400, "Invalid Input Provided", 2001, ["The until time cannot be before the since time."])
        if until - since > ONCALL_RANGE_MAX:
            raise _RestError(400, "Invalid Input Provided", 2001, ["The search range cannot exceed 3 months."])
        epoch = datetime.min.replace(tzinfo=UTC)
        entries: list[Obj] = []
        seen: set[tuple[str, int, str]] = set()
        for policy_id in policy_ids:
            policy = self._policies.get(policy_id)
            if policy is None:
                continue
            for level in range(1, len(policy["rules"]) + 1):
                for entry in sorted(self._oncall_at(policy_id, level), key=lambda e: e["start"] or epoch):
                    if user_ids and entry["user"] not in user_ids:
                        continue
                    if schedule_ids and entry["schedule"] not in schedule_ids:
                        continue
                    # overlapping the window (an instant when since == until); None: always on call
                    if (entry["start"] is not None and entry["start"] > until) or \
                            (entry["end"] is not None and entry["end"] <= since):
                        continue
                    if earliest and (policy_id, level, entry["user"]) in seen:
                        continue
                    seen.add((policy_id, level, entry["user"]))
                    entries.append({
                        "escalation_policy": self._ref("escalation_policy", policy_id, policy["name"]),
                        "escalation_level": level,
                        "schedule": (self._ref("schedule", entry["schedule"], entry["schedule"])
                                     if entry["schedule"] else None),
                        "user": self._user(entry["user"]) if full_users else self._user_ref(entry["user"]),
                        "start": _iso(entry["start"]), "end": _iso(entry["end"])})
        return self._page(entries, query, "oncalls")

    def _list_incidents(self, query: dict[str, list[str]]) -> Obj:
        key = query["incident_key"][0] if query.get("incident_key") else None
        services = set(query.get("service_ids[]", []))
        statuses = set(query.get("statuses[]", []))
        found = [self._incident_json(i) for i in self._incidents.values()
                 if (key is None or i["incident_key"] == key) and (not services or i["service_id"] in services)
                 and (not statuses or i["status"] in statuses)]
        return self._page(found, query, "incidents")

    def _update_incident(self, incident: Obj, body: Any, requester: str) -> Obj:
        update = body.get("incident") if isinstance(body, dict) else None
        if not isinstance(update, dict) or update.get("type") not in ("incident", "incident_reference"):
            raise _RestError(400, "Invalid Input Provided", 2001, ["Incident type must be incident_reference."])
        status, level = update.get("status"), update.get("escalation_level")
        if status is not None and status not in ("triggered", "acknowledged", "resolved"):
            raise _RestError(400, "Invalid Status", 1003, [f"Status {status!r} is not valid."])
        if level is not None:
            policy_id = self._services[incident["service_id"]]["escalation_policy"]
            levels = len(self._policies[policy_id]["rules"]) if policy_id else 0
            if incident["status"] == "resolved":
                raise _RestError(400, "Incident Already Resolved", 1001)
            if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= levels:
                raise _RestError(400, "Invalid Input Provided", 2001,
                                 [f"Escalation level must be between 1 and {levels}."])
            assert policy_id is not None
            incident["level"] = level
            incident["assignees"] = [e["user"] for e in self._oncall_at(policy_id, level)]
            self._set_status(incident, "triggered")  # escalating re-notifies: the incident is triggered again
        if status is not None:
            if status == "acknowledged" and incident["status"] == "resolved":
                raise _RestError(400, "Incident Already Resolved", 1001)
            self._set_status(incident, status, requester)
        for key in ("title",):
            if isinstance(update.get(key), str):
                incident[key] = update[key]
        return self._incident_json(incident)

    def _add_note(self, incident: Obj, body: Any, requester: str) -> Obj:
        note = body.get("note") if isinstance(body, dict) else None
        content = note.get("content") if isinstance(note, dict) else None
        if not isinstance(content, str) or not content.strip():
            raise _RestError(400, "Invalid Input Provided", 2001, ["Note content cannot be empty."])
        record = {"id": self._new_id("PN"), "user": self._user_ref(requester),
                  "channel": {"summary": "The PagerDuty website or APIs"}, "content": content,
                  "created_at": _iso(_now())}
        self._notes.setdefault(incident["id"], []).append(record)
        return copy.deepcopy(record)

    # -- webhooks out --

    def send_webhook(self, url: str, secret: str | Sequence[str], event_type: str, incident: str | Obj, *,
                     agent: str | Obj | None = None, verify: ssl.SSLContext | bool = True,
                     timeout: float = 5.0, occurred_at: datetime | None = None,
                     event_id: str | None = None) -> int:
        """POST a v3 webhook for `incident` (an incident id of this fake, or the `event.data`
        object itself) to `url`; `secret` may be several secrets (a rotation: one signature each).
        `agent`: a user id of this fake or a reference object. `occurred_at` defaults to
        `self.clock()` (set it to the test's clock), `event_id` to a fresh one. Returns the HTTP status."""
        with self.lock:
            data = self._webhook_incident(incident) if isinstance(incident, str) else copy.deepcopy(incident)
            if isinstance(agent, str):
                agent = self._user_ref(agent)
        when = (occurred_at or self.clock()).astimezone(UTC)
        envelope = {"event": {"id": event_id or uuid.uuid4().hex, "event_type": event_type, "resource_type": "incident",
                              "occurred_at": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                              "agent": agent, "client": None, "data": data}}
        body = json.dumps(envelope).encode()
        secrets = [secret] if isinstance(secret, str) else list(secret)
        signature = ",".join("v1=" + hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets)
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "PagerDuty-Webhook/V3.0",
                   "X-Webhook-Id": str(uuid.uuid4()), "X-Webhook-Subscription": "PSUBFAKE",
                   "X-PagerDuty-Signature": signature}
        response = httpx.post(url, content=body, headers=headers, verify=verify, timeout=timeout, trust_env=False)
        with self.lock:
            self.webhooks.append(SentWebhook(url, event_type, body, headers, response.status_code))
        return response.status_code


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        raise _RestError(400, "Invalid Input Provided", 2001, ["The request body is not valid JSON."]) from None


def _event_errors(body: Obj, size: int) -> list[str]:
    errors: list[str] = []
    routing_key = body.get("routing_key")
    if not isinstance(routing_key, str) or not routing_key:
        errors.append("'routing_key' is missing or blank")
    elif len(routing_key) != ROUTING_KEY_LENGTH:
        errors.append(f"Length of 'routing_key' is incorrect (should be {ROUTING_KEY_LENGTH} characters)")
    action = body.get("event_action")
    if action not in ACTIONS:
        errors.append("'event_action' is missing or invalid (should be one of 'trigger', 'acknowledge' or 'resolve')")
    dedup_key = body.get("dedup_key")
    if dedup_key is not None and not isinstance(dedup_key, str):
        errors.append("'dedup_key' must be a string")
    elif isinstance(dedup_key, str) and len(dedup_key) > 255:
        errors.append("Length of 'dedup_key' is too long (should be at most 255 characters)")
    if action in ("acknowledge", "resolve") and not dedup_key:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        payload = body.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or invalid")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary.strip():
                errors.append("'payload.summary' is missing or blank")
            elif len(summary) > 1024:
                errors.append("Length of 'payload.summary' is too long (should be at most 1024 characters)")
            source = payload.get("source")
            if not isinstance(source, str) or not source.strip():
                errors.append("'payload.source' is missing or blank")
            severity = payload.get("severity")
            if not severity:
                errors.append("'payload.severity' is missing or blank")
            elif severity not in SEVERITIES:
                errors.append("'payload.severity' is invalid (should be one of 'critical', 'error', 'warning' "
                              "or 'info')")
        for index, link in enumerate(body.get("links") or []):
            if not isinstance(link, dict) or not isinstance(link.get("href"), str) or not link["href"]:
                errors.append(f"'links[{index}].href' is missing or blank")
        for index, image in enumerate(body.get("images") or []):
            if not isinstance(image, dict) or not str(image.get("src", "")).startswith("https://"):
                errors.append(f"'images[{index}].src' must be an HTTPS URL")
    if size > MAX_EVENT_BYTES:
        errors.append(f"Event object is too large (should be at most {MAX_EVENT_BYTES} bytes)")
    return errors


def _failure_headers(failure: _Failure) -> dict[str, str]:
    if failure.retry_after is None:
        return {}
    seconds = f"{failure.retry_after:g}"
    headers = {"Retry-After": seconds}
    if failure.status == 429:
        headers.update({"ratelimit-limit": "960", "ratelimit-remaining": "0", "ratelimit-reset": seconds})
    return headers


def _failure_body(status: int, events: bool) -> Obj:
    if status == 429:
        if events:
            return {"status": "throttle event", "message": "Request Limit Exceeded"}
        return {"error": {"message": "Rate Limit Exceeded", "code": 2020}}
    if status >= 500:
        return _server_error(status, events)
    if events:
        return {"status": "invalid event", "message": "Event object is invalid", "errors": []}
    return {"error": {"message": "Invalid Input Provided", "code": 2001}}


def _server_error(status: int, events: bool) -> Obj:
    message = "Service Unavailable" if status == 503 else "Internal Server Error"
    if events:
        return {"status": "error", "message": message}
    return {"error": {"message": message}}
