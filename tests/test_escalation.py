"""Escalation on timers through PagerDuty, kept in step both ways.

Driven over HTTP (Alertmanager webhooks, signed Slack button clicks, signed PagerDuty webhooks),
observed through the Slack and PagerDuty fakes. Deadlines are reached by moving the clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from sqlalchemy import select

from bot.config import ConfigError, OncallConfig, load_settings
from bot.escalation import add_maintenance, cancel_maintenance
from bot.escalation_policy import EscalationPolicy
from bot.jobs import JOB_PD_EVENT
from bot.models import (
    Incident,
    IncidentStatus,
    Job,
    JobStatus,
    MaintenanceWindow,
    PagerDutyWebhookEvent,
    Paging,
    TimelineEntry,
    Timer,
    TimerStatus,
)
from commands.app import build
from commands.ids import CARD_ACK as ACK
from commands.ids import CARD_ESCALATE as ESCALATE
from commands.ids import CARD_RESOLVE as RESOLVE
from integrations.pagerduty import PagerDutyRest
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, fire_side_by_side, make_settings, start_bot, upcoming, wait_for
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.slack_requests import block_actions, post_to_slack_events, signed_headers

ROUTING_KEY = "R0UTINGKEY0FTHEPAYMENTSSERVICE00"
PD_SECRET = "pagerduty-webhook-secret-for-tests"
BOT_EMAIL = "oncall-bot@example.com"
POLICY = {"channels": {"announce": "C0INCIDENTS"}, "pagerduty": {"escalation_policy": "PEP1"}}


@pytest.fixture(params=[0, 366], ids=["today", "a-year-ahead"])
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """Every escalation test runs today and again with the clock a year ahead: deadlines,
    business hours and the outbox must not depend on the calendar."""
    return FakeClock(timedelta(days=request.param))


@pytest.fixture
def pagerduty(clock: FakeClock) -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        fake.clock = clock  # its webhooks' occurred_at follow the test's clock
        for user_id, name in (("PBOB", "Bob"), ("PCAROL", "Carol"), ("PALICE", "Alice")):
            fake.add_user(user_id, name, f"{name.lower()}@example.com")
        fake.add_user("PBOT", "The bot", BOT_EMAIL)
        fake.add_escalation_policy("PEP1", [["PBOB"], ["PCAROL"], ["PALICE"]])  # L2, L3, L4
        fake.add_service("PSVC1", ROUTING_KEY, "PEP1")
        yield fake


def pd_settings(database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, config: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    return make_settings(
        database_url, slack, OncallConfig.model_validate(config or POLICY),
        pagerduty_routing_key=ROUTING_KEY, pagerduty_api_token=pagerduty.api_token,
        pagerduty_events_url=pagerduty.base_url, pagerduty_api_url=pagerduty.base_url,
        pagerduty_ca_file=pagerduty.ca_file, pagerduty_webhook_secret=PD_SECRET, pagerduty_from_email=BOT_EMAIL)


def start(settings, clock: FakeClock) -> RunningBot:  # type: ignore[no-untyped-def]
    running = start_bot(settings, clock=clock)
    running.services.timers.poll_seconds = 0.05
    return running


@pytest.fixture
def pd_bot(database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> Iterator[RunningBot]:
    running = start(pd_settings(database_url, slack, pagerduty), clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


# -- helpers -------------------------------------------------------------------------------------

def incident(bot: RunningBot, incident_id: int) -> Incident:
    with bot.services.db.read() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        return row


def paging(bot: RunningBot, incident_id: int) -> Paging:
    with bot.services.db.read() as session:
        row = session.get(Paging, incident_id)
        assert row is not None
        return row


def timers(bot: RunningBot, incident_id: int, kind: str | None = None) -> list[Timer]:
    with bot.services.db.read() as session:
        query = select(Timer).where(Timer.incident_id == incident_id).order_by(Timer.id)
        return [t for t in session.scalars(query) if kind in (None, t.kind)]


def open_incident(bot: RunningBot, payload: dict[str, Any] | None = None) -> Incident:
    reply = bot.post_alerts(payload or group())
    assert reply.status_code == 200, reply.text
    incident_id = reply.json()["incident_id"]
    return wait_for(lambda: (row := incident(bot, incident_id)).card_ts and row, what="the incident card")


def actions(pagerduty: FakePagerDuty, key: str) -> list[str]:
    with pagerduty.lock:
        return [e.action for e in pagerduty.events if e.dedup_key == key]


def card(slack: FakeSlack, row: Incident) -> str:
    message = next(m for m in slack.messages(row.card_channel_id) if m.ts == row.card_ts)
    return json.dumps(message.blocks, ensure_ascii=False)


def said(slack: FakeSlack, channel: str | None, text: str) -> list[str]:
    return [m.text for m in slack.messages(channel) if text in m.text]


def idle(bot: RunningBot) -> bool:
    with bot.services.db.read() as session:
        return session.scalars(select(Job).where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))).first() \
            is None


def settle(bot: RunningBot) -> None:
    """Fire whatever is due and let the outbox drain: "nothing else happens" becomes checkable."""
    wait_for(lambda: bot.services.timers.fire_due() == 0 and idle(bot), what="timers and jobs to settle")


def advance(bot: RunningBot, clock: FakeClock, **delta: float) -> None:
    """Move the clock once nothing is in flight: a job running across a jump of more than its
    lease (2 min) would look abandoned and run again."""
    settle(bot)
    clock.advance(**delta)


def answers(slack: FakeSlack) -> list[str]:
    """Ephemeral answers to clicks, through their response_url (the original message kept)."""
    return [m["text"] for _, m in slack.responses if m["response_type"] == "ephemeral" and not m["replace_original"]]


def button_values(slack: FakeSlack, row: Incident) -> dict[str, str]:
    """The card's buttons as the card shows them now: action id -> value (what Slack sends back)."""
    message = next(m for m in slack.messages(row.card_channel_id) if m.ts == row.card_ts)
    return {e["action_id"]: e["value"] for b in message.blocks if b.get("type") == "actions" for e in b["elements"]
            if e.get("type") == "button"}  # the silence menu is an overflow: its options carry their values


def button_value(bot: RunningBot, slack: FakeSlack, row: Incident, action_id: str) -> str:
    """What a person clicking the card sees: the card drawn for the current paging level. (All
    the card's buttons carry the same value; an Ack button already gone is the same value.)"""
    with bot.services.db.read() as session:
        found = session.get(Paging, row.id)
        level = found.level if found else 0
    values = wait_for(lambda: (v := button_values(slack, row)) and all(x.endswith(f".{level}") for x in v.values())
                      and v, what=f"the card drawn for paging level {level}")
    return values.get(action_id) or next(iter(values.values()))


def click(bot: RunningBot, slack: FakeSlack, action_id: str, row: Incident, user: str, *,
          member: bool = True, value: str | None = None) -> httpx.Response:
    """`user` clicks a card button; by default as a member of the channel the card is in (only
    members may act on an incident: bot.policy)."""
    channel = slack.channels.get(row.channel_id or row.card_channel_id or "C0INCIDENTS")
    if member and channel is not None:
        channel.members.add(user)
    body = block_actions(action_id, value or button_value(bot, slack, row, action_id), user=user,
                         channel=row.card_channel_id or "C0INCIDENTS",
                         response_url=slack.response_url(),
                         message={"type": "message", "ts": row.card_ts, "text": "", "blocks": []})
    return post_to_slack_events(bot.url, body)


def pd_incident_id(pagerduty: FakePagerDuty, key: str) -> str:
    found = pagerduty.alert(key)
    assert found is not None, f"PagerDuty has no alert {key}"
    return found.incident_id


def set_clock(clock: FakeClock, when: datetime) -> None:
    clock.advance(seconds=(when - clock()).total_seconds())


def p2_group(instance: str = "api-0") -> dict[str, Any]:
    return group(alert(labels={"severity": "error", "instance": instance}),
                 group_key=f'{{}}:{{alertname="ServiceDown",severity="error",instance="{instance}"}}')


def escalations(bot: RunningBot, incident_id: int) -> list[tuple[str, int | None]]:
    """The page and escalation timers that fired, in order: (kind, level)."""
    return [(t.kind, t.payload.get("level")) for t in timers(bot, incident_id)
            if t.status == TimerStatus.FIRED and t.kind in ("page", "escalate")]


def at_minute(bot: RunningBot, clock: FakeClock, opened: datetime, minute: float) -> None:
    """Move the clock to `minute` minutes after the incident opened (never backwards)."""
    settle(bot)
    set_clock(clock, max(clock(), opened + timedelta(minutes=minute)))


# -- the timetable -------------------------------------------------------------------------------

def test_p1_pages_on_open_then_l3_unacknowledged_at_15_and_l4_unresolved_at_60(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot)
    opened = row.created_at
    key = paging(pd_bot, row.id).dedup_key
    # "escalate at once": the page goes out on open, the clock never moved
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on open")
    assert clock() - opened < timedelta(minutes=1)
    trigger = next(e for e in pagerduty.events if e.dedup_key == key)
    assert trigger.payload["severity"] == "critical" and "ServiceDown on api" in trigger.payload["summary"]
    wait_for(lambda: "U0BOB" in slack.channels[row.channel_id].members, what="L2 on-call (Bob) invited")
    wait_for(lambda: said(slack, row.channel_id, "Paging *L2 primary on-call* through PagerDuty: P1 pages at once"),
             what="the page said in Slack (its own lane, beside PagerDuty's)")
    wait_for(lambda: said(slack, row.channel_id, ":pager: L2 primary on-call: <@U0BOB> invited"), what="the invite")
    wait_for(lambda: "page delivered" in card(slack, row), what="the card to say the page was delivered")
    pd_id = pd_incident_id(pagerduty, key)

    at_minute(pd_bot, clock, opened, 14.8)
    settle(pd_bot)
    assert pagerduty.escalation_level(pd_id) == 1
    at_minute(pd_bot, clock, opened, 15.1)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="escalation to L3 at 15 min")
    wait_for(lambda: "U0CAROL" in slack.channels[row.channel_id].members, what="L3 (Carol) invited")
    assert incident(pd_bot, row.id).status == IncidentStatus.ESCALATED
    assert pagerduty.requests_to(f"/incidents/{pd_id}", "PUT")[-1].headers["from"] == BOT_EMAIL

    at_minute(pd_bot, clock, opened, 59.8)
    settle(pd_bot)
    assert pagerduty.escalation_level(pd_id) == 2
    at_minute(pd_bot, clock, opened, 60.1)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 3, what="escalation to L4 at 60 min")
    wait_for(lambda: "U0ALICE" in slack.channels[row.channel_id].members, what="L4 (Alice) invited")
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == [("page", None), ("escalate", 2), ("escalate", 3)]
    assert actions(pagerduty, key) == ["trigger"]
    assert len(said(slack, row.channel_id, "Escalating to *L3 engineering lead*: not acknowledged 15 min")) == 1
    assert len(said(slack, row.channel_id, "Escalating to *L4 management*: unresolved 60 min")) == 1


def test_p1_acknowledged_at_20_minutes_still_reaches_l4_at_60_while_unresolved(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot)
    opened = row.created_at
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on open")
    at_minute(pd_bot, clock, opened, 15.1)
    pd_id = pd_incident_id(pagerduty, key)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="L3 at 15 min")
    at_minute(pd_bot, clock, opened, 20)
    assert click(pd_bot, slack, ACK, row, "U0CAROL").status_code == 200
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "acknowledge"], what="the ack in PagerDuty")
    at_minute(pd_bot, clock, opened, 59.8)
    settle(pd_bot)
    assert pagerduty.escalation_level(pd_id) == 2  # acknowledged, but L4 is owed to the unresolved
    at_minute(pd_bot, clock, opened, 60.1)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 3, what="L4 at 60 min although acknowledged")
    wait_for(lambda: said(slack, row.channel_id, "Escalating to *L4 management*: unresolved 60 min"), what="L4 said")
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == [("page", None), ("escalate", 2), ("escalate", 3)]
    at_minute(pd_bot, clock, opened, 180)
    settle(pd_bot)
    assert pagerduty.escalation_level(pd_id) == 3 and actions(pagerduty, key) == ["trigger", "acknowledge"]


def test_p2_pages_unacknowledged_at_30_and_reaches_l3_at_60(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot, p2_group())
    assert row.severity == "P2"
    opened = row.created_at
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: "Pages on-call at" in card(slack, row), what="the card to say when it pages")
    at_minute(pd_bot, clock, opened, 29.8)
    settle(pd_bot)
    assert actions(pagerduty, key) == []
    at_minute(pd_bot, clock, opened, 30.1)
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page at 30 min")
    assert next(e for e in pagerduty.events if e.dedup_key == key).payload["severity"] == "error"
    pd_id = pd_incident_id(pagerduty, key)
    at_minute(pd_bot, clock, opened, 59.8)
    settle(pd_bot)
    assert pagerduty.escalation_level(pd_id) == 1
    at_minute(pd_bot, clock, opened, 60.1)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="L3 at 60 min")
    at_minute(pd_bot, clock, opened, 240)
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == [("page", None), ("escalate", 2)]  # P2 stops at L3
    assert pagerduty.escalation_level(pd_id) == 2


@pytest.mark.parametrize("action_id", [ACK, RESOLVE, ESCALATE])
def test_card_buttons_refuse_anyone_outside_the_incident_and_change_nothing(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock, action_id: str) -> None:
    row = open_incident(pd_bot, p2_group())
    assert click(pd_bot, slack, action_id, row, "U0MALLORY", member=False).status_code == 200
    wait_for(lambda: any("Only members of" in text for text in answers(slack)), what="the private refusal")
    settle(pd_bot)
    after = incident(pd_bot, row.id)
    assert (after.status, after.acknowledged_by, after.commander) == (IncidentStatus.DETECTED, None, None)
    assert pagerduty.events == [] and paging(pd_bot, row.id).level == 0


def test_an_incident_without_a_channel_is_steered_by_its_responders_not_by_everyone_in_the_announce_channel(
        database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    config = {**POLICY, "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE"]}]}
    running = start(pd_settings(database_url, slack, pagerduty, config), clock)
    try:
        row = open_incident(running, group(alert(labels={"severity": "warning"})))  # P3: in the card's thread
        assert row.channel_id is None
        wait_for(lambda: incident(running, row.id).responders == ["U0ALICE"], what="the responders recorded")
        # Mallory reads #incidents like everyone, but was not called in
        click(running, slack, ACK, row, "U0MALLORY")
        wait_for(lambda: any("Only this incident's responders" in text for text in answers(slack)), what="refusal")
        assert incident(running, row.id).acknowledged_at is None
        click(running, slack, ACK, row, "U0ALICE")
        wait_for(lambda: incident(running, row.id).acknowledged_by == "U0ALICE", what="the responder's ack")
    finally:
        running.stop()
        running.services.db.dispose()


def test_a_card_button_acts_only_on_the_card_it_is_on(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    first, second = open_incident(pd_bot, p2_group("api-0")), open_incident(pd_bot, p2_group("api-1"))
    # The second card's Resolve value, sent from the first card (a signed request Slack would send
    # if that value were put on the first message), and values made up from the incident's id.
    stolen = button_value(pd_bot, slack, second, RESOLVE)
    forged = [str(second.id), f"{second.id}.0", f"{second.id}-{int(second.created_at.timestamp())}.0", ".0"]
    for value in [stolen, *forged]:
        assert click(pd_bot, slack, RESOLVE, first, "U0ALICE", value=value).status_code == 200
    wait_for(lambda: len(answers(slack)) == 1 + len(forged), what="a refusal for each")
    assert any("not on this incident's card" in text for text in answers(slack))
    assert sum("does not belong to an incident" in text for text in answers(slack)) == len(forged)
    settle(pd_bot)
    assert [incident(pd_bot, r.id).status for r in (first, second)] == [IncidentStatus.DETECTED] * 2


def _raw_click(bot: RunningBot, slack: FakeSlack, row: Incident, user: str) -> bytes:
    slack.channels[row.channel_id or row.card_channel_id or ""].members.add(user)
    return block_actions(ESCALATE, button_value(bot, slack, row, ESCALATE), user=user, channel=row.card_channel_id
                         or "", response_url=slack.response_url(),
                         message={"type": "message", "ts": row.card_ts, "text": "", "blocks": []})


def test_escalate_now_climbs_one_level_however_often_the_click_arrives(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot, p2_group())  # P2: nobody paged for 30 minutes
    key = paging(pd_bot, row.id).dedup_key
    # One signed click delivered three times: Slack retries when its 3 s pass without an answer.
    body = _raw_click(pd_bot, slack, row, "U0ALICE")
    for retry in range(3):
        headers = {**signed_headers(body), **({"X-Slack-Retry-Num": str(retry)} if retry else {})}
        assert httpx.post(f"{pd_bot.url}/slack/events", content=body, headers=headers, timeout=10).status_code == 200
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on request")
    settle(pd_bot)
    assert paging(pd_bot, row.id).level == 1 and actions(pagerduty, key) == ["trigger"]
    # Two people click "Escalate now" on the same card at the same moment: one level, not two.
    clicks = [_raw_click(pd_bot, slack, row, user) for user in ("U0ALICE", "U0BOB")]
    replies: list[int] = []
    threads = [threading.Thread(target=lambda b=b: replies.append(post_to_slack_events(pd_bot.url, b).status_code))
               for b in clicks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == [200, 200]
    pd_id = pd_incident_id(pagerduty, key)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="one escalation")
    wait_for(lambda: any("Not escalated again" in text for text in answers(slack)), what="the other told why")
    settle(pd_bot)
    assert paging(pd_bot, row.id).level == 2 and pagerduty.escalation_level(pd_id) == 2


def test_ack_in_slack_before_the_deadline_means_nobody_is_paged(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot, p2_group())  # P2: paged only when unacknowledged at 30 min
    reply = click(pd_bot, slack, ACK, row, "U0CAROL")
    assert reply.status_code == 200
    wait_for(lambda: incident(pd_bot, row.id).acknowledged_by == "U0CAROL", what="the ack")
    assert incident(pd_bot, row.id).commander == "U0CAROL"
    advance(pd_bot, clock, hours=2)
    settle(pd_bot)
    assert pagerduty.events == []
    kinds = {t.kind: t.status for t in timers(pd_bot, row.id)}
    assert kinds["page"] == TimerStatus.CANCELLED
    with pd_bot.services.db.read() as session:
        entry = session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == row.id,
                                                            TimelineEntry.kind == "ack")).one()
    assert entry.actor == "U0CAROL"
    wait_for(lambda: "Ack" not in [e["text"]["text"] for b in json.loads(card(slack, incident(pd_bot, row.id)))
                                   if b["type"] == "actions" for e in b["elements"] if e["type"] == "button"],
             what="the Ack button to go")


def test_ack_after_the_page_acknowledges_in_pagerduty_and_stops_escalation(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot, p2_group())
    key = paging(pd_bot, row.id).dedup_key
    advance(pd_bot, clock, minutes=31)
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page")
    assert click(pd_bot, slack, ACK, row, "U0BOB").status_code == 200
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "acknowledge"], what="the ack in PagerDuty")
    assert pagerduty.alert(key).status == "acknowledged"  # type: ignore[union-attr]
    advance(pd_bot, clock, hours=2)
    settle(pd_bot)
    assert pagerduty.escalation_level(pd_incident_id(pagerduty, key)) == 1
    assert [t.status for t in timers(pd_bot, row.id, "escalate")] == [TimerStatus.CANCELLED]
    # a second click changes nothing and says so, only to the one who clicked
    assert click(pd_bot, slack, ACK, row, "U0BOB").status_code == 200
    wait_for(lambda: any("Already acknowledged by <@U0BOB>" in text for text in answers(slack)),
             what="the ephemeral answer")
    assert actions(pagerduty, key) == ["trigger", "acknowledge"]


def test_p1_acknowledged_before_l3_skips_l3_and_still_reaches_l4_at_60(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot)
    opened, key = row.created_at, paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on open")
    at_minute(pd_bot, clock, opened, 5)
    click(pd_bot, slack, ACK, row, "U0BOB")
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "acknowledge"], what="the ack in PagerDuty")
    at_minute(pd_bot, clock, opened, 59.8)
    settle(pd_bot)
    pd_id = pd_incident_id(pagerduty, key)
    assert pagerduty.escalation_level(pd_id) == 1  # L3 climbs only while unacknowledged
    at_minute(pd_bot, clock, opened, 60.1)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 3, what="L4 at 60 min, straight from L2")
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == [("page", None), ("escalate", 3)]


def test_resolve_button_stops_timers_and_resolves_pagerduty(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot)
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page")
    assert click(pd_bot, slack, RESOLVE, row, "U0ALICE").status_code == 200
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "resolve"], what="the resolve in PagerDuty")
    resolved_row = incident(pd_bot, row.id)
    assert resolved_row.status == IncidentStatus.RESOLVED and resolved_row.resolved_by == "U0ALICE"
    advance(pd_bot, clock, hours=3)
    settle(pd_bot)
    assert all(t.status != TimerStatus.PENDING for t in timers(pd_bot, row.id))
    assert pagerduty.escalation_level(pd_incident_id(pagerduty, key)) == 1
    wait_for(lambda: "incident_actions" not in card(slack, incident(pd_bot, row.id)), what="buttons gone")


def test_alertmanager_resolve_resolves_pagerduty_and_a_reopen_rearms(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    payload = group()
    row = open_incident(pd_bot, payload)
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page")
    click(pd_bot, slack, ACK, row, "U0BOB")
    # Bolt answers Slack before the listener's transaction: the ack must land before the resolve
    wait_for(lambda: incident(pd_bot, row.id).acknowledged_at, what="the ack")
    assert pd_bot.post_alerts(resolved(payload)).json()["outcome"] == "resolved"
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "acknowledge", "resolve"], what="PagerDuty resolved")

    advance(pd_bot, clock, minutes=5)
    assert pd_bot.post_alerts(payload).json()["outcome"] == "reopened"
    reopened = incident(pd_bot, row.id)
    assert reopened.acknowledged_at is None
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "acknowledge", "resolve", "trigger"],
             what="the reopened P1 paged again at once")
    assert len({i["id"] for i in pagerduty.incidents()}) == 2  # a new PagerDuty incident for the new episode


def test_escalate_now_pages_at_once_then_climbs_one_level_per_click(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot, p2_group())  # P2: nobody is paged for 30 minutes
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: "Page now" in card(slack, row), what="the Page now button")
    click(pd_bot, slack, ESCALATE, row, "U0ALICE")
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on request")
    # said in the incident's Slack lane, which runs beside the PagerDuty lane: wait for it
    wait_for(lambda: said(slack, row.channel_id, "<@U0ALICE> escalated by hand"), what="the page said in Slack")
    click(pd_bot, slack, ESCALATE, row, "U0ALICE")
    pd_id = pd_incident_id(pagerduty, key)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="L3 on request")
    click(pd_bot, slack, ESCALATE, row, "U0ALICE")
    wait_for(lambda: any("Nothing to escalate" in text for text in answers(slack)), what="top level reached")


def test_escalate_now_restarts_the_timetable_from_the_click(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot)
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on open")
    pd_id = pd_incident_id(pagerduty, key)
    advance(pd_bot, clock, minutes=5)
    clicked = clock()
    click(pd_bot, slack, ESCALATE, row, "U0ALICE")
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="L3 on request")
    # L4 comes 45 minutes after the click (60 - 15 on the P1 ladder), not 60 after the page
    at_minute(pd_bot, clock, clicked, 44.8)
    settle(pd_bot)
    assert pagerduty.escalation_level(pd_id) == 2
    at_minute(pd_bot, clock, clicked, 45.1)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 3, what="L4 on the restarted timetable")
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == [("page", None), ("escalate", 3)]  # L3 was the click's


# -- maintenance, business hours, reminders -----------------------------------------------------

@pytest.mark.parametrize("declared", ["config", "command"])
def test_maintenance_window_pages_nobody_and_the_card_says_why(
        declared: str, database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    now = clock()
    window = {"name": "db upgrade", "match": {"service": "api"}, "start": now - timedelta(hours=1),
              "end": now + timedelta(hours=1)}
    config = {**POLICY, "escalation": {"maintenance": [window]}} if declared == "config" else POLICY
    running = start(pd_settings(database_url, slack, pagerduty, config), clock)
    try:
        if declared == "command":
            with running.services.db.session() as session:
                add_maintenance(session, "db upgrade", {"service": "api"}, window["start"], window["end"], "U0ALICE",
                                now=clock())
        row = open_incident(running)
        key = paging(running, row.id).dedup_key
        wait_for(lambda: "Maintenance window *db upgrade*" in card(slack, row), what="the card to say why")
        assert "nobody is paged" in card(slack, row)
        advance(running, clock, minutes=20)
        wait_for(lambda: said(slack, row.channel_id, "Not paging: maintenance window *db upgrade*"), what="the note")
        settle(running)
        assert actions(pagerduty, key) == []
        assert "nobody is paged" in card(slack, incident(running, row.id))
        # still unacknowledged when the window ends: now it pages
        advance(running, clock, minutes=45)
        wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page after the window")
        # an alert of another service was never in the window
        other = open_incident(running, group(alert(labels={"service": "web"}), group_key='{}:{service="web"}'))
        assert "Maintenance window" not in card(slack, other)
    finally:
        running.stop()
        running.services.db.dispose()


def test_cancelling_a_window_releases_the_pages_it_held(
        database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    running = start(pd_settings(database_url, slack, pagerduty), clock)
    try:
        now = clock()
        with running.services.db.session() as session:
            window = add_maintenance(session, "db upgrade", {}, now - timedelta(hours=1), now + timedelta(hours=4),
                                     "U0ALICE", now=now)
            session.flush()
            window_id = window.id
        row = open_incident(running)
        key = paging(running, row.id).dedup_key
        advance(running, clock, minutes=20)
        wait_for(lambda: said(slack, row.channel_id, "Not paging: maintenance window"), what="the held page")
        settle(running)
        assert actions(pagerduty, key) == []
        with running.services.db.session() as session:
            assert cancel_maintenance(session, session.get(MaintenanceWindow, window_id), clock()) == 1
        # cancelled three and a half hours early: the page goes out now, not at the window's end
        wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page once the window is cancelled")
    finally:
        running.stop()
        running.services.db.dispose()


def test_adding_or_cancelling_a_window_refreshes_the_cards_it_covers_at_once(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    covered = open_incident(pd_bot, p2_group("api-0"))
    other = open_incident(pd_bot, group(alert(labels={"severity": "error", "service": "web"}),
                                        group_key='{}:{service="web",severity="error"}'))
    for row in (covered, other):
        wait_for(lambda row=row: "Pages on-call at" in card(slack, row), what="the card to say when it pages")
    settle(pd_bot)
    with pd_bot.services.db.session() as session:
        window = add_maintenance(session, "db upgrade", {"service": "api"}, clock() - timedelta(minutes=1),
                                 clock() + timedelta(hours=2), "cli:alice", now=clock())
        session.flush()
        window_id = window.id
    # the clock does not move and no timer fires: only the window's change can update the card
    wait_for(lambda: "Maintenance window *db upgrade*" in card(slack, incident(pd_bot, covered.id)),
             what="the covered card to show the window")
    settle(pd_bot)
    assert "Pages on-call at" not in card(slack, incident(pd_bot, covered.id))
    assert "Maintenance window" not in card(slack, incident(pd_bot, other.id))
    with pd_bot.services.db.session() as session:
        assert cancel_maintenance(session, session.get(MaintenanceWindow, window_id), clock()) == 0
    wait_for(lambda: "Maintenance window" not in card(slack, incident(pd_bot, covered.id)),
             what="the window to leave the card")
    assert "Pages on-call at" in card(slack, incident(pd_bot, covered.id))
    assert actions(pagerduty, paging(pd_bot, covered.id).dedup_key) == []


def test_without_pagerduty_the_card_says_nobody_will_be_paged_from_the_start(
        database_url: str, slack: FakeSlack, clock: FakeClock) -> None:
    running = start(make_settings(database_url, slack, OncallConfig.model_validate(POLICY)), clock)
    try:
        p2 = open_incident(running, p2_group())
        p1 = open_incident(running)
        for row in (p2, p1):
            wait_for(lambda row=row: "Nobody will be paged: PagerDuty is not configured"
                     in card(slack, incident(running, row.id)),
                     what=f"the {row.severity} card to say nobody will be paged")
        settle(running)
        for row in (p2, p1):
            text = card(slack, incident(running, row.id))
            assert "Pages on-call at" not in text and "page pending" not in text
            assert text.count("Nobody will be paged") == 1 and "Maintenance" not in text
        assert said(slack, p1.channel_id, "Should page *L2 primary on-call*")  # the P1 page came due at once
    finally:
        running.stop()
        running.services.db.dispose()


def test_p3_outside_business_hours_waits_for_the_next_business_day(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    friday = upcoming(clock(), 4, 16)  # a Friday, 16:00 UTC
    set_clock(clock, friday)
    row = open_incident(pd_bot, group(alert("HighLatency", labels={"severity": "warning"}),
                                      group_key='{}:{alertname="HighLatency"}'))
    assert row.severity == "P3" and row.channel_id is None
    key = paging(pd_bot, row.id).dedup_key
    monday = friday + timedelta(days=2, hours=17)  # 09:00
    assert [t.due_at for t in timers(pd_bot, row.id, "page")] == [monday]  # the 4 h deadline falls at 20:00
    set_clock(clock, friday + timedelta(hours=19))  # Saturday 11:00
    settle(pd_bot)
    set_clock(clock, monday - timedelta(seconds=10))
    settle(pd_bot)
    assert actions(pagerduty, key) == []
    set_clock(clock, monday + timedelta(seconds=5))
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the Monday page")
    assert next(e for e in pagerduty.events if e.dedup_key == key).payload["severity"] == "warning"
    wait_for(lambda: any("<@U0BOB>" in m.text for m in slack.messages("C0INCIDENTS") if m.thread_ts == row.card_ts),
             what="the on-call named in the incident's thread")


def test_status_update_reminders_at_the_cadence_name_the_commander(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot, p2_group())  # P2: updates every 30 min
    click(pd_bot, slack, ACK, row, "U0ALICE")
    wait_for(lambda: incident(pd_bot, row.id).commander == "U0ALICE", what="the acker in command")
    for expected in (1, 2, 3):
        advance(pd_bot, clock, minutes=30)
        wait_for(lambda expected=expected: len(said(slack, row.channel_id, "Status update due")) == expected,
                 what=f"reminder {expected}")
        settle(pd_bot)
        assert len(said(slack, row.channel_id, "Status update due")) == expected
    assert all("<@U0ALICE>" in text for text in said(slack, row.channel_id, "Status update due"))
    assert pagerduty.events == []  # acknowledged in time: reminders, but no page


# -- durability: restarts, replicas, PagerDuty outages ------------------------------------------

def test_restart_with_pending_timers_fires_each_once_with_its_lateness(
        database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    settings = pd_settings(database_url, slack, pagerduty)
    first = start(settings, clock)
    row = open_incident(first, p2_group())  # P2: the page is 30 min away when the bot goes down
    key = paging(first, row.id).dedup_key
    first.stop()
    first.services.db.dispose()
    assert {t.kind for t in timers(first, row.id) if t.status == TimerStatus.PENDING} == {"page", "reminder"}

    clock.advance(hours=2)  # the bot was down past the deadline and the escalation step
    second = start(settings, clock)
    try:
        wait_for(lambda: pagerduty.alert(key) and pagerduty.escalation_level(pd_incident_id(pagerduty, key)) == 2,
                 what="the page and the escalation after the restart")
        settle(second)
        fired = [t for t in timers(second, row.id) if t.status == TimerStatus.FIRED]
        assert sorted((t.kind, t.payload.get("level")) for t in fired if t.kind != "reminder") == \
            [("escalate", 2), ("page", None)]
        page = next(t for t in fired if t.kind == "page")
        assert 89 * 60 < (page.lateness_seconds or 0) < 95 * 60  # due 30 min in, fired 2 h in
        assert all(t.lateness_seconds is not None and t.fired_at is not None for t in fired)
        assert len([t for t in fired if t.kind == "reminder"]) == 1  # one late reminder, not four
        assert actions(pagerduty, key) == ["trigger"]
    finally:
        second.stop()
        second.services.db.dispose()


def test_two_replicas_on_postgresql_page_once_per_deadline(
        postgres_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    from bot.incidents import ingest
    from integrations.alertmanager import WebhookMessage

    # Twenty incidents at once: storm mode off, or most would join one storm (tests/test_storm.py).
    settings = pd_settings(postgres_url, slack, pagerduty, {**POLICY, "storm": {"enabled": False}})
    replicas = [build(settings, clock=clock), build(settings, clock=clock)]  # two engines, one database
    try:
        ids = []
        for n in range(20):
            message = WebhookMessage.model_validate(group(alert(labels={"instance": f"api-{n}"}),
                                                          group_key=f'{{}}:{{instance="api-{n}"}}'))
            with replicas[0].db.session() as session:
                ids.append(ingest(session, settings.config, message, now=clock()).incident_id)
        clock.advance(seconds=30)  # P1 pages on open: every page is due, no escalation yet
        for replica in replicas:
            replica.timers.batch = 3  # small batches: the replicas interleave
        fire_side_by_side(replicas)
        with replicas[1].db.read() as session:
            triggers = [j for j in session.scalars(select(Job).where(Job.kind == JOB_PD_EVENT))]
            pages = list(session.scalars(select(Timer).where(Timer.kind == "page")))
        assert sorted(j.incident_id for j in triggers) == sorted(ids)  # type: ignore[type-var]
        assert all(t.status == TimerStatus.FIRED for t in pages) and len(pages) == 20
        asyncio.run(_drain(replicas[1]))
        with pagerduty.lock:
            keys = [e.dedup_key for e in pagerduty.events if e.action == "trigger"]
        assert len(keys) == len(set(keys)) == 20
    finally:
        for replica in replicas:
            replica.db.dispose()


async def _drain(services) -> None:  # type: ignore[no-untyped-def]
    while await services.outbox.run_due():
        pass


def test_pagerduty_down_then_back_delivers_every_event_once_in_order(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    rows = [open_incident(pd_bot, p2_group(f"api-{n}")) for n in range(3)]  # P2: paged at 30 min
    keys = [paging(pd_bot, row.id).dedup_key for row in rows]
    pagerduty.set_down(True)
    advance(pd_bot, clock, minutes=31)
    wait_for(lambda: all("page pending" in card(slack, incident(pd_bot, r.id)) for r in rows),
             what="every card to say the page is pending")
    wait_for(lambda: "retrying: PagerDuty 503" in card(slack, incident(pd_bot, rows[0].id)), what="the reason")
    click(pd_bot, slack, ACK, rows[0], "U0BOB")
    click(pd_bot, slack, RESOLVE, rows[1], "U0BOB")
    click(pd_bot, slack, ACK, rows[2], "U0BOB")
    wait_for(lambda: incident(pd_bot, rows[2].id).acknowledged_at, what="the third ack")
    click(pd_bot, slack, RESOLVE, rows[2], "U0BOB")
    wait_for(lambda: incident(pd_bot, rows[2].id).status == IncidentStatus.RESOLVED, what="the third resolve")
    # Ten minutes down, in steps shorter than a job's lease, so every retry comes due and fails.
    for _ in range(10):
        clock.advance(minutes=1)
        wait_for(lambda: _waiting(pd_bot, clock), what="the due retries to fail again")
    assert pagerduty.events == []
    assert min(j.attempts for j in _pd_jobs(pd_bot) if j.kind == JOB_PD_EVENT and j.payload["action"] == "trigger") >= 4

    pagerduty.set_down(False)
    expected = [["trigger", "acknowledge"], ["trigger", "resolve"], ["trigger", "acknowledge", "resolve"]]
    for _ in range(5):  # every backoff (at most a minute) runs out
        clock.advance(minutes=1)
        if [actions(pagerduty, k) for k in keys] == expected:
            break
        wait_for(lambda: _waiting(pd_bot, clock), what="the due jobs to run")
    wait_for(lambda: [actions(pagerduty, k) for k in keys] == expected, what="every event, in order")
    settle(pd_bot)
    assert [actions(pagerduty, k) for k in keys] == expected
    assert all(j.status == JobStatus.DONE for j in _pd_jobs(pd_bot) if j.kind == JOB_PD_EVENT)
    wait_for(lambda: "page delivered" in card(slack, incident(pd_bot, rows[0].id)), what="the card: delivered")


def _waiting(bot: RunningBot, clock: FakeClock) -> bool:
    """Every PagerDuty job that could run has run: the first pending one of each lane is not due."""
    heads: dict[object, Job] = {}
    for job in _pd_jobs(bot):
        if job.status == JobStatus.RUNNING:
            return False
        if job.status == JobStatus.PENDING:
            lane = job.incident_id if job.incident_id is not None else f"job-{job.id}"
            heads.setdefault(lane, job)
    return all(job.run_at > clock() for job in heads.values())


def _pd_jobs(bot: RunningBot) -> list[Job]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Job).where(Job.kind.like("pagerduty.%")).order_by(Job.id)))  # type: ignore[attr-defined]


def test_pagerduty_429_is_retried_after_retry_after_and_delivered_once(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot, p2_group())
    key = paging(pd_bot, row.id).dedup_key
    pagerduty.fail_next("/v2/enqueue", 429, times=3, retry_after=1)
    advance(pd_bot, clock, minutes=31)
    started = time.monotonic()
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page after the rate limit")
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured between the attempts
    job = wait_for(lambda: next((j for j in _pd_jobs(pd_bot) if j.payload.get("action") == "trigger"
                                 and j.status == JobStatus.DONE), None), what="the job done")
    assert job.attempts == 2
    assert len(pagerduty.requests_to("/v2/enqueue")) == 4  # two tries per attempt (one quick retry inside)


# -- PagerDuty webhooks in -----------------------------------------------------------------------

def test_signed_pagerduty_webhooks_are_applied_and_unsigned_ones_change_nothing(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot)
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on open")
    pd_id = pd_incident_id(pagerduty, key)
    url = f"{pd_bot.url}/pagerduty"

    before = _timeline(pd_bot, row.id)
    assert httpx.post(url, json={"event": {"event_type": "incident.acknowledged"}}).status_code == 401
    assert pagerduty.send_webhook(url, "not-the-secret", "incident.acknowledged", pd_id, agent="PBOB") == 401
    assert pagerduty.send_webhook(url, "not-the-secret", "incident.resolved", pd_id, agent="PBOB") == 401
    unchanged = incident(pd_bot, row.id)
    assert unchanged.acknowledged_at is None and unchanged.status == IncidentStatus.DETECTED
    assert _timeline(pd_bot, row.id) == before

    # acknowledged in the PagerDuty app: the incident, card and timeline follow, nothing echoes back
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.acknowledged", pd_id, agent="PBOB") == 200
    acked = incident(pd_bot, row.id)
    assert acked.acknowledged_at is not None and paging(pd_bot, row.id).acked_in_pagerduty_by == "Bob"
    wait_for(lambda: "Acknowledged in PagerDuty by Bob" in card(slack, incident(pd_bot, row.id)), what="card")
    # reassigned and escalated in PagerDuty: the new people are invited into the channel
    rest = PagerDutyRest(pagerduty.api_token, default_from=BOT_EMAIL, base_url=pagerduty.base_url,
                         verify=pagerduty.ca_file)
    rest.escalate(pd_id, 2)
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.escalated", pd_id) == 200
    wait_for(lambda: "U0CAROL" in slack.channels[row.channel_id].members, what="Carol invited")
    rest.escalate(pd_id, 3)
    rest.close()
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.reassigned", pd_id) == 200
    wait_for(lambda: "U0ALICE" in slack.channels[row.channel_id].members, what="Alice invited")
    wait_for(lambda: said(slack, row.channel_id, "Reassigned in PagerDuty: now with Alice"), what="the note")
    # resolved in PagerDuty
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.resolved", pd_id, agent="PCAROL") == 200
    done = incident(pd_bot, row.id)
    assert done.status == IncidentStatus.RESOLVED and done.resolved_by == "pagerduty:Carol"
    settle(pd_bot)
    assert actions(pagerduty, key) == ["trigger"]  # no acknowledge or resolve echoed back
    assert all(t.status != TimerStatus.PENDING for t in timers(pd_bot, row.id))
    assert {"ack", "escalated", "reassigned", "status"} <= set(_timeline(pd_bot, row.id))


def replay(url: str, sent: Any) -> httpx.Response:
    """Deliver a webhook the fake sent once more, byte for byte (a PagerDuty retry or a replay)."""
    return httpx.post(url, content=sent.body, headers=sent.headers, trust_env=False)


def test_a_resolved_webhook_delivered_again_after_a_reopen_changes_nothing(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    payload = group()
    row = open_incident(pd_bot, payload)
    key, url = paging(pd_bot, row.id).dedup_key, f"{pd_bot.url}/pagerduty"
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page")
    old_pd_id = pd_incident_id(pagerduty, key)
    assert pd_bot.post_alerts(resolved(payload)).json()["outcome"] == "resolved"
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "resolve"], what="PagerDuty resolved")
    # PagerDuty tells us it resolved: the first delivery is taken (nothing left to change)
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.resolved", old_pd_id) == 200
    first = pagerduty.webhooks[-1]

    advance(pd_bot, clock, minutes=5)
    assert pd_bot.post_alerts(payload).json()["outcome"] == "reopened"
    wait_for(lambda: actions(pagerduty, key) == ["trigger", "resolve", "trigger"], what="the new episode paged")
    settle(pd_bot)
    pending = {t.id for t in timers(pd_bot, row.id) if t.status == TimerStatus.PENDING}
    assert pending  # L3, L4, the reminder

    # PagerDuty retries the same event (same id): a duplicate, answered 200, nothing changes
    again = replay(url, first)
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")
    # the same old event under a new id (a replay from PagerDuty's log): older than this episode
    stale = pagerduty.send_webhook(url, PD_SECRET, "incident.resolved", old_pd_id,
                                   occurred_at=clock() - timedelta(minutes=4))
    assert stale == 200 and _outcome(pd_bot, pagerduty) == "stale"
    settle(pd_bot)
    now_row = incident(pd_bot, row.id)
    assert now_row.is_open and now_row.status != IncidentStatus.RESOLVED
    assert pending <= {t.id for t in timers(pd_bot, row.id) if t.status == TimerStatus.PENDING}
    assert actions(pagerduty, key) == ["trigger", "resolve", "trigger"]
    assert paging(pd_bot, row.id).pd_incident_id != old_pd_id  # the old incident's id was not taken back
    # the new episode still climbs on its timetable
    new_pd_id = pd_incident_id(pagerduty, key)
    advance(pd_bot, clock, minutes=16)
    wait_for(lambda: pagerduty.escalation_level(new_pd_id) == 2, what="L3 for the new episode")


def test_pagerduty_events_out_of_order_apply_only_the_newest(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    row = open_incident(pd_bot)
    key, url = paging(pd_bot, row.id).dedup_key, f"{pd_bot.url}/pagerduty"
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page")
    pd_id = pd_incident_id(pagerduty, key)
    advance(pd_bot, clock, minutes=5)
    acked_at = clock()
    # PagerDuty acknowledged at minute 5; the "resolved" of minute 4 arrives after it
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.acknowledged", pd_id, agent="PBOB",
                                  occurred_at=acked_at) == 200
    assert _outcome(pd_bot, pagerduty) == "applied"
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.resolved", pd_id, agent="PCAROL",
                                  occurred_at=acked_at - timedelta(minutes=1)) == 200
    assert _outcome(pd_bot, pagerduty) == "stale"
    row_now = incident(pd_bot, row.id)
    assert row_now.is_open and row_now.acknowledged_at is not None and row_now.resolved_by is None
    # a newer event still applies
    assert pagerduty.send_webhook(url, PD_SECRET, "incident.resolved", pd_id, agent="PCAROL",
                                  occurred_at=acked_at + timedelta(seconds=1)) == 200
    assert _outcome(pd_bot, pagerduty) == "applied"
    assert incident(pd_bot, row.id).resolved_by == "pagerduty:Carol"


def _outcome(bot: RunningBot, pagerduty: FakePagerDuty) -> str:
    """What the bot recorded of the fake's newest webhook event."""
    event_id = json.loads(pagerduty.webhooks[-1].body)["event"]["id"]
    with bot.services.db.read() as session:
        row = session.get(PagerDutyWebhookEvent, event_id)
        return row.outcome if row else "not recorded"


def _timeline(bot: RunningBot, incident_id: int) -> list[str]:
    with bot.services.db.read() as session:
        return [e.kind for e in session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id))]


# -- the policy ----------------------------------------------------------------------------------

def test_policy_defaults_follow_the_seeds() -> None:
    policy = EscalationPolicy()
    p1 = policy.P1
    assert (p1.ack_minutes, p1.page_minutes, p1.update_minutes) == (15, 0, 15)  # "escalate at once"
    assert [(lv.name, lv.after_minutes, lv.pagerduty_level, lv.condition(p1)) for lv in p1.levels] == [
        ("L2 primary on-call", 0, 1, "unacknowledged"), ("L3 engineering lead", 15, 2, "unacknowledged"),
        ("L4 management", 60, 3, "unresolved")]
    p2 = policy.P2  # "escalate after an hour": paged at 30, L3 30 min later
    assert (p2.ack_minutes, p2.page_minutes, [lv.after_minutes for lv in p2.levels]) == (30, 30, [0, 30])
    assert (policy.P3.page_minutes, policy.P3.business_hours_only) == (240, True)
    assert (policy.P4.page_minutes, policy.P4.levels) == (None, [])


def test_policy_overrides_keep_the_other_defaults(tmp_path, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    monday = upcoming(clock(), 0, 10)  # 19:00 in Tokyo
    config = OncallConfig.model_validate({"escalation": {
        "P1": {"ack_minutes": 5}, "P2": {"page_after_minutes": 0, "escalate_while": "unresolved"},
        "P3": {"ack_minutes": 60},
        "business_hours": {"timezone": "Asia/Tokyo", "start": "10:00",
                           "holidays": [(monday + timedelta(days=1)).date().isoformat()]}}})
    assert (config.escalation.P1.ack_minutes, config.escalation.P1.page_minutes,
            config.escalation.P1.update_minutes) == (5, 0, 15)  # still pages on open
    assert config.escalation.P3.page_minutes == 60  # the deadline moved with ack_minutes
    assert config.escalation.P2.levels[1].condition(config.escalation.P2) == "unresolved"
    assert config.escalation.P2.page_minutes == 0 and len(config.escalation.P2.levels) == 2
    hours = config.escalation.business_hours
    # Monday 19:00 Tokyo is after hours; Tuesday is a holiday; Wednesday 10:00 Tokyo = 01:00 UTC
    assert hours.next_open(monday) == monday + timedelta(days=1, hours=15)
    path = tmp_path / "oncall.yaml"
    path.write_text("escalation:\n  P1:\n    levels:\n      - {name: a, after_minutes: 0, pagerduty_level: 1}\n"
                    "      - {name: b, after_minutes: 0, pagerduty_level: 2}\n"
                    "  P4: {page_after_minutes: ack_deadline}\n")
    with pytest.raises(ConfigError) as error:
        from bot.config import load_config_file
        load_config_file(path)
    assert "escalation.P1.levels" in str(error.value) and "escalation.P4" in str(error.value)
    path.write_text("escalation:\n  P2:\n    levels:\n      - {name: a, after_minutes: 0, pagerduty_level: 1}\n"
                    "      - {name: b, after_minutes: 90, pagerduty_level: 2, while: unresolved}\n")
    p2 = load_config_file(path).escalation.P2
    assert [lv.condition(p2) for lv in p2.levels] == ["unacknowledged", "unresolved"]


def test_pagerduty_routes_and_environment() -> None:
    config = OncallConfig.model_validate({"pagerduty": {"escalation_policy": "PDEFAULT", "routes": [
        {"match": {"team": "payments"}, "routing_key": "P" * 32, "escalation_policy": "PPAY"},
        {"match": {"service": "db.*"}, "escalation_policy": "PDBA"}]}})
    assert config.pagerduty.route({"team": "payments", "service": "db-main"}) == ("P" * 32, "PPAY")
    assert config.pagerduty.route({"service": "db-main"}) == (None, "PDBA")
    assert config.pagerduty.route({}) == (None, "PDEFAULT")
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "ALERTMANAGER_WEBHOOK_TOKEN": "t"}
    with pytest.raises(ConfigError, match="PAGERDUTY_ROUTING_KEY must be the 32-character"):
        load_settings({**env, "PAGERDUTY_ROUTING_KEY": "short"})
    with pytest.raises(ConfigError, match="PAGERDUTY_FROM_EMAIL is not set"):
        load_settings({**env, "PAGERDUTY_API_TOKEN": "tok"})
    with pytest.raises(ConfigError, match=re.escape("PAGERDUTY_API_URL='http://pd.local'")):
        load_settings({**env, "PAGERDUTY_API_URL": "http://pd.local"})
    settings = load_settings({**env, "PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "PAGERDUTY_API_TOKEN": "tok",
                              "PAGERDUTY_FROM_EMAIL": BOT_EMAIL, "PAGERDUTY_WEBHOOK_SECRET": PD_SECRET})
    assert (settings.pagerduty_routing_key, settings.pagerduty_events_url) == (ROUTING_KEY, "https://events.pagerduty.com")
    from bot.paging import effective_config
    assert effective_config(settings).pagerduty.route({}) == (ROUTING_KEY, None)  # the env key is the default


def test_a_click_without_a_message_does_not_act_on_an_incident_whose_card_is_not_recorded_yet(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    """A card posted but whose ts is not recorded yet (the post's answer lost) has no (channel, ts):
    a signed click carrying no container must not match that (None, None)."""
    row = open_incident(pd_bot, p2_group("api-0"))
    value = button_value(pd_bot, slack, row, RESOLVE)
    with pd_bot.services.db.session() as session:
        found = session.get(Incident, row.id)
        assert found is not None
        found.card_channel_id, found.card_ts = None, None
    payload = json.loads(parse_qs(block_actions(RESOLVE, value, user="U0ALICE", response_url=slack.response_url())
                                  .decode())["payload"][0])
    del payload["container"]
    body = urlencode({"payload": json.dumps(payload)}).encode()
    assert post_to_slack_events(pd_bot.url, body).status_code == 200
    wait_for(lambda: any("not on this incident's card" in text for text in answers(slack)), what="the refusal")
    assert incident(pd_bot, row.id).status == IncidentStatus.DETECTED  # refused before the listener ran
