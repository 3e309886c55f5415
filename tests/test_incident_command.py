"""`/incident` and `/oncall` through signed slash commands to the running bot.

Each answer is read where Slack would show it: the acknowledgement's body, or (when the answer
takes longer than the bot allows itself before acknowledging) the command's response_url, which
the Slack fake records. Effects are checked in the database, on the incident's card and in
PagerDuty (its fake, over TLS).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from bot.config import OncallConfig
from bot.models import Incident, IncidentStatus, Job, JobStatus, Paging, TimelineEntry, Timer, TimerStatus
from commands.incident_command import TIMELINE_PAGE
from commands.slash import ANSWER_WITHIN, LOCALE_WITHIN
from tests.alerts import alert, group
from tests.conftest import FakeClock, RunningBot, make_settings, open_with_card, start_bot, wait_for
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.slack_requests import post_to_slack_events, slash_command

S = IncidentStatus
ROUTING_KEY = "R0UTINGKEY0FTHEPAYMENTSSERVICE00"
BOT_EMAIL = "oncall-bot@example.com"


# -- helpers -------------------------------------------------------------------------------------

def answer_text(message: dict[str, Any]) -> str:
    """Everything a person reads in an answer: its text, or its sections when it has blocks."""
    if message.get("blocks"):
        return "\n".join(b["text"]["text"] for b in message["blocks"] if b.get("type") == "section")
    return str(message["text"])


def ask(bot: RunningBot, slack: FakeSlack, text: str, *, channel: str, user: str = "U0ALICE",
        command: str = "/incident") -> str:
    """Type `command text` in `channel` as `user`; the private answer, from wherever it came."""
    url = slack.response_url("commands")
    path = url.split(str(slack.port), 1)[1]
    started = time.monotonic()
    reply = post_to_slack_events(bot.url, slash_command(command, text, user=user, channel=channel, response_url=url))
    assert reply.status_code == 200, reply.text
    assert time.monotonic() - started < 3, "Slack wants the acknowledgement within 3 s"
    if reply.content:
        body = reply.json()
        assert body["response_type"] == "ephemeral"
        return answer_text(body)
    message = wait_for(lambda: next((m for p, m in list(slack.responses) if p == path), None),
                       what="the answer through response_url")
    assert message["response_type"] == "ephemeral"
    return answer_text(message)


def incident(bot: RunningBot, incident_id: int | None) -> Incident:
    with bot.services.db.read() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        return row


def timeline(bot: RunningBot, incident_id: int | None) -> list[TimelineEntry]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
                                    .order_by(TimelineEntry.at, TimelineEntry.id)))


def timers(bot: RunningBot, incident_id: int | None, status: TimerStatus | None = None) -> list[Timer]:
    with bot.services.db.read() as session:
        found = session.scalars(select(Timer).where(Timer.incident_id == incident_id).order_by(Timer.id))
        return [t for t in found if status in (None, t.status)]


def card(slack: FakeSlack, row: Incident) -> tuple[int, str]:
    """(times edited, its blocks as JSON) of the incident's card as Slack has it now."""
    message = next(m for m in slack.messages(row.card_channel_id) if m.ts == row.card_ts)
    return message.edits, json.dumps(message.blocks, ensure_ascii=False)


def card_shows(slack: FakeSlack, row: Incident, text: str, *, after_edits: int) -> None:
    wait_for(lambda: (found := card(slack, row))[0] > after_edits and text in found[1],
             what=f"the card redrawn with {text!r}")


def p2(key: str = "p2", **labels: str) -> dict[str, Any]:
    return group(alert(labels={"severity": "error", "instance": key, **labels}),
                 group_key=f'{{}}:{{alertname="ServiceDown",instance="{key}"}}')


def open_in_channel(bot: RunningBot, payload: dict[str, Any] | None = None) -> Incident:
    """An incident with a channel of its own and its card there, once the bot's own first work
    (a P1's page at once, its timeline entry) is done: what follows is the test's alone."""
    row = open_with_card(bot, payload or group())
    assert row.channel_id is not None and row.card_channel_id == row.channel_id
    settle(bot)
    return row


def settle(bot: RunningBot) -> None:
    bot.services.timers.fire_due()
    wait_for(lambda: bot.services.timers.fire_due() == 0 and _idle(bot), what="timers and jobs to settle")


def _idle(bot: RunningBot) -> bool:
    with bot.services.db.read() as session:
        return session.scalars(select(Job).where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))  # type: ignore[attr-defined]
                               ).first() is None


# -- in an incident's channel -------------------------------------------------------------------

def test_status_summarises_the_card_and_links_it(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    answer = ask(bot, slack, "status", channel=row.channel_id or "")
    assert f"*P1 · {row.title}* · incident #{row.id}" in answer
    assert "State *detected* · open for" in answer
    assert "Commander: unassigned · Acknowledged: not yet" in answer
    assert f"<https://acme.slack.com/archives/{row.card_channel_id}/p{row.card_ts.replace('.', '')}|Open its card>" \
        in answer  # type: ignore[union-attr]
    assert "`triaged`, `investigating`" in answer  # where it can go next
    ask(bot, slack, "ack", channel=row.channel_id or "", user="U0BOB")
    assert "Commander: <@U0BOB> · Acknowledged: <@U0BOB>" in ask(bot, slack, "status", channel=row.channel_id or "")


def test_ack_takes_the_card_buttons_path_and_redraws_the_card(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    edits, _ = card(slack, row)
    answer = ask(bot, slack, "ack", channel=row.channel_id or "")
    assert f"You acknowledged incident #{row.id}" in answer and "`/incident state triaged`" in answer
    after = incident(bot, row.id)
    assert (after.acknowledged_by, after.commander) == ("U0ALICE", "U0ALICE")
    assert after.status == S.DETECTED  # an ack does not move the state (bot.escalation.acknowledge)
    acks = [e for e in timeline(bot, row.id) if e.kind == "ack"]
    assert [(e.actor, e.text) for e in acks] == [("U0ALICE", "acknowledged in slack")]
    card_shows(slack, row, "*Acknowledged*\\n<@U0ALICE>", after_edits=edits)
    wait_for(lambda: any("<@U0ALICE> acknowledged" in m.text for m in slack.messages(row.channel_id)),
             what="the notice in the channel")
    assert ask(bot, slack, "ack", channel=row.channel_id or "", user="U0BOB") == "Already acknowledged by <@U0ALICE>."
    assert incident(bot, row.id).acknowledged_by == "U0ALICE"


def test_severity_raised_rearms_the_timetable_and_lowered_follows_the_slower_one(
        bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot, p2())
    channel = row.channel_id or ""
    [page] = timers(bot, row.id, TimerStatus.PENDING)[:1]
    assert page.kind == "page" and page.due_at == row.created_at + timedelta(minutes=30)  # P2: at the ack deadline
    edits, _ = card(slack, row)

    assert ask(bot, slack, "severity p1", channel=channel) == "Severity P2 → *P1*; escalation follows the P1 timetable."
    assert incident(bot, row.id).severity == "P1"
    assert [(e.actor, e.text) for e in timeline(bot, row.id) if e.kind == "severity"] == [("U0ALICE",
                                                                                          "severity P2 → P1")]
    pages = [t for t in timers(bot, row.id) if t.kind == "page"]
    assert next(t.status for t in pages) == TimerStatus.CANCELLED  # the P2 page, replaced
    assert pages[-1].due_at == row.created_at  # P1 pages at once, counted from the opening
    card_shows(slack, row, "*P1*", after_edits=edits)
    settle(bot)  # the P1 page comes due now (PagerDuty is not configured here: nobody is paged)
    assert any(e.text == "not paged: PagerDuty is not configured" for e in timeline(bot, row.id))

    assert ask(bot, slack, "severity P3", channel=channel) == "Severity P1 → *P3*; escalation follows the P3 timetable."
    pending = timers(bot, row.id, TimerStatus.PENDING)
    assert [t.kind for t in pending] == ["page"]  # P1's status reminders are gone; P3 has none
    assert pending[0].due_at >= row.created_at + timedelta(hours=4)  # P3: at 4 h, in business hours
    assert ask(bot, slack, "severity P3", channel=channel) == "It is already P3."
    assert "P1, P2, P3 or P4; it is P3" in ask(bot, slack, "severity P5", channel=channel)
    assert "P1, P2, P3 or P4" in ask(bot, slack, "severity", channel=channel)
    assert incident(bot, row.id).severity == "P3"


def test_state_moves_only_along_the_seeds_transitions(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    edits, _ = card(slack, row)
    assert ask(bot, slack, "state Investigating", channel=channel) == "State detected → *investigating*."
    assert incident(bot, row.id).status == S.INVESTIGATING
    [moved] = [e for e in timeline(bot, row.id) if e.kind == "status"]
    assert (moved.actor, moved.text) == ("U0ALICE", "detected → investigating")
    card_shows(slack, row, "*INVESTIGATING*", after_edits=edits)

    refused = ask(bot, slack, "state triaged", channel=channel)
    assert refused == ("An incident that is *investigating* cannot become *triaged*. From *investigating* it can "
                       "become: `escalated`, `identified`, `mitigating`, `resolved`.")
    assert "`bogus` is not a state" in ask(bot, slack, "state bogus", channel=channel)
    assert "It is already *investigating*" in ask(bot, slack, "state investigating", channel=channel)
    assert incident(bot, row.id).status == S.INVESTIGATING

    assert ask(bot, slack, "state resolved", channel=channel) == "State investigating → *resolved*."
    resolved = incident(bot, row.id)
    assert (resolved.status, resolved.resolved_by) == (S.RESOLVED, "U0ALICE")
    assert timers(bot, row.id, TimerStatus.PENDING) == []  # resolved the one way: timers off
    assert ask(bot, slack, "state postmortem", channel=channel) == "State resolved → *postmortem*."
    assert ask(bot, slack, "state detected", channel=channel) == \
        "An incident in *postmortem* cannot change state any more."
    assert ask(bot, slack, "reopen", channel=channel) == "It is in *postmortem*: it cannot be reopened."
    assert incident(bot, row.id).status == S.POSTMORTEM


def test_notes_go_on_the_timeline_which_is_paged(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    edits, _ = card(slack, row)
    # as Slack sends it with should_escape: entities and mentions escaped
    assert ask(bot, slack, "note rolled back &lt;api&gt; cc <@U0BOB|bob>", channel=channel) == \
        f":memo: Added to the timeline of incident #{row.id}."
    note = next(e for e in timeline(bot, row.id) if e.kind == "note")
    assert (note.actor, note.text) == ("U0ALICE", "rolled back <api> cc @bob")
    card_shows(slack, row, "rolled back &lt;api&gt; cc @bob", after_edits=edits)
    assert ask(bot, slack, "note   ", channel=channel).startswith("Write the note after the word")

    for n in range(1, TIMELINE_PAGE + 6):
        ask(bot, slack, f"note step {n:02d}", channel=channel, user="U0BOB" if n % 2 else "U0ALICE")
    entries = timeline(bot, row.id)
    assert len(entries) > TIMELINE_PAGE
    pages = -(-len(entries) // TIMELINE_PAGE)

    first = ask(bot, slack, "timeline", channel=channel).splitlines()
    assert first[0] == (f"*Timeline of incident #{row.id}* · page 1 of {pages} (entries 1-{TIMELINE_PAGE} of "
                        f"{len(entries)}, newest last)")
    assert len(first) == 1 + TIMELINE_PAGE + 1 and first[-1] == "`/incident timeline 2` for the next page."
    assert "rolled back &lt;api&gt; cc @bob" in first[1 + entries.index(note)]  # oldest first, escaped
    last = ask(bot, slack, f"timeline {pages}", channel=channel).splitlines()
    assert last[-1].endswith(f"<@U0BOB>: step {TIMELINE_PAGE + 5:02d}")  # newest last, with its author
    assert len(last) == 1 + len(entries) - (pages - 1) * TIMELINE_PAGE
    assert ask(bot, slack, f"timeline {pages + 1}", channel=channel).startswith(f"There is no page {pages + 1}")
    assert ask(bot, slack, "timeline two", channel=channel) == "Give a page number: `/incident timeline 2`."


def test_resolve_with_a_note_then_reopen(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    ask(bot, slack, "ack", channel=channel)
    assert ask(bot, slack, "resolve rolled back to v41", channel=channel) == \
        f":white_check_mark: Resolved incident #{row.id}."
    resolved = incident(bot, row.id)
    assert (resolved.status, resolved.resolved_by) == (S.RESOLVED, "U0ALICE")
    assert timeline(bot, row.id)[-1].text == "detected → resolved: rolled back to v41"
    wait_for(lambda: any("Resolved by <@U0ALICE>" in m.text for m in slack.messages(channel)), what="the notice")
    assert ask(bot, slack, "resolve", channel=channel) == "This incident is already resolved."
    assert timers(bot, row.id, TimerStatus.PENDING) == []

    assert "Reopened incident" in ask(bot, slack, "reopen", channel=channel, user="U0BOB")
    reopened = incident(bot, row.id)
    assert (reopened.status, reopened.resolved_at, reopened.acknowledged_by) == (S.DETECTED, None, None)
    moved = [e for e in timeline(bot, row.id) if e.kind == "status"][-1]
    assert (moved.actor, moved.text) == ("U0BOB", "resolved → detected: reopened by hand")
    assert resolved.resolved_at is not None
    rearmed = [t for t in timers(bot, row.id) if t.due_at >= resolved.resolved_at]  # escalation starts over
    assert {t.kind for t in rearmed} == {"page", "ack_overdue", "reminder"}
    assert ask(bot, slack, "reopen", channel=channel) == "It is not resolved (it is *detected*): nothing to reopen."


def test_someone_outside_the_incident_channel_is_refused_and_nothing_changes(
        bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0MALLORY", "mallory@example.com", "mallory")
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    assert "U0MALLORY" not in slack.channels[channel].members
    before = len(timeline(bot, row.id))
    for text, act in (("ack", "acknowledge it"), ("severity P4", "change its severity"),
                      ("state triaged", "change its state"), ("note hi", "add to its timeline"),
                      ("resolve", "resolve it"), ("escalate", "page or escalate it")):
        assert ask(bot, slack, text, channel=channel, user="U0MALLORY") == \
            f"Only members of <#{channel}> can {act}; join the channel first."
    after = incident(bot, row.id)
    assert (after.status, after.severity, after.acknowledged_by) == (S.DETECTED, "P1", None)
    assert len(timeline(bot, row.id)) == before


def test_outside_an_incident_channel_the_subcommands_that_need_one_say_so(
        bot: RunningBot, slack: FakeSlack) -> None:
    thread_incident = open_with_card(bot, group(alert(labels={"severity": "warning"})))  # P3: in a thread
    assert thread_incident.channel_id is None and thread_incident.card_channel_id == "C0INCIDENTS"
    for text in ("status", "ack", "timeline", "note hello"):
        assert ask(bot, slack, text, channel="C0INCIDENTS") == (
            "This channel is not an incident's channel: run this in an incident's channel; "
            "`/incident list` shows them.")
    assert incident(bot, thread_incident.id).acknowledged_at is None


def test_help_and_unknown_subcommands(bot: RunningBot, slack: FakeSlack) -> None:
    help_text = ask(bot, slack, "help", channel="C0INCIDENTS")
    for subcommand in ("status", "ack", "severity P1", "state <state>", "note <text>", "timeline [page]",
                       "resolve [note]", "reopen", "escalate", "list"):
        assert f"`{subcommand}" in help_text, subcommand
    assert ask(bot, slack, "", channel="C0INCIDENTS") == help_text
    unknown = ask(bot, slack, "frobnicate now", channel="C0INCIDENTS")
    assert unknown == "`frobnicate` is not an `/incident` subcommand.\n" + help_text


def test_answers_in_japanese_for_a_japanese_slack_user(bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    assert "インシデントのチャンネルで" in ask(bot, slack, "help", channel=channel, user="U0KENJI")
    assert ask(bot, slack, "ack", channel=channel, user="U0KENJI") == \
        f"<#{channel}> のメンバーだけが確認することができます。先にチャンネルに参加してください。"
    slack.channels[channel].members.add("U0KENJI")
    assert f"インシデント #{row.id} を確認しました" in ask(bot, slack, "ack", channel=channel, user="U0KENJI")
    assert "状態 *detected*" in ask(bot, slack, "status", channel=channel, user="U0KENJI")
    assert ask(bot, slack, "state bogus", channel=channel, user="U0KENJI").startswith("`bogus` は状態ではありません")
    assert ask(bot, slack, "status", channel="C0INCIDENTS", user="U0KENJI").startswith(
        "このチャンネルはインシデントのチャンネルではありません")
    assert ask(bot, slack, "ack", channel=channel) == "Already acknowledged by <@U0KENJI>."  # U0ALICE: en-US
    assert "*対応中のインシデント 1 件*" in ask(bot, slack, "list", channel="C0INCIDENTS", user="U0KENJI")


def test_list_shows_only_the_open_incidents_anywhere(bot: RunningBot, slack: FakeSlack) -> None:
    assert ask(bot, slack, "list", channel="C0INCIDENTS") == "No open incidents."
    first = open_in_channel(bot)
    second = open_in_channel(bot, p2())
    third = open_with_card(bot, group(alert(labels={"severity": "warning"}), group_key='{}:{alertname="Warn"}'))
    ask(bot, slack, "ack", channel=second.channel_id or "", user="U0BOB")
    ask(bot, slack, "resolve", channel=first.channel_id or "")

    listing = ask(bot, slack, "list", channel="C0INCIDENTS").splitlines()
    assert listing[0] == "*2 open incident(s)*, the most severe first:"
    assert listing[1].startswith(f"• :large_orange_circle: *P2* <#{second.channel_id}> {second.title} · detected · ")
    assert listing[1].endswith("· commander <@U0BOB>")
    permalink = f"https://acme.slack.com/archives/C0INCIDENTS/p{third.card_ts.replace('.', '')}"  # type: ignore[union-attr]
    assert listing[2].startswith(f"• :large_yellow_circle: *P3* <{permalink}|#{third.id} the card> ")
    assert listing[2].endswith("· commander unassigned") and len(listing) == 3
    assert f"<#{first.channel_id}>" not in "\n".join(listing)  # resolved


def test_an_answer_slower_than_the_ack_allows_comes_through_response_url(
        bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    # Slack is slow with each lookup, each within its own bound (commands.slash.LOCALE_WITHIN, then
    # commands.middleware.MEMBERSHIP_WITHIN), and together beyond ANSWER_WITHIN: users.info gets no
    # answer in time (the configured language it is), and conversations.members starts after that
    # and answers 1.3 s later at most, past ANSWER_WITHIN.
    locale = slack.hold("users.info", when="before")
    hold = slack.hold("conversations.members", when="before")
    url = slack.response_url("commands")
    path = url.split(str(slack.port), 1)[1]
    releaser = threading.Timer(LOCALE_WITHIN + 1.3, hold.release)
    releaser.start()
    try:
        started = time.monotonic()
        reply = post_to_slack_events(bot.url, slash_command("/incident", "ack", channel=row.channel_id or "",
                                                            response_url=url))
        took = time.monotonic() - started
    finally:
        releaser.join()
        locale.release()
    assert reply.status_code == 200 and reply.content == b""  # acknowledged empty, before Slack's 3 s
    assert ANSWER_WITHIN <= took < 3
    message = wait_for(lambda: next((m for p, m in list(slack.responses) if p == path), None), what="the answer")
    assert message["response_type"] == "ephemeral"
    assert message["text"].startswith(f":eyes: You acknowledged incident #{row.id}")
    assert incident(bot, row.id).acknowledged_by == "U0ALICE"


# -- with PagerDuty ---------------------------------------------------------------------------------

@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        for user_id, name in (("PBOB", "Bob"), ("PCAROL", "Carol"), ("PALICE", "Alice"), ("PDAN", "Dan")):
            fake.add_user(user_id, name, f"{name.lower()}@example.com")
        fake.add_user("PBOT", "The bot", BOT_EMAIL)
        fake.add_escalation_policy("PEP1", [["PBOB"], ["PCAROL"], ["PALICE"]])  # L2, L3, L4
        fake.add_escalation_policy("PPAY", [["PCAROL"], ["PDAN"], ["PALICE"]])
        fake.add_service("PSVC1", ROUTING_KEY, "PEP1")
        yield fake


@pytest.fixture
def pd_bot(database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> Iterator[RunningBot]:
    config = OncallConfig.model_validate({
        "channels": {"announce": "C0INCIDENTS"},
        "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "S0SRE"]}],
        "pagerduty": {"escalation_policy": "PEP1",
                      "routes": [{"match": {"team": "payments"}, "escalation_policy": "PPAY"}]},
    })
    settings = make_settings(
        database_url, slack, config, pagerduty_routing_key=ROUTING_KEY, pagerduty_api_token=pagerduty.api_token,
        pagerduty_events_url=pagerduty.base_url, pagerduty_api_url=pagerduty.base_url,
        pagerduty_ca_file=pagerduty.ca_file, pagerduty_from_email=BOT_EMAIL)
    running = start_bot(settings, clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


def pd_actions(pagerduty: FakePagerDuty, key: str) -> list[str]:
    with pagerduty.lock:
        return [e.action for e in pagerduty.events if e.dedup_key == key]


def test_escalate_and_ack_keep_pagerduty_in_step(pd_bot: RunningBot, slack: FakeSlack,
                                                  pagerduty: FakePagerDuty) -> None:
    row = open_in_channel(pd_bot, p2())  # a P2 pages only at 30 min
    channel = row.channel_id or ""
    with pd_bot.services.db.read() as session:
        key = session.get(Paging, row.id).dedup_key  # type: ignore[union-attr]
    assert pd_actions(pagerduty, key) == []
    assert ask(pd_bot, slack, "escalate", channel=channel) == \
        ":rotating_light: Paging *L2 primary on-call* through PagerDuty now."
    wait_for(lambda: pd_actions(pagerduty, key) == ["trigger"], what="the page")
    assert [(e.actor, e.text) for e in timeline(pd_bot, row.id) if e.kind == "page"] == \
        [("U0ALICE", "paged L2 primary on-call: escalated by hand")]
    assert ask(pd_bot, slack, "escalate", channel=channel) == ":arrow_double_up: Escalated to *L3 engineering lead*."
    pd_id = pagerduty.alert(key).incident_id  # type: ignore[union-attr]
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="level 2 in PagerDuty")
    assert incident(pd_bot, row.id).status == S.ESCALATED
    assert ask(pd_bot, slack, "escalate", channel=channel) == \
        "Nothing to escalate: the top level is already paged, or the incident is resolved."

    assert "You acknowledged" in ask(pd_bot, slack, "ack", channel=channel, user="U0BOB")
    wait_for(lambda: pd_actions(pagerduty, key) == ["trigger", "acknowledge"], what="the ack in PagerDuty")
    ask(pd_bot, slack, "resolve", channel=channel, user="U0BOB")
    wait_for(lambda: pd_actions(pagerduty, key) == ["trigger", "acknowledge", "resolve"], what="the resolve")


def test_oncall_from_pagerduty_per_level_and_per_service(pd_bot: RunningBot, slack: FakeSlack,
                                                         pagerduty: FakePagerDuty) -> None:
    answer = ask(pd_bot, slack, "", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert answer[:5] == ["*Who is on call now*", "PagerDuty escalation policy `PEP1`:",
                          "• *L2 primary on-call* (PagerDuty level 1): <@U0BOB> (always on call)",
                          "• *L3 engineering lead* (PagerDuty level 2): <@U0CAROL> (always on call)",
                          "• *L4 management* (PagerDuty level 3): <@U0ALICE> (always on call)"]
    pagerduty.set_oncall("PEP1", 1, ["PDAN"])  # the rotation moved on; Dan has no Slack account
    answer = ask(pd_bot, slack, "", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert answer[2] == "• *L2 primary on-call* (PagerDuty level 1): Dan (always on call)"

    open_in_channel(pd_bot)  # the service `api` is the payments team's: routed to PPAY
    service = ask(pd_bot, slack, "api", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert service[:3] == ["*Who is on call now for `api`*", "PagerDuty escalation policy `PPAY`:",
                           "• *L2 primary on-call* (PagerDuty level 1): <@U0CAROL> (always on call)"]
    assert "*Responders* (invited to each matching incident's channel): <@U0ALICE>, <!subteam^S0SRE>" in service
    unknown = ask(pd_bot, slack, "billing", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert unknown[1] == "PagerDuty escalation policy `PEP1`:"
    assert "*Responders*: no `responders` rule of ONCALL_CONFIG matches it" in unknown


def test_oncall_when_pagerduty_is_unreachable_says_so_and_shows_the_configuration(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty) -> None:
    pagerduty.set_down()
    answer = ask(pd_bot, slack, "", channel="C0INCIDENTS", command="/oncall")
    assert ":warning: PagerDuty could not be reached (" in answer
    assert "• `team=payments`: <@U0ALICE>, <!subteam^S0SRE>" in answer
    assert "• P1: L2 primary on-call at once → L3 engineering lead at 15 min (if unacknowledged) → " \
           "L4 management at 1 h (if unresolved)" in answer


def test_oncall_without_pagerduty_shows_the_configuration(bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    answer = ask(bot, slack, "", channel="C0INCIDENTS", command="/oncall").splitlines()
    assert answer == [
        "*Who is on call now*",
        ":information_source: PagerDuty is not configured (set PAGERDUTY_API_TOKEN), so who is on call per level "
        "is not known; this is the configuration's view.",
        *(f"• *{name}* (PagerDuty level {n}): not known without PagerDuty · next: not known from config"
          for n, name in enumerate(("L2 primary on-call", "L3 engineering lead", "L4 management"), start=1)),
        "*Responders* (invited to the channel of each incident matching the rule):",
        "• `team=payments`: <@U0ALICE>, <!subteam^S0SRE>, nobody@example.com",
        "*Escalation timetable*:",
        "• P1: L2 primary on-call at once → L3 engineering lead at 15 min (if unacknowledged) → L4 management at 1 h "
        "(if unresolved)",
        "• P2: L2 primary on-call at 30 min → L3 engineering lead at 1 h (if unacknowledged)",
        "• P3: L2 primary on-call at 4 h (in business hours)",
        "• P4: never pages",
    ]
    japanese = ask(bot, slack, "", channel="C0INCIDENTS", command="/oncall", user="U0KENJI")
    assert "*現在のオンコール*" in japanese and "PagerDuty が設定されていない" in japanese
    assert "`/oncall SERVICE`" in ask(bot, slack, "help", channel="C0INCIDENTS", command="/oncall")
