"""Slack set up wrong (a typo in the announce channel, a revoked token, a missing scope): no
incident is lost, /readyz names the fix, and the work resumes by itself once it is fixed.
Also: the manifest asks for exactly what the code uses, and every event it subscribes to has
a listener."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml
from sqlalchemy import select

from bot.config import OncallConfig
from bot.models import Incident, Job, JobStatus
from bot.outbox import MAX_BACKOFF_SECONDS
from commands.slack_sync import SETUP_RETRY, SETUP_WAIT
from integrations.slack import REQUIRED_SCOPES
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, make_settings, start_bot, wait_for
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import post_to_slack_events, signed_headers

MANIFEST = Path(__file__).parent.parent / "manifest.yml"
WARNING_GROUP = group(alert("DiskFilling", labels={"severity": "warning"}), group_key='{}:{alertname="DiskFilling"}')


def _bot(database_url: str, slack: FakeSlack, clock: FakeClock, announce: str = "C0INCIDENTS",
         **settings: object) -> RunningBot:
    config = OncallConfig.model_validate({"channels": {"announce": announce}})
    return start_bot(make_settings(database_url, slack, config, **settings), clock=clock)


def _incident(bot: RunningBot, incident_id: int) -> Incident:
    with bot.services.db.read() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        return row


def _jobs(bot: RunningBot, kind: str | None = None) -> list[Job]:
    with bot.services.db.read() as session:
        return [j for j in session.scalars(select(Job).order_by(Job.id)) if kind in (None, j.kind)]


def _readyz(bot: RunningBot) -> httpx.Response:
    # The Slack check is cached for 30 s: each test starts its own bot, so it sees its own setup.
    return httpx.get(f"{bot.url}/readyz", timeout=10)


def _settle_running(bot: RunningBot) -> None:
    wait_for(lambda: not [j for j in _jobs(bot) if j.status == JobStatus.RUNNING], what="no job mid-call")


def test_missing_announce_channel_a_p3_gets_its_own_channel_and_the_announcement_waits(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    bot = _bot(database_url, slack, clock, announce="C0TYPO")
    running.append(bot)
    reply = _readyz(bot)
    assert reply.status_code == 200 and reply.json()["status"] == "degraded"
    assert any("'C0TYPO'" in w and "does not exist" in w for w in reply.json()["warnings"])

    incident_id = bot.post_alerts(WARNING_GROUP).json()["incident_id"]
    row = wait_for(lambda: (r := _incident(bot, incident_id)).card_ts and r, what="the card somewhere")
    assert row.severity == "P3" and row.channel_id and row.card_channel_id == row.channel_id
    wait_for(lambda: any(j.attempts for j in _jobs(bot, "slack.announce")), what="the announcement tried")
    _settle_running(bot)
    (announce,) = _jobs(bot, "slack.announce")
    assert announce.status == JobStatus.PENDING and announce.last_error.startswith(SETUP_WAIT)
    assert "channels.announce" in announce.last_error  # the fix is named
    assert not [j for j in _jobs(bot) if j.status == JobStatus.FAILED]

    slack.add_channel("incidents-typo", channel_id="C0TYPO")  # someone creates it
    clock.advance(seconds=SETUP_RETRY + 1)
    wait_for(lambda: _incident(bot, incident_id).announce_ts, what="the announcement once the channel exists")
    assert f"<#{row.channel_id}>" in json.dumps(slack.messages("C0TYPO")[-1].blocks)


def test_missing_announce_channel_never_holds_up_a_p1_card(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    bot = _bot(database_url, slack, clock, announce="missing-channel")
    running.append(bot)
    incident_id = bot.post_alerts(group()).json()["incident_id"]
    row = wait_for(lambda: (r := _incident(bot, incident_id)).card_ts and r, what="the P1 card")
    assert row.card_channel_id == row.channel_id
    # Later notices in the incident's lane are not queued behind the waiting announcement.
    assert bot.post_alerts(resolved(group())).json()["outcome"] == "resolved"
    wait_for(lambda: any("Resolved" in m.text for m in slack.messages(row.channel_id)), what="the resolve notice")
    _settle_running(bot)
    (announce,) = _jobs(bot, "slack.announce")
    assert announce.status == JobStatus.PENDING and _incident(bot, incident_id).announce_ts is None


def test_revoked_token_keeps_the_work_and_resumes_once_fixed(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    slack.revoked = True
    bot = _bot(database_url, slack, clock)
    running.append(bot)
    reply = _readyz(bot)
    assert reply.status_code == 503
    assert any("token_revoked" in p and "SLACK_BOT_TOKEN" in p for p in reply.json()["problems"])

    incident_id = bot.post_alerts(group()).json()["incident_id"]
    wait_for(lambda: any(j.attempts for j in _jobs(bot, "slack.open_incident")), what="a first attempt")
    _settle_running(bot)
    (opening,) = _jobs(bot, "slack.open_incident")
    assert opening.status == JobStatus.PENDING and "token_revoked" in (opening.last_error or "")

    slack.revoked = False  # the app was reinstalled
    clock.advance(seconds=SETUP_RETRY + 1)
    wait_for(lambda: _incident(bot, incident_id).card_ts, what="the card once the token works")


def test_missing_scope_is_named_in_readyz(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    slack.scopes -= {"channels:history", "usergroups:read"}
    bot = _bot(database_url, slack, clock)
    running.append(bot)
    reply = _readyz(bot)
    assert reply.status_code == 503
    (problem,) = reply.json()["problems"]
    assert "channels:history, usergroups:read" in problem and "reinstall" in problem


def test_bot_not_in_the_announce_channel_is_a_warning(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    slack.add_channel("ops", channel_id="C0OPS").members.discard(slack.bot_user_id)
    bot = _bot(database_url, slack, clock, announce="#ops")
    running.append(bot)
    reply = _readyz(bot).json()
    assert reply["status"] == "degraded" and any("/invite @oncall-bot" in w for w in reply["warnings"])


def test_a_healthy_setup_is_ready(database_url: str, slack: FakeSlack, clock: FakeClock,
                                  running: list[RunningBot]) -> None:
    bot = _bot(database_url, slack, clock)
    running.append(bot)
    reply = _readyz(bot).json()
    assert reply["heartbeat"]["status"] == "waiting"  # no Watchdog yet: not watched (bot.heartbeat)
    assert {k: v for k, v in reply.items() if k != "heartbeat"} == {"status": "ready", "problems": [], "warnings": []}


def test_after_an_outage_every_retry_is_due_within_the_backoff_cap(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    bot = _bot(database_url, slack, clock)
    running.append(bot)
    slack.set_down(True)
    for i in range(5):
        bot.post_alerts(group(alert(f"Outage{i}"), group_key=f'{{}}:{{alertname="Outage{i}"}}'))
    for _ in range(8):  # many failed attempts: the backoff has grown as far as it goes
        _settle_running(bot)
        clock.advance(seconds=MAX_BACKOFF_SECONDS + 1)
        wait_for(lambda: not [j for j in _jobs(bot, "slack.open_incident") if j.status == JobStatus.PENDING
                              and j.run_at <= clock()], what="the due retries tried")
    assert min(j.attempts for j in _jobs(bot, "slack.open_incident")) >= 5
    slack.set_down(False)
    _settle_running(bot)
    clock.advance(seconds=15)  # the promise: the backlog drains within 15 s of Slack coming back
    with bot.services.db.read() as session:
        incidents = list(session.scalars(select(Incident)))
    wait_for(lambda: all(_incident(bot, i.id).card_ts for i in incidents), what="the backlog drained")


def test_manifest_requests_exactly_the_scopes_the_code_uses() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == REQUIRED_SCOPES


def test_every_subscribed_event_and_command_has_a_listener(bot: RunningBot, slack: FakeSlack) -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    # app_home_opened: tests/test_home.py sends it and checks the published Home tab;
    # reaction_added, pin_added: tests/test_roles_and_updates.py (timeline capture)
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_mention", "app_home_opened",
                                                                         "reaction_added", "pin_added"]
    slack.channels["C0INCIDENTS"].messages.append(Message(ts="1.000001", text="<@UBOT> help", blocks=[],
                                                          user="U0ALICE"))
    event = {"token": "x", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
             "event_id": "Ev01", "event_time": 1,
             "event": {"type": "app_mention", "user": "U0ALICE", "text": "<@UBOT> help", "ts": "1.000001",
                       "channel": "C0INCIDENTS", "event_ts": "1.000001"}}
    body = json.dumps(event).encode()
    reply = httpx.post(f"{bot.url}/slack/events", content=body,
                       headers={**signed_headers(body), "Content-Type": "application/json"})
    assert reply.status_code == 200
    wait_for(lambda: any(c.args.get("thread_ts") == "1.000001" and "/incident" in str(c.args.get("text"))
                         for c in slack.calls_to("chat.postMessage")), what="the help answer in the thread")
    from tests.slack_requests import slash_command
    for command in manifest["features"]["slash_commands"]:
        answer = post_to_slack_events(bot.url, slash_command(command["command"], "help"))
        assert answer.status_code == 200 and answer.text, command["command"]


def test_answers_lost_after_slack_acted_make_nothing_twice(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    bot = _bot(database_url, slack, clock)
    running.append(bot)
    for method in ("conversations.create", "chat.postMessage"):
        slack.lose_answer(method, times=2)
    incident_id = bot.post_alerts(group()).json()["incident_id"]
    for _ in range(3):  # each retry is due within the backoff cap
        _settle_running(bot)
        clock.advance(seconds=15)
    wait_for(lambda: _incident(bot, incident_id).card_ts and _incident(bot, incident_id).announce_ts,
             what="the card and the announcement")
    assert len([c for c in slack.channels.values() if c.name.startswith("inc-")]) == 1
    assert len(slack.tagged("card")) == 1 and len(slack.tagged("announcement")) == 1


def test_an_archived_incident_channel_fails_its_jobs_instead_of_blocking_its_lane(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    bot = _bot(database_url, slack, clock)
    running.append(bot)
    incident_id = bot.post_alerts(group()).json()["incident_id"]
    row = wait_for(lambda: (r := _incident(bot, incident_id)).card_ts and r, what="the card")
    _settle_running(bot)
    slack.channels[row.channel_id].archived = True
    assert bot.post_alerts(resolved(group())).json()["outcome"] == "resolved"
    wait_for(lambda: any(j.status == JobStatus.FAILED and "is_archived" in (j.last_error or "")
                         for j in _jobs(bot, "slack.notify")), what="the notice failed for good")
    wait_for(lambda: not [j for j in _jobs(bot) if j.incident_id == incident_id
                          and j.status in (JobStatus.PENDING, JobStatus.RUNNING)], what="the lane freed")
