"""integrations/pagerduty.py against the PagerDuty fake, over real TLS on 127.0.0.1.

The `pagerduty` library (on httpx2) talks to tests/fakes/pagerduty.py through a real socket; the
fake's CA comes from trustme. Nothing is mocked: failures are injected by the fake.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pydantic
import pytest

from integrations.pagerduty import (
    MAX_DEDUP_KEY,
    MAX_SUMMARY,
    EventAction,
    OnCallUser,
    PagerDutyError,
    PagerDutyEvent,
    PagerDutyEvents,
    PagerDutyRest,
    WebhookEvent,
    verify_webhook_signature,
)
from tests.fakes.pagerduty import FakePagerDuty

ROUTING_KEY = "R0UT1NGKEY0000000000000000000001"
OTHER_KEY = "R0UT1NGKEY0000000000000000000002"
BOT_EMAIL = "oncall-bot@example.com"
WEBHOOK_SECRET = "whsec-current"


@pytest.fixture
def fake() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as server:
        server.add_user("PBOT001", "Oncall Bot", BOT_EMAIL)
        server.add_user("PANN001", "Ann Primary", "ann@example.com")
        server.add_user("PBOB001", "Bob Secondary", "bob@example.com")
        server.add_user("PCAT001", "Cat Manager", "cat@example.com")
        server.add_escalation_policy("PEP0001", [["PANN001"], ["PBOB001"], ["PCAT001"]], [15, 30, 60], name="Payments")
        server.add_service("PSVC001", ROUTING_KEY, "PEP0001", name="payments-api")
        yield server


@pytest.fixture
def events(fake: FakePagerDuty) -> Iterator[PagerDutyEvents]:
    with PagerDutyEvents(base_url=fake.base_url, verify=fake.ca_file, backoff=0.01) as client:
        yield client


@pytest.fixture
def rest(fake: FakePagerDuty) -> Iterator[PagerDutyRest]:
    with PagerDutyRest(fake.api_token, default_from=BOT_EMAIL, base_url=fake.base_url, verify=fake.ssl_context(),
                       backoff=0.01) as client:
        yield client


def trigger(dedup_key: str | None = "alertgroup-1", routing_key: str = ROUTING_KEY, **fields: Any) -> PagerDutyEvent:
    values: dict[str, Any] = {"routing_key": routing_key, "action": "trigger", "dedup_key": dedup_key,
                              "summary": "HighErrorRate: payments-api 5xx > 5%", "source": "prod-eu-1/payments-api",
                              "severity": "critical"}
    return PagerDutyEvent(**(values | fields))


def action(name: EventAction, dedup_key: str = "alertgroup-1", routing_key: str = ROUTING_KEY) -> PagerDutyEvent:
    return PagerDutyEvent(routing_key=routing_key, action=name, dedup_key=dedup_key)


# -- Events API v2 ------------------------------------------------------------------------------

def test_trigger_acknowledge_resolve_lifecycle(fake: FakePagerDuty, events: PagerDutyEvents,
                                               rest: PagerDutyRest) -> None:
    started = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    event = trigger(timestamp=started, component="payments-api", group="prod-eu-1", class_="http-errors",
                    custom_details={"error_rate": 0.07, "alerts": ["HighErrorRate"]},
                    links=[{"href": "https://slack.example.com/archives/C1", "text": "Slack incident channel"}])
    assert events.send(event) == "alertgroup-1"

    sent = fake.requests_to("/v2/enqueue")[0]
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers  # the Events API authenticates by routing_key only
    assert sent.body == {
        "routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": "alertgroup-1",
        "payload": {"summary": "HighErrorRate: payments-api 5xx > 5%", "source": "prod-eu-1/payments-api",
                    "severity": "critical", "timestamp": "2024-05-01T12:00:00+00:00", "component": "payments-api",
                    "group": "prod-eu-1", "class": "http-errors",
                    "custom_details": {"error_rate": 0.07, "alerts": ["HighErrorRate"]}},
        "links": [{"href": "https://slack.example.com/archives/C1", "text": "Slack incident channel"}]}

    incident = rest.find_incident("alertgroup-1")
    assert incident is not None and incident.status == "triggered"
    assert incident.service_id == "PSVC001" and incident.escalation_policy_id == "PEP0001"
    assert incident.assignee_ids == ("PANN001",) and incident.title.startswith("HighErrorRate")

    assert events.send(trigger()) == "alertgroup-1"  # same key, alert open: deduplicated
    assert events.send(action("acknowledge")) == "alertgroup-1"
    assert rest.find_incident("alertgroup-1") == incident.model_copy(update={"status": "acknowledged"})
    assert events.send(action("resolve")) == "alertgroup-1"
    resolved = rest.find_incident("alertgroup-1")
    assert resolved is not None and resolved.id == incident.id and resolved.status == "resolved"

    assert events.send(action("acknowledge")) == "alertgroup-1"  # after resolve: 202 but dropped
    assert [(e.action, e.outcome) for e in fake.events] == [
        ("trigger", "triggered"), ("trigger", "deduplicated"), ("acknowledge", "acknowledged"),
        ("resolve", "resolved"), ("acknowledge", "dropped")]
    assert fake.incident(incident.id)["status"] == "resolved"

    events.send(trigger())  # a trigger after resolve opens a new alert and incident
    reopened = rest.find_incident("alertgroup-1")
    assert reopened is not None and reopened.id != incident.id and reopened.status == "triggered"
    assert reopened.number == incident.number + 1


def test_trigger_without_dedup_key_returns_pagerdutys_key(fake: FakePagerDuty, events: PagerDutyEvents) -> None:
    key = events.send(trigger(dedup_key=None, severity="warning"))
    assert len(key) == 32 and fake.events[0].dedup_key == key
    assert "dedup_key" not in fake.requests[0].body
    assert fake.alert(key) is not None and fake.alert(key).status == "triggered"  # type: ignore[union-attr]


def test_acknowledge_through_another_routing_key_is_dropped(fake: FakePagerDuty, events: PagerDutyEvents) -> None:
    events.send(trigger())
    events.send(action("acknowledge", routing_key=OTHER_KEY))
    events.send(action("resolve", dedup_key="never-triggered"))
    assert [e.outcome for e in fake.events] == ["triggered", "dropped", "dropped"]
    assert fake.alert("alertgroup-1", ROUTING_KEY).status == "triggered"  # type: ignore[union-attr]


@pytest.mark.parametrize(("fields", "complaint"), [
    ({"routing_key": "R" * 31}, "routing_key"),
    ({"routing_key": "R" * 33}, "routing_key"),
    ({"summary": "x" * (MAX_SUMMARY + 1)}, "summary"),
    ({"dedup_key": "k" * (MAX_DEDUP_KEY + 1)}, "dedup_key"),
    ({"dedup_key": ""}, "dedup_key"),
    ({"severity": "fatal"}, "severity"),
    ({"source": None}, "source"),
    ({"summary": None, "severity": None}, "summary, severity"),
    ({"action": "snooze"}, "action"),
    ({"custom_details": {"log": "x" * (512 * 1024)}}, "at most 524288"),
    ({"links": [{"text": "no href"}]}, "href"),
])
def test_invalid_events_are_refused_before_sending(fake: FakePagerDuty, events: PagerDutyEvents,
                                                   fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=complaint):
        events.send(trigger(**fields))
    assert fake.requests == [] and fake.events == []


def test_acknowledge_and_resolve_need_a_dedup_key(fake: FakePagerDuty) -> None:
    names: tuple[EventAction, ...] = ("acknowledge", "resolve")
    for name in names:
        with pytest.raises(pydantic.ValidationError, match=f"{name} event needs a dedup_key"):
            PagerDutyEvent(routing_key=ROUTING_KEY, action=name)
    ack = PagerDutyEvent(routing_key=ROUTING_KEY, action="acknowledge", dedup_key="k", summary="ignored")
    assert ack.wire_body() == {"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "k"}
    assert fake.requests == []


def test_events_400_is_surfaced_with_pagerdutys_message(fake: FakePagerDuty, events: PagerDutyEvents) -> None:
    # model_construct skips our validation, so the fake's own validation answers
    bad = PagerDutyEvent.model_construct(routing_key="short-key", action="trigger", dedup_key="k", summary="s",
                                         source="h", severity="critical", timestamp=None, component=None, group=None,
                                         class_=None, custom_details=None, links=())
    with pytest.raises(PagerDutyError) as caught:
        events.send(bad)
    error = caught.value
    assert (error.status, error.retryable, error.retry_after) == (400, False, None)
    assert error.message == "Event object is invalid: Length of 'routing_key' is incorrect (should be 32 characters)"
    assert error.errors == ("Length of 'routing_key' is incorrect (should be 32 characters)",)
    assert [r.status for r in fake.requests] == [400] and fake.events == []


def test_events_429_is_retryable_with_retry_after_and_quick(fake: FakePagerDuty, events: PagerDutyEvents) -> None:
    fake.fail_next("/v2/enqueue", 429, times=10, retry_after=30)
    started = time.monotonic()
    with pytest.raises(PagerDutyError) as caught:
        events.send(trigger())
    assert time.monotonic() - started < 2
    error = caught.value
    assert (error.status, error.retryable, error.retry_after) == (429, True, 30.0)
    assert error.message == "Request Limit Exceeded"
    assert [r.status for r in fake.requests] == [429, 429]  # one bounded retry, not forever
    assert fake.events == []


def test_a_single_429_is_absorbed_by_one_quick_retry(fake: FakePagerDuty, events: PagerDutyEvents) -> None:
    fake.fail_next("/v2/enqueue", 429, times=1)
    assert events.send(trigger()) == "alertgroup-1"
    assert [r.status for r in fake.requests] == [429, 202]
    assert [e.outcome for e in fake.events] == ["triggered"]


def test_retries_zero_gives_up_at_the_first_429(fake: FakePagerDuty) -> None:
    fake.fail_next("/v2/enqueue", 429, times=1)
    with (PagerDutyEvents(base_url=fake.base_url, verify=fake.ca_file, retries=0) as client,
          pytest.raises(PagerDutyError) as caught):
        client.send(trigger())
    assert caught.value.status == 429 and caught.value.retry_after is None
    assert [r.status for r in fake.requests] == [429]


@pytest.mark.parametrize("status", [500, 503])
def test_events_5xx_is_retryable(fake: FakePagerDuty, events: PagerDutyEvents, status: int) -> None:
    fake.fail_next("/v2/enqueue", status, times=10)
    with pytest.raises(PagerDutyError) as caught:
        events.send(trigger())
    assert (caught.value.status, caught.value.retryable) == (status, True)
    assert len(fake.requests) == 2 and fake.events == []


def test_server_down_and_connection_reset_are_retryable(fake: FakePagerDuty, events: PagerDutyEvents) -> None:
    fake.set_down(True)
    with pytest.raises(PagerDutyError) as caught:
        events.send(trigger())
    assert (caught.value.status, caught.value.retryable) == (503, True)

    fake.set_down(True, reset=True)
    with pytest.raises(PagerDutyError) as caught:
        events.send(trigger())
    assert caught.value.status is None and caught.value.retryable
    assert "RemoteProtocolError" in caught.value.message or "ReadError" in caught.value.message

    fake.set_down(False)
    assert events.send(trigger()) == "alertgroup-1"
    assert [e.outcome for e in fake.events] == ["triggered"]


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with (PagerDutyEvents(base_url=f"https://127.0.0.1:{port}", backoff=0.01) as client,
          pytest.raises(PagerDutyError) as caught):
        client.send(trigger())
    assert caught.value.status is None and caught.value.retryable and "ConnectError" in caught.value.message


def test_the_fake_is_real_tls(fake: FakePagerDuty) -> None:
    with (PagerDutyEvents(base_url=fake.base_url, retries=0) as client,  # system CAs: the test CA is unknown
          pytest.raises(PagerDutyError, match="CERTIFICATE_VERIFY_FAILED")):
        client.send(trigger())
    with pytest.raises(PagerDutyError, match="https://"):
        PagerDutyRest("token", base_url=fake.base_url.replace("https://", "http://"))
    assert fake.events == []


# -- REST API v2: errors ------------------------------------------------------------------------

def test_wrong_token_is_401_not_retryable(fake: FakePagerDuty) -> None:
    with (PagerDutyRest("not-the-token", base_url=fake.base_url, verify=fake.ca_file) as client,
          pytest.raises(PagerDutyError) as caught):
        client.escalation_policy("PEP0001")
    assert (caught.value.status, caught.value.retryable, caught.value.code) == (401, False, 2006)
    assert caught.value.message == "Authentication failed"
    assert len(fake.requests) == 1 and fake.requests[0].headers["authorization"] == "Token token=not-the-token"


def test_rest_429_is_retryable_with_retry_after(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    fake.fail_next("/oncalls", 429, times=10, retry_after=12)
    started = time.monotonic()
    with pytest.raises(PagerDutyError) as caught:
        rest.oncall_users("PEP0001")
    assert time.monotonic() - started < 2
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after, caught.value.code) == (
        429, True, 12.0, 2020)
    assert caught.value.message == "Rate Limit Exceeded"
    assert len(fake.requests_to("/oncalls")) == 2


def test_rest_500_is_retryable_and_not_retried_inside_the_call(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    fake.fail_next("/incidents", 500)
    with pytest.raises(PagerDutyError) as caught:
        rest.find_incident("alertgroup-1")
    assert (caught.value.status, caught.value.retryable) == (500, True)
    assert caught.value.message == "Internal Server Error"
    assert len(fake.requests) == 1
    assert rest.find_incident("alertgroup-1") is None  # the failure was one request only


def test_unknown_policy_is_404_not_retryable(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    with pytest.raises(PagerDutyError) as caught:
        rest.escalation_policy("PNOPE01")
    assert (caught.value.status, caught.value.retryable, caught.value.code, caught.value.message) == (
        404, False, 2100, "Not Found")


# -- REST API v2: on-call, policies, incidents --------------------------------------------------

def test_oncall_users_follow_pagination(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    levels = []
    for level in range(1, 4):
        ids = []
        for n in range(60):
            user_id = f"PL{level}U{n:03d}"
            fake.add_user(user_id, f"User {level}-{n}", f"user{level}-{n}@example.com")
            ids.append(user_id)
        levels.append(ids)
    fake.add_escalation_policy("PBIG001", levels, [5, 10, 20])

    users = rest.oncall_users("PBIG001")
    assert len(users) == 180 and len({(u.escalation_level, u.id) for u in users}) == 180
    assert [u.escalation_level for u in users] == [1] * 60 + [2] * 60 + [3] * 60
    assert users[61] == OnCallUser(id="PL2U001", name="User 2-1", email="user2-1@example.com", escalation_level=2,
                                   escalation_policy_id="PBIG001")

    pages = fake.requests_to("/oncalls")
    assert [(r.param("offset"), r.param("limit")) for r in pages] == [("0", "100"), ("100", "100")]
    for page in pages:
        assert page.query["escalation_policy_ids[]"] == ["PBIG001"]
        assert page.param("earliest") == "true" and page.query["include[]"] == ["users"]
        assert page.headers["accept"] == "application/vnd.pagerduty+json;version=2"

    second = rest.oncall_users("PBIG001", escalation_level=2)
    assert [u.id for u in second] == levels[1]


def test_oncall_through_a_schedule(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    start = fake.clock().replace(microsecond=0) - timedelta(hours=1)  # on call now, by the fake's clock
    fake.set_oncall("PEP0001", 1, ["PBOB001"], schedule_id="PSCHED1", start=start, end=start + timedelta(hours=8))
    first = rest.oncall_users("PEP0001", escalation_level=1)
    assert first == [OnCallUser(id="PBOB001", name="Bob Secondary", email="bob@example.com", escalation_level=1,
                                schedule_id="PSCHED1", start=start, end=start + timedelta(hours=8),
                                escalation_policy_id="PEP0001")]


def test_escalation_policy_levels_delays_and_targets(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    fake.add_escalation_policy("PEP0002", [["PANN001", {"type": "schedule_reference", "id": "PSCHED1",
                                                        "summary": "Primary rotation"}], ["PCAT001"]],
                               [10, 25], name="Checkout", num_loops=2)
    policy = rest.escalation_policy("PEP0002")
    assert (policy.id, policy.name, policy.num_loops) == ("PEP0002", "Checkout", 2)
    assert [(lvl.level, lvl.delay_minutes) for lvl in policy.levels] == [(1, 10), (2, 25)]
    assert [(t.id, t.type, t.name) for t in policy.levels[0].targets] == [
        ("PANN001", "user", "Ann Primary"), ("PSCHED1", "schedule", "Primary rotation")]
    assert [t.id for t in policy.levels[1].targets] == ["PCAT001"]


def test_escalate_sends_from_and_reassigns(fake: FakePagerDuty, events: PagerDutyEvents, rest: PagerDutyRest) -> None:
    events.send(trigger())
    incident = rest.find_incident("alertgroup-1", service_id="PSVC001")
    assert incident is not None and incident.assignee_ids == ("PANN001",)

    escalated = rest.escalate(incident.id, 2)
    assert escalated.id == incident.id and escalated.assignee_ids == ("PBOB001",) and escalated.status == "triggered"
    assert fake.escalation_level(incident.id) == 2
    put = fake.requests_to(f"/incidents/{incident.id}", "PUT")[0]
    assert put.headers["from"] == BOT_EMAIL
    assert put.body == {"incident": {"type": "incident_reference", "escalation_level": 2}}

    with pytest.raises(PagerDutyError) as caught:
        rest.escalate(incident.id, 4)  # the policy has three levels
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "Escalation level must be between 1 and 3" in caught.value.message


def test_escalate_without_from_is_rejected_with_code_2016(fake: FakePagerDuty, events: PagerDutyEvents) -> None:
    events.send(trigger())
    with PagerDutyRest(fake.api_token, base_url=fake.base_url, verify=fake.ca_file) as no_from:
        incident = no_from.find_incident("alertgroup-1")
        assert incident is not None
        with pytest.raises(PagerDutyError) as caught:
            no_from.escalate(incident.id, 2)
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (400, 2016, False)
    assert caught.value.message == ('You must specify a user\'s email address in the "From" header to perform '
                                    "this action")
    assert fake.escalation_level(incident.id) == 1


def test_escalating_a_resolved_incident_fails(fake: FakePagerDuty, events: PagerDutyEvents,
                                              rest: PagerDutyRest) -> None:
    events.send(trigger())
    events.send(action("resolve"))
    incident = rest.find_incident("alertgroup-1")
    assert incident is not None and incident.status == "resolved"
    with pytest.raises(PagerDutyError) as caught:
        rest.escalate(incident.id, 2)
    assert (caught.value.status, caught.value.code, caught.value.message) == (400, 1001, "Incident Already Resolved")


def test_add_note(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    incident_id = fake.create_incident("PSVC001", "Disk full on db-1", incident_key="disk-db-1")
    rest.add_note(incident_id, "Runbook: cleared /var/log, disk at 61%")
    notes = fake.notes(incident_id)
    assert [(n["content"], n["user"]["id"]) for n in notes] == [("Runbook: cleared /var/log, disk at 61%", "PBOT001")]
    post = fake.requests_to(f"/incidents/{incident_id}/notes", "POST")[0]
    assert post.body == {"note": {"content": "Runbook: cleared /var/log, disk at 61%"}}
    assert post.headers["from"] == BOT_EMAIL and post.status == 201

    with pytest.raises(PagerDutyError) as caught:
        rest.add_note("QNOPE", "hello")
    assert (caught.value.status, caught.value.retryable) == (404, False)


def test_find_incident_by_key_and_service(fake: FakePagerDuty, rest: PagerDutyRest) -> None:
    assert rest.find_incident("nothing-here") is None
    fake.add_service("PSVC002", OTHER_KEY, "PEP0001")
    mine = fake.create_incident("PSVC001", "mine", incident_key="shared-key")
    theirs = fake.create_incident("PSVC002", "theirs", incident_key="shared-key")
    found = rest.find_incident("shared-key", service_id="PSVC002")
    assert found is not None and found.id == theirs
    found = rest.find_incident("shared-key", service_id="PSVC001")
    assert found is not None and found.id == mine and found.title == "mine"
    request = fake.requests_to("/incidents")[-1]
    assert request.param("incident_key") == "shared-key" and request.query["service_ids[]"] == ["PSVC001"]


# -- webhooks v3 --------------------------------------------------------------------------------

def sign(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_webhook_signature_verification() -> None:
    body = b'{"event":{"id":"01","event_type":"incident.acknowledged"}}'
    good = sign(WEBHOOK_SECRET, body)
    assert verify_webhook_signature(WEBHOOK_SECRET, body, good)
    assert verify_webhook_signature(WEBHOOK_SECRET, body, good.upper().replace("V1=", "v1="))  # hex case
    assert not verify_webhook_signature(WEBHOOK_SECRET, body, sign("another-secret", body))
    assert not verify_webhook_signature(WEBHOOK_SECRET, body + b" ", good)  # body changed
    # rotation: old and new secrets both sign; either order, with or without spaces
    rotated = f"{sign('whsec-old', body)},{good}"
    assert verify_webhook_signature(WEBHOOK_SECRET, body, rotated)
    assert verify_webhook_signature("whsec-old", body, rotated)
    assert verify_webhook_signature(WEBHOOK_SECRET, body, f"{good}, {sign('whsec-old', body)}")
    assert not verify_webhook_signature("whsec-other", body, rotated)
    # missing, empty, wrong version, no secret configured
    assert not verify_webhook_signature(WEBHOOK_SECRET, body, None)
    assert not verify_webhook_signature(WEBHOOK_SECRET, body, "")
    assert not verify_webhook_signature(WEBHOOK_SECRET, body, good.replace("v1=", "v0="))
    assert not verify_webhook_signature(WEBHOOK_SECRET, body, "v1=")
    assert not verify_webhook_signature("", body, sign("", body))


def envelope(event_type: str, data: dict[str, Any], agent: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"event": {"id": "5ac64822-4adc-4fda-ade0-410becf0de4f", "event_type": event_type,
                                 "resource_type": "incident", "occurred_at": "2024-05-01T12:03:22.169Z",
                                 "agent": agent, "client": {"name": "PagerDuty"}, "data": data}}).encode()


INCIDENT_DATA = {
    "id": "PGR0VU2", "type": "incident", "self": "https://api.pagerduty.com/incidents/PGR0VU2",
    "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2", "number": 2, "status": "triggered",
    "incident_key": "alertgroup-1", "created_at": "2024-05-01T12:00:00Z", "title": "HighErrorRate",
    "service": {"id": "PSVC001", "type": "service_reference", "summary": "payments-api"},
    "assignees": [{"id": "PANN001", "type": "user_reference", "summary": "Ann Primary"}],
    "escalation_policy": {"id": "PEP0001", "type": "escalation_policy_reference", "summary": "Payments"},
    "teams": [], "priority": None, "urgency": "high", "conference_bridge": None, "resolve_reason": None,
    "some_future_field": {"ignored": True},
}


@pytest.mark.parametrize(("event_type", "status"), [
    ("incident.triggered", "triggered"), ("incident.acknowledged", "acknowledged"),
    ("incident.escalated", "triggered"), ("incident.reassigned", "triggered"), ("incident.resolved", "resolved"),
])
def test_webhook_event_parses_incident_events(event_type: str, status: str) -> None:
    agent = {"id": "PANN001", "type": "user_reference", "summary": "Ann Primary",
             "self": "https://api.pagerduty.com/users/PANN001", "html_url": "https://acme.pagerduty.com/users/PANN001"}
    event = WebhookEvent.model_validate_json(envelope(event_type, INCIDENT_DATA | {"status": status}, agent))
    assert event.event_type == event_type and event.is_incident_event and event.resource_type == "incident"
    assert event.occurred_at == datetime(2024, 5, 1, 12, 3, 22, 169000, tzinfo=UTC)
    assert event.agent is not None and (event.agent.id, event.agent.type) == ("PANN001", "user_reference")
    assert event.agent.self_ == "https://api.pagerduty.com/users/PANN001"
    incident = event.incident
    assert incident is not None and event.incident_id == "PGR0VU2"
    assert (incident.status, incident.number, incident.incident_key, incident.title) == (
        status, 2, "alertgroup-1", "HighErrorRate")
    assert incident.service is not None and incident.service.id == "PSVC001"
    assert [a.id for a in incident.assignees] == ["PANN001"]
    assert incident.escalation_policy is not None and incident.escalation_policy.id == "PEP0001"


def test_webhook_event_tolerates_other_types() -> None:
    note = WebhookEvent.model_validate_json(envelope("incident.annotated", {
        "incident": {"id": "PGR0VU2", "type": "incident_reference"}, "id": "P2LA89X",
        "content": "looking", "trimmed": False, "type": "incident_note"}))
    assert not note.is_incident_event and note.incident is None and note.incident_id == "PGR0VU2"
    assert note.data["content"] == "looking"
    ping = WebhookEvent.model_validate_json(json.dumps({"event": {
        "id": "01", "event_type": "pagey.ping", "resource_type": "pagey", "occurred_at": "2024-05-01T12:00:00Z",
        "agent": None, "client": None, "data": {"message": "Hello from your friend Pagey!", "type": "ping"}}}))
    assert ping.event_type == "pagey.ping" and ping.incident_id is None and ping.agent is None
    with pytest.raises(pydantic.ValidationError):
        WebhookEvent.model_validate_json(b'{"event": {"event_type": "incident.triggered"}}')


def test_webhook_event_time_needs_an_offset() -> None:
    """occurred_at orders events against the incident's episodes: a time without a zone is refused."""
    body = json.dumps({"event": {"id": "01", "event_type": "incident.resolved", "resource_type": "incident",
                                 "occurred_at": "2024-05-01T12:00:00", "data": {"id": "PX", "type": "incident"}}})
    with pytest.raises(pydantic.ValidationError, match="timezone"):
        WebhookEvent.model_validate_json(body)
    assert WebhookEvent.model_validate_json(body.replace(":00\"", ":00+09:00\"")).occurred_at.utcoffset() == \
        timedelta(hours=9)


class _Receiver:
    """A tiny bot-side webhook endpoint: verifies, parses, answers 202 (or 401 / 400)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[WebhookEvent] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 401
                if verify_webhook_signature(receiver.secret, body, self.headers.get("X-PagerDuty-Signature")):
                    try:
                        receiver.received.append(WebhookEvent.model_validate_json(body))
                        status = 202
                    except pydantic.ValidationError:
                        status = 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pagerduty/webhook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    endpoint = _Receiver(WEBHOOK_SECRET)
    yield endpoint
    endpoint.close()


def test_fake_sends_signed_webhooks_that_we_verify(fake: FakePagerDuty, events: PagerDutyEvents,
                                                   receiver: _Receiver) -> None:
    events.send(trigger())
    events.send(action("acknowledge"))
    alert = fake.alert("alertgroup-1")
    assert alert is not None and alert.status == "acknowledged"
    incident_id = alert.incident_id

    assert fake.send_webhook(receiver.url, WEBHOOK_SECRET, "incident.acknowledged", incident_id, agent="PANN001") == 202
    event = receiver.received[-1]
    assert event.event_type == "incident.acknowledged" and event.incident is not None
    assert (event.incident.id, event.incident.status, event.incident.incident_key) == (
        incident_id, "acknowledged", "alertgroup-1")
    assert event.agent is not None and event.agent.id == "PANN001"
    sent = fake.webhooks[-1]
    assert sent.headers["User-Agent"] == "PagerDuty-Webhook/V3.0" and sent.headers["X-Webhook-Id"]

    # rotation: the fake signs with the old and the new secret, we know only the new one
    assert fake.send_webhook(receiver.url, ["whsec-old", WEBHOOK_SECRET], "incident.resolved", incident_id) == 202
    assert fake.webhooks[-1].headers["X-PagerDuty-Signature"].count("v1=") == 2
    assert receiver.received[-1].event_type == "incident.resolved"

    assert fake.send_webhook(receiver.url, "whsec-forged", "incident.resolved", incident_id) == 401
    assert len(receiver.received) == 2
