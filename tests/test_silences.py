"""Silences through the approval flow, against the real Alertmanager (the Debian binary): a silence
step requested and approved by a second person with signed interaction requests → the silence in
Alertmanager, its comment naming the incident and linking its card, created by the approver → on
the card with an Expire button carrying only an opaque token → Expire → expired in Alertmanager,
off the card; a second click, an outsider's click and a silence Alertmanager already expired each
do nothing twice. The clock is the injected FakeClock, moved past a silence's end without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot import silences
from bot.actions import SilenceCreated
from bot.card_view import CardView
from bot.config import OncallConfig
from bot.db import Database
from bot.models import AuditEntry, Incident, Job, Silence, TimelineEntry
from commands.cards import incident_card
from commands.ids import silence_block, silence_expire_action
from tests.conftest import FakeClock, RunningBot, make_settings, start_bot, wait_for
from tests.fakes.processes import RunningProcess, start_alertmanager
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_blocks import validate_blocks
from tests.slack_requests import block_actions, post_to_slack_events
from tests.test_approvals import answers, audit_events, decide, open_incident, request, rows
from tests.test_runbook_flow import timeline
from tests.test_snapshots import FORBIDDEN, parsed_strings

SILENCE_RUNBOOK = """\
id: silence-it
title: {en: Silence it, ja: サイレンス}
description: {en: One silence step., ja: サイレンスの手順。}
match:
  alertname: SilenceMe
expects: [pod]
steps:
  - id: silence
    title: {en: Silence this pod's alert, ja: この Pod のアラートをサイレンス}
    text: {en: Silence it for an hour while the pod restarts., ja: Pod の再起動中 1 時間サイレンスします。}
    action:
      type: alertmanager.silence
      params:
        matchers: 'alertname="{{ alertname }}", pod="{{ labels.pod }}"'
        duration: 1h
        comment: restarting the pod
"""
MATCHERS = 'alertname="SilenceMe", pod="api-7d9f-x2"'


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    running = start_alertmanager("route: {receiver: nobody}\nreceivers: [{name: nobody}]\n",
                                 tmp_path_factory.mktemp("alertmanager"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def bot(database_url: str, slack: FakeSlack, alertmanager: RunningProcess, tmp_path: Path,
        clock: FakeClock) -> Iterator[RunningBot]:
    slack.add_user("U0DAVE", "dave@example.com", "dave")  # exists, but is not in the incident's channel
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "silence-it.yaml").write_text(SILENCE_RUNBOOK)
    config = OncallConfig.model_validate({"channels": {"announce": "C0INCIDENTS"},
                                          "responders": [{"match": {"team": "payments"},
                                                          "invite": ["U0ALICE", "U0BOB", "U0CAROL"]}],
                                          "runbooks": {"namespaces": ["prod"]}})
    settings = make_settings(database_url, slack, config, alertmanager_url=alertmanager.url,
                             runbooks_path=str(runbooks))
    running = start_bot(settings, clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


# -- helpers ----------------------------------------------------------------------------------------

def silenced(bot: RunningBot, slack: FakeSlack) -> tuple[Incident, Silence]:
    """An incident whose silence step U0ALICE requested and U0BOB approved: created and recorded."""
    incident, _ = open_incident(bot, slack, alertname="SilenceMe", key="silence")
    _, message = request(bot, slack, incident, step_id="silence")
    assert decide(bot, slack, incident, message, "U0BOB").status_code == 200
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the approved silence to be created")
    [row] = silence_rows(bot)
    return incident, row


def silence_rows(bot: RunningBot) -> list[Silence]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Silence).order_by(Silence.id)))


def in_alertmanager(alertmanager: RunningProcess, silence_id: str) -> dict[str, Any]:
    """Alertmanager's own listing, read without the bot's client."""
    listing = httpx.get(f"{alertmanager.url}/api/v2/silences", timeout=5).json()
    return next(s for s in listing if s["id"] == silence_id)


def card_blocks(slack: FakeSlack, incident: Incident) -> list[dict[str, Any]]:
    return next(m.blocks for m in slack.messages(incident.card_channel_id) if m.ts == incident.card_ts)


def shown_silences(slack: FakeSlack, incident: Incident) -> list[dict[str, Any]]:
    return [b for b in card_blocks(slack, incident) if str(b.get("block_id", "")).startswith("silence_")]


def click_expire(bot: RunningBot, slack: FakeSlack, incident: Incident, token: str, user: str) -> httpx.Response:
    body = block_actions(silence_expire_action(0), token, user=user, channel=incident.card_channel_id or "",
                         block_id=silence_block(0), response_url=slack.response_url(),
                         message={"type": "message", "ts": incident.card_ts, "text": "", "blocks": []})
    return post_to_slack_events(bot.url, body)


def jobs(bot: RunningBot, kind: str) -> list[Job]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind)))


# -- end to end -------------------------------------------------------------------------------------

def test_an_approved_silence_is_in_alertmanager_on_the_card_and_expired_once(
        bot: RunningBot, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    incident, row = silenced(bot, slack)
    assert (row.incident_id, row.matchers, row.created_by) == (incident.id, MATCHERS, "U0BOB")
    assert row.approval_id == rows(bot)[0].id and row.token != row.silence_id

    # In Alertmanager: made by the approver, its comment naming the incident and linking its card.
    found = in_alertmanager(alertmanager, row.silence_id)
    assert found["status"]["state"] == "active" and found["createdBy"] == "U0BOB"
    card_ts = (incident.card_ts or "").replace(".", "")
    card_link = f"https://acme.slack.com/archives/{incident.card_channel_id}/p{card_ts}"  # chat.getPermalink's
    # ...and the request (bot.silences.marker), by which a retry after a crash finds it again.
    assert found["comment"] == (f"restarting the pod · oncall-bot incident #{incident.id} request #{row.approval_id}: "
                                f"{incident.title} {card_link}")
    assert sorted((m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in found["matchers"]) == [
        ("alertname", "SilenceMe", False, True), ("pod", "api-7d9f-x2", False, True)]

    # On the card: what it silences, until when, by whom, and Expire carrying only the opaque token.
    [block] = wait_for(lambda: shown_silences(slack, incident), what="the silence on the card")
    assert block["accessory"]["action_id"] == silence_expire_action(0) and block["accessory"]["value"] == row.token
    assert row.silence_id not in json.dumps([b.get("accessory") for b in card_blocks(slack, incident)])
    text = block["text"]["text"]
    assert f"`{MATCHERS}`" in text  # as validated
    assert "<!date^" in text and "<@U0BOB>" in text
    assert [e.actor for e in timeline(bot, incident.id or 0, "silenced")] == ["U0BOB"]
    assert audit_events(bot).count("silenced") == 1

    # Someone outside the incident's channel: refused privately; the silence stays.
    assert click_expire(bot, slack, incident, row.token, "U0DAVE").status_code == 200
    [refusal] = wait_for(lambda: answers(slack), what="the refusal")
    assert f"Only members of <#{incident.channel_id}> can expire its silences" in refusal
    assert jobs(bot, "silence.expire") == [] and silence_rows(bot)[0].expire_requested_at is None

    # A member clicks Expire: Alertmanager has it expired, the card no longer shows it.
    assert click_expire(bot, slack, incident, row.token, "U0CAROL").status_code == 200
    wait_for(lambda: in_alertmanager(alertmanager, row.silence_id)["status"]["state"] == "expired",
             what="Alertmanager to show the silence expired")
    wait_for(lambda: not shown_silences(slack, incident), what="the card without the silence")
    [expired] = silence_rows(bot)
    assert expired.expired_at is not None and expired.expired_by == "U0CAROL"
    [entry] = timeline(bot, incident.id or 0, "silence_expired")
    assert (entry.actor, entry.text) == ("U0CAROL", f"expired the silence of {MATCHERS}")
    ended_at = in_alertmanager(alertmanager, row.silence_id)["updatedAt"]

    # The same button again (its message drawn before): told who did it; nothing is called twice.
    assert click_expire(bot, slack, incident, row.token, "U0BOB").status_code == 200
    [second] = wait_for(lambda: answers(slack)[1:], what="the answer to the second click")
    assert second.startswith("This silence was already expired by <@U0CAROL> <!date^")
    assert len(jobs(bot, "silence.expire")) == 1 and len(timeline(bot, incident.id or 0, "silence_expired")) == 1
    assert in_alertmanager(alertmanager, row.silence_id)["updatedAt"] == ended_at
    assert audit_events(bot).count("silence_expired") == 1


def test_a_silence_that_reaches_its_end_leaves_the_card(
        bot: RunningBot, slack: FakeSlack, alertmanager: RunningProcess, clock: FakeClock) -> None:
    incident, row = silenced(bot, slack)
    wait_for(lambda: shown_silences(slack, incident), what="the silence on the card")
    clock.advance(minutes=61)  # the silence was for 1h
    wait_for(lambda: not shown_silences(slack, incident), what="the card without the ended silence")
    assert [j.status for j in jobs(bot, "silence.ended")] == ["done"]
    # Drawn from what is stored: past its end by the bot's clock, it is not shown as silencing,
    # whatever Alertmanager (on the wall clock) says.
    assert in_alertmanager(alertmanager, row.silence_id)["status"]["state"] == "active"
    assert silence_rows(bot)[0].expired_at is None
    # Expire on the card as drawn before: nothing to do, said so.
    click_expire(bot, slack, incident, row.token, "U0CAROL")
    [answer] = wait_for(lambda: answers(slack), what="the answer")
    assert answer.startswith("This silence already ended")
    assert jobs(bot, "silence.expire") == []


def test_expire_of_a_silence_alertmanager_already_expired_is_done(
        bot: RunningBot, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    incident, row = silenced(bot, slack)
    wait_for(lambda: shown_silences(slack, incident), what="the silence on the card")
    # Someone expires it in Alertmanager's UI (the same API call the UI makes).
    httpx.delete(f"{alertmanager.url}/api/v2/silence/{row.silence_id}", timeout=5).raise_for_status()
    ended_at = in_alertmanager(alertmanager, row.silence_id)["updatedAt"]

    click_expire(bot, slack, incident, row.token, "U0CAROL")
    wait_for(lambda: not shown_silences(slack, incident), what="the card without the silence")
    [entry] = timeline(bot, incident.id or 0, "silence_expired")
    assert entry.text == f"the silence of {MATCHERS} was already expired in Alertmanager"
    assert in_alertmanager(alertmanager, row.silence_id)["updatedAt"] == ended_at  # not expired again
    with bot.services.db.read() as session:
        [audit] = session.scalars(select(AuditEntry).where(AuditEntry.event == "silence_expired")).all()
    assert audit.data["already_expired"] is True and audit.actor == "U0CAROL"


def test_expire_refusals_speak_the_clickers_language(
        bot: RunningBot, slack: FakeSlack, alertmanager: RunningProcess, clock: FakeClock) -> None:
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    incident, row = silenced(bot, slack)
    slack.channels[incident.channel_id or ""].members.add("U0KENJI")
    wait_for(lambda: shown_silences(slack, incident), what="the silence on the card")
    clock.advance(minutes=61)  # the silence was for 1h
    wait_for(lambda: not shown_silences(slack, incident), what="the card without the ended silence")
    click_expire(bot, slack, incident, row.token, "U0KENJI")  # on the card as drawn before
    [ended] = wait_for(lambda: answers(slack), what="the refusal")
    assert ended.startswith("このサイレンスは <!date^") and ended.endswith(" にすでに終わっています。")
    click_expire(bot, slack, incident, "forged-token-000", "U0KENJI")
    [forged] = wait_for(lambda: answers(slack)[1:], what="the refusal of a made-up token")
    assert forged == "このサイレンスはもうインシデントのカードにありません。"
    assert jobs(bot, "silence.expire") == []


def test_expire_without_alertmanager_is_refused_at_the_click(
        database_url: str, slack: FakeSlack, clock: FakeClock) -> None:
    """ALERTMANAGER_URL unset since the silence was made: said to the clicker now, in their language,
    rather than by a job that could only fail."""
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    config = OncallConfig.model_validate({"channels": {"announce": "C0INCIDENTS"},
                                          "responders": [{"match": {"team": "payments"},
                                                          "invite": ["U0ALICE", "U0BOB", "U0CAROL"]}]})
    running = start_bot(make_settings(database_url, slack, config), clock=clock)
    try:
        incident, _ = open_incident(running, slack, alertname="SilenceMe", key="silence")
        slack.channels[incident.channel_id or ""].members.add("U0KENJI")
        now = clock()
        created = SilenceCreated("6f1c0a8e-0000-4000-8000-000000000002", MATCHERS, now, now + timedelta(hours=1),
                                 "U0BOB", "restarting the pod")
        with running.services.db.session() as session:
            found = session.get(Incident, incident.id)
            assert found is not None
            recorded = silences.record(session, found, created, approval_id=None, now=now)
            assert recorded is not None
            token = recorded.token
        click_expire(running, slack, incident, token, "U0KENJI")
        [japanese] = wait_for(lambda: answers(slack), what="the refusal")
        assert japanese == ("Alertmanager が設定されていません(ALERTMANAGER_URL を設定してボットを再起動して"
                            "ください)。サイレンスは終了していません。")
        click_expire(running, slack, incident, token, "U0CAROL")
        [english] = wait_for(lambda: answers(slack)[1:], what="the English refusal")
        assert english == ("Alertmanager is not configured (set ALERTMANAGER_URL and restart the bot): the silence "
                           "was not expired.")
        assert jobs(running, "silence.expire") == []
        assert silence_rows(running)[0].expire_requested_at is None
    finally:
        running.stop()
        running.services.db.dispose()


# -- storage ------------------------------------------------------------------------------------------

def test_recording_the_same_silence_twice_is_one_row(db: Database, clock: FakeClock) -> None:
    now = clock()
    created = SilenceCreated("6f1c0a8e-0000-4000-8000-000000000001", MATCHERS, now, now + timedelta(hours=1),
                             "U0BOB", "restarting the pod")
    with db.session() as session:
        incident = Incident(title="SilenceMe", alertname="SilenceMe", severity="P2", created_at=now, updated_at=now)
        session.add(incident)
        session.flush()
        first = silences.record(session, incident, created, approval_id=None, now=now)
    with db.session() as session:  # a retried execution, after a crash
        incident = session.get(Incident, incident.id)
        assert incident is not None
        again = silences.record(session, incident, created, approval_id=None, now=now)
    assert first is not None and again is None
    with db.read() as session:
        assert len(session.scalars(select(Silence)).all()) == 1
        assert [e.kind for e in session.scalars(select(TimelineEntry))] == ["silenced"]
        assert [e.event for e in session.scalars(select(AuditEntry))] == ["silenced"]
        assert [j.run_at for j in session.scalars(select(Job).where(Job.kind == "silence.ended"))] == [
            created.ends_at]
        # What the card lists: not past its end, not expired.
        assert [s.silence_id for s in silences.shown(session, incident.id or 0, now)] == [created.silence_id]
        assert silences.shown(session, incident.id or 0, created.ends_at) == []


def test_of_two_expire_clicks_one_wins(db: Database, clock: FakeClock) -> None:
    now = clock()
    created = SilenceCreated("6f1c0a8e-0000-4000-8000-000000000002", MATCHERS, now, now + timedelta(hours=1),
                             "U0BOB", "restarting the pod")
    with db.session() as session:
        incident = Incident(title="SilenceMe", alertname="SilenceMe", severity="P2", created_at=now, updated_at=now)
        session.add(incident)
        session.flush()
        row = silences.record(session, incident, created, approval_id=None, now=now)
        assert row is not None and row.id is not None
        silence_id = row.id
    claims = []
    for user in ("U0CAROL", "U0BOB"):
        with db.session() as session:
            claims.append(silences.request_expire(session, silence_id, user, now))
    assert [c.won for c in claims] == [True, False]
    assert claims[1].current is not None and claims[1].current.expire_requested_by == "U0CAROL"
    with db.session() as session:
        assert silences.expired(session, silence_id, now, already=False) is not None
        assert silences.expired(session, silence_id, now, already=False) is None  # a retried job: once
    with db.read() as session:
        assert len(session.scalars(select(Job).where(Job.kind == "silence.expire")).all()) == 1
        assert [e.kind for e in session.scalars(select(TimelineEntry)).all()].count("silence_expired") == 1
        assert silences.shown(session, incident.id or 0, now) == []


# -- the card -----------------------------------------------------------------------------------------

HOSTILE = "<!channel> <@U123> <https://evil|click> <!subteam^S1> *bold*"


def test_the_card_shows_each_silence_escaped_and_within_slacks_limits(clock: FakeClock) -> None:
    now = clock()
    incident = Incident(id=7, title="SilenceMe", alertname="SilenceMe", severity="P2", status="investigating",
                        card_token="card-token-7", created_at=now - timedelta(minutes=5), updated_at=now)

    def silence(n: int, **fields: Any) -> Silence:
        return Silence(id=n, token=f"silence-token-{n}", incident_id=7, silence_id=f"uuid-{n}",
                       matchers=f'alertname="SilenceMe", pod="{HOSTILE}"', comment="c", created_by="U0BOB",
                       starts_at=now, ends_at=now + timedelta(minutes=30 + n), created_at=now, **fields)

    shown = [silence(1), silence(2, expire_requested_by="U0CAROL", expire_requested_at=now)]
    _, blocks = incident_card(CardView(incident=incident, alerts=[], now=now, silences=shown))
    assert validate_blocks(blocks) == []
    first, second = (b for b in blocks if str(b.get("block_id", "")).startswith("silence_"))
    assert first["accessory"]["value"] == "silence-token-1" and "uuid-1" not in json.dumps(blocks)
    assert first["accessory"]["confirm"]["title"]["text"] == "Expire the silence?"
    assert "accessory" not in second and "being expired, asked by <@U0CAROL>" in second["text"]["text"]
    # What Slack parses as mrkdwn carries none of it (plain_text, as in the confirm dialog, is shown as is).
    assert [(where, bad) for where, text in parsed_strings(blocks) for bad in FORBIDDEN if bad in text] == []
    assert "&lt;!channel&gt;" in first["text"]["text"]

    many = [silence(n) for n in range(1, 9)]
    _, blocks = incident_card(CardView(incident=incident, alerts=[], now=now, silences=many))
    assert validate_blocks(blocks) == []
    assert sum(str(b.get("block_id", "")).startswith("silence_") for b in blocks) == 5
    assert "…and 3 more silence(s) not shown" in json.dumps(blocks, ensure_ascii=False)
