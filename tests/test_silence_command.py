"""`/silence` and the card's "Silence 1h / 4h / 24h" menu, end to end: signed slash commands and
interactions to the running bot, the Slack fake, and the real Alertmanager (the Debian binary)
behind a TCP proxy (tests/fakes/lossy_proxy.py) that relays everything, or loses one exchange as
a network does: the answer to a silence Alertmanager created, or the request before it got there.

Who may silence (the channel's members), whether it needs a second person (the policy: the
action's risk, `self_approve_low`, the approvers), what it silences (the alert group's common
labels, or the given matchers), and that an interrupted creation is reconciled with Alertmanager
by the request its comment names: found and recorded once, or reported as not done; never made
twice. Answers in English and, for a ja-JP user, Japanese.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select

from bot import silences, steps
from bot.config import OncallConfig
from bot.db import Database
from bot.models import ApprovalRequest, Incident, Silence
from commands.ids import CARD_ACTIONS_BLOCK, CARD_SILENCE
from integrations.alertmanager import AlertmanagerClient, AlertmanagerError
from tests.alerts import alert, group
from tests.conftest import FakeClock, RunningBot, make_settings, open_with_card, start_bot, wait_for
from tests.fakes.lossy_proxy import LossyProxy
from tests.fakes.processes import RunningProcess, start_alertmanager
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import post_to_slack_events, trigger_id
from tests.test_approvals import answers, audit_events, decide, rows
from tests.test_incident_command import ask
from tests.test_runbook_flow import timeline

ALERTNAME = "SilenceCommandDrill"
POD = "api-7d9f-x2"
Starter = Callable[..., RunningBot]


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    running = start_alertmanager("route: {receiver: nobody}\nreceivers: [{name: nobody}]\n",
                                 tmp_path_factory.mktemp("alertmanager"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def proxy(alertmanager: RunningProcess) -> Iterator[LossyProxy]:
    lossy = LossyProxy(alertmanager.port).start()
    try:
        yield lossy
    finally:
        lossy.stop()


@pytest.fixture
def start(database_url: str, slack: FakeSlack, proxy: LossyProxy, clock: FakeClock,
          running: list[RunningBot]) -> Starter:
    slack.add_user("U0DAVE", "dave@example.com", "dave")  # exists, but is not in the incident's channel
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")

    def run(**remediations: Any) -> RunningBot:
        config = OncallConfig.model_validate({
            "channels": {"announce": "C0INCIDENTS"},
            "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "U0BOB", "U0CAROL"]}],
            "remediations": remediations})
        bot = start_bot(make_settings(database_url, slack, config, alertmanager_url=proxy.url), clock=clock)
        running.append(bot)
        return bot

    return run


# -- helpers ----------------------------------------------------------------------------------------

def open_incident(bot: RunningBot, slack: FakeSlack, *, members: tuple[str, ...] = ("U0BOB", "U0CAROL")
                  ) -> tuple[Incident, str]:
    """A P1 with a channel of its own; its alerts carry a label of this test's own (`run`), so the
    silences of other tests in the shared Alertmanager are never counted."""
    run = uuid.uuid4().hex[:12]
    payload = group(alert(ALERTNAME, labels={"pod": POD, "run": run}),
                    group_key=f'{{}}:{{alertname="{ALERTNAME}",run="{run}"}}')
    incident = open_with_card(bot, payload)
    assert incident.channel_id and incident.card_channel_id == incident.channel_id
    slack.channels[incident.channel_id].members.update(members)
    return incident, run


def common_matchers(run: str) -> str:
    """The alert group's common labels (tests.alerts.alert's), as the bot writes the matchers."""
    labels = {"alertname": ALERTNAME, "namespace": "prod", "pod": POD, "run": run, "service": "api",
              "severity": "critical", "team": "payments"}
    return ", ".join(f'{name}="{labels[name]}"' for name in ["alertname", *sorted(set(labels) - {"alertname"})])


def in_alertmanager(alertmanager: RunningProcess, run: str) -> list[dict[str, Any]]:
    """Alertmanager's own listing of this test's silences, read without the bot's client."""
    found = httpx.get(f"{alertmanager.url}/api/v2/silences", params={"filter": f'run="{run}"'}, timeout=5)
    return list(found.json())


def silence_rows(bot: RunningBot) -> list[Silence]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Silence).order_by(Silence.id)))


def finished(bot: RunningBot) -> ApprovalRequest:
    return wait_for(lambda: next((r for r in rows(bot) if r.status in ("succeeded", "failed")), None),
                    what="the silence request to finish")


def card_message(slack: FakeSlack, incident: Incident) -> Message:
    return next(m for m in slack.messages(incident.card_channel_id) if m.ts == incident.card_ts)


def shown_silences(slack: FakeSlack, incident: Incident) -> list[dict[str, Any]]:
    return [b for b in card_message(slack, incident).blocks if str(b.get("block_id", "")).startswith("silence_")]


def card_link(incident: Incident) -> str:
    return f"https://acme.slack.com/archives/{incident.card_channel_id}/p{(incident.card_ts or '').replace('.', '')}"


def lasts(silence: dict[str, Any], expected: timedelta) -> bool:
    """Its end is `expected` after its start: the start Alertmanager keeps is its own clock's when
    the bot's arrived a moment late, so a few seconds short."""
    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return timedelta(0) <= expected - (at(silence["endsAt"]) - at(silence["startsAt"])) < timedelta(seconds=5)


def matcher_set(silence: dict[str, Any]) -> set[tuple[str, str, bool, bool]]:
    return {(m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in silence["matchers"]}


def choose(bot: RunningBot, slack: FakeSlack, incident: Incident, label: str, user: str) -> httpx.Response:
    """`user` picks `label` in the card's overflow menu, as Slack sends it: the option as drawn."""
    [actions] = [b for b in card_message(slack, incident).blocks if b.get("block_id") == CARD_ACTIONS_BLOCK]
    [menu] = [e for e in actions["elements"] if e["type"] == "overflow"]
    option = next(o for o in menu["options"] if o["text"]["text"] == label)
    payload = {
        "type": "block_actions", "user": {"id": user, "username": user.lower(), "name": user.lower(),
                                          "team_id": "T0001"},
        "api_app_id": "A0001", "token": "legacy", "trigger_id": trigger_id(), "team": {"id": "T0001", "domain": "acme"},
        "container": {"type": "message", "message_ts": incident.card_ts, "channel_id": incident.card_channel_id,
                      "is_ephemeral": False},
        "enterprise": None, "is_enterprise_install": False,
        "channel": {"id": incident.card_channel_id, "name": "inc"},
        "message": {"type": "message", "ts": incident.card_ts, "text": "", "blocks": []},
        "state": {"values": {}}, "response_url": slack.response_url(),
        "actions": [{"action_id": CARD_SILENCE, "block_id": CARD_ACTIONS_BLOCK, "type": "overflow",
                     "selected_option": option, "action_ts": f"{time.time():.6f}"}],
    }
    return post_to_slack_events(bot.url, urlencode({"payload": json.dumps(payload)}).encode())


def silence_posts(slack: FakeSlack, incident: Incident, kind: str) -> list[Message]:
    return [m for channel, m in slack.tagged(kind) if channel == incident.channel_id]


# -- the command ----------------------------------------------------------------------------------------

def test_a_silence_its_requester_may_approve_runs_at_once_on_the_alert_groups_labels(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    bot = start(self_approve_low=True)
    incident, run = open_incident(bot, slack)
    matchers = common_matchers(run)

    answer = ask(bot, slack, "2h", channel=incident.channel_id or "", command="/silence")
    assert answer.startswith(f":no_bell: Silencing `{matchers}` for 2 h (until <!date^")
    assert "approved by you" in answer

    row = finished(bot)
    assert (row.status, row.requested_by, row.decided_by, row.risk) == ("succeeded", "U0ALICE", "U0ALICE", "low")
    [found] = wait_for(lambda: in_alertmanager(alertmanager, run), what="the silence in Alertmanager")
    assert found["status"]["state"] == "active" and found["createdBy"] == "U0ALICE"
    assert lasts(found, timedelta(hours=2))
    assert matcher_set(found) == {(name, value, False, True) for name, value in
                                  (pair.split("=", 1) for pair in matchers.replace('"', "").split(", "))}
    assert found["comment"] == (f"silenced with /silence in Slack · oncall-bot incident #{incident.id} request "
                                f"#{row.id}: {incident.title} {card_link(incident)}")

    # Recorded: on the card with Expire, on the timeline, in the audit log as an approval by the requester.
    [block] = wait_for(lambda: shown_silences(slack, incident), what="the silence on the card")
    assert f"`{matchers}`" in block["text"]["text"] and "<@U0ALICE>" in block["text"]["text"]
    [stored] = silence_rows(bot)
    assert (stored.silence_id, stored.approval_id, stored.matchers) == (found["id"], row.id, matchers)
    assert [e.actor for e in timeline(bot, incident.id or 0, "approval_approved")] == ["U0ALICE"]
    assert [e.actor for e in timeline(bot, incident.id or 0, "silenced")] == ["U0ALICE"]
    assert [e for e in audit_events(bot) if e in ("requested", "approved", "executed", "silenced", "result")] == [
        "requested", "approved", "executed", "silenced", "result"]
    # No approval message to click: its outcome alone, in the channel.
    assert silence_posts(slack, incident, "approval") == []
    [outcome] = wait_for(lambda: silence_posts(slack, incident, "approval_result"), what="the outcome posted")
    assert outcome.thread_ts is None and found["id"] in outcome.text

    # The same again, shorter: nothing more to do, said so.
    again = ask(bot, slack, "1h", channel=incident.channel_id or "", command="/silence")
    assert again.startswith(f"`{matchers}` is already silenced until <!date^")
    assert len(rows(bot)) == 1 and len(in_alertmanager(alertmanager, run)) == 1


def test_a_silence_that_needs_approval_waits_for_a_second_person(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    bot = start()  # self_approve_low: false (the default)
    incident, run = open_incident(bot, slack)
    matchers = f'alertname="{ALERTNAME}", pod="{POD}", run="{run}"'  # the given ones, and the incident's alertname

    answer = ask(bot, slack, f'30m pod={POD} run="{run}"', channel=incident.channel_id or "", command="/silence")
    assert answer.startswith(f":lock: Silencing `{matchers}` for 30 min needs a second person's approval "
                             f"(risk *low*): the request is in <#{incident.channel_id}>, until <!date^")
    [message] = wait_for(lambda: silence_posts(slack, incident, "approval"), what="the approval message")
    assert message.thread_ts is None and "requested approval to run alertmanager.silence" in message.text
    assert in_alertmanager(alertmanager, run) == []

    # Asked again while it waits: pointed at the request.
    again = ask(bot, slack, f'30m pod={POD} run="{run}"', channel=incident.channel_id or "", command="/silence",
                user="U0CAROL")
    assert again.startswith(f"<@U0ALICE> already asked to silence `{matchers}` <!date^")
    assert len(rows(bot)) == 1

    # The requester cannot approve it; a second person can.
    decide(bot, slack, incident, message, "U0ALICE")
    [refusal] = wait_for(lambda: answers(slack), what="the refusal")
    assert "a second person must approve it" in refusal
    decide(bot, slack, incident, message, "U0BOB")
    row = finished(bot)
    assert (row.status, row.decided_by) == ("succeeded", "U0BOB")
    [found] = in_alertmanager(alertmanager, run)
    assert found["createdBy"] == "U0BOB" and lasts(found, timedelta(minutes=30))
    assert matcher_set(found) == {("alertname", ALERTNAME, False, True), ("pod", POD, False, True),
                                  ("run", run, False, True)}
    wait_for(lambda: shown_silences(slack, incident), what="the silence on the card")
    assert [s.matchers for s in silence_rows(bot)] == [matchers]


def test_only_the_channels_members_may_silence_and_bad_input_says_how(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    bot = start(self_approve_low=True)
    incident, run = open_incident(bot, slack)
    channel = incident.channel_id or ""
    assert ask(bot, slack, "1h", channel=channel, command="/silence", user="U0DAVE") == (
        f"Only members of <#{channel}> can silence its alerts; join the channel first.")
    assert ask(bot, slack, "1h", channel="C0INCIDENTS", command="/silence").startswith(
        "This channel is not an incident's channel")
    assert ask(bot, slack, "3d", channel=channel, command="/silence").startswith(
        "`3d` is not a duration from 1m to 24h")
    assert ask(bot, slack, "soon", channel=channel, command="/silence").startswith(
        "`soon` is not a duration from 1m to 24h")
    assert ask(bot, slack, "1h pod", channel=channel, command="/silence") == (
        "Nothing was silenced: 'pod' is not label=value. `/silence help` shows how.")
    bad_regex = ask(bot, slack, "1h pod=~(", channel=channel, command="/silence")
    assert bad_regex.startswith("Nothing was silenced: matchers: matcher pod=~: invalid regular expression")
    assert ask(bot, slack, "1h alertname!=X", channel=channel, command="/silence").startswith(
        "Nothing was silenced: 'alertname!=X': this incident's silences are for its own alerts")
    assert "silences are for its own alerts" in ask(bot, slack, "1h alertname=SecurityIncident", channel=channel,
                                                    command="/silence")
    assert ask(bot, slack, 'pod="api', channel=channel, command="/silence").startswith("A quote is not closed")
    assert ask(bot, slack, "help", channel=channel, command="/silence").startswith(
        "*`/silence <duration> [label=value ...]`*")
    assert rows(bot) == [] and in_alertmanager(alertmanager, run) == []


def test_japanese_answers_for_a_japanese_user(start: Starter, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    bot = start(self_approve_low=True)
    incident, run = open_incident(bot, slack)
    channel = incident.channel_id or ""

    def ja(text: str, where: str = channel) -> str:
        return ask(bot, slack, text, channel=where, command="/silence", user="U0KENJI")

    assert ja("help").startswith("*`/silence <期間> [ラベル=値 ...]`* をインシデントのチャンネルで")
    assert ja("1h", "C0INCIDENTS").startswith("このチャンネルはインシデントのチャンネルではありません。")
    assert ja("1h") == f"<#{channel}> のメンバーだけがアラートをサイレンスできます。先にチャンネルに参加してください。"
    slack.channels[channel].members.add("U0KENJI")
    assert ja("3d").startswith("`3d` は 1m〜24h の期間ではありません。")
    answer = ja("1h")
    # Not a responder: the policy's approvers (commander, responders) do not include them, so a second person decides.
    assert answer.startswith(f":lock: `{common_matchers(run)}` を 1 h サイレンスするには別の人の承認が必要です")
    # U0BOB is a responder: they may approve their own low-risk silence (of other matchers: that one waits).
    responder = ask(bot, slack, f"4h pod={POD}", channel=channel, command="/silence", user="U0BOB")
    assert responder.startswith(f':no_bell: Silencing `alertname="{ALERTNAME}", pod="{POD}"` for 4 h')


def test_the_cards_silence_menu_silences_the_incidents_alerts(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    bot = start(self_approve_low=True)
    incident, run = open_incident(bot, slack)
    [actions] = [b for b in card_message(slack, incident).blocks if b.get("block_id") == CARD_ACTIONS_BLOCK]
    [menu] = [e for e in actions["elements"] if e["type"] == "overflow"]
    assert [o["text"]["text"] for o in menu["options"]] == ["Silence 1h", "Silence 4h", "Silence 24h"]
    # Each option carries the duration and what every card button carries: the card's token and level.
    assert [o["value"] for o in menu["options"]] == [f"{d}:{incident.card_token}.0" for d in ("1h", "4h", "24h")]

    assert choose(bot, slack, incident, "Silence 4h", "U0DAVE").status_code == 200
    [refusal] = wait_for(lambda: answers(slack), what="the refusal")
    assert refusal == f"Only members of <#{incident.channel_id}> can silence its alerts; join the channel first."
    assert rows(bot) == []

    assert choose(bot, slack, incident, "Silence 4h", "U0CAROL").status_code == 200
    [_, told] = wait_for(lambda: answers(slack)[1:] and answers(slack), what="the answer")
    assert told.startswith(f":no_bell: Silencing `{common_matchers(run)}` for 4 h")
    assert finished(bot).status == "succeeded"
    [found] = in_alertmanager(alertmanager, run)
    assert found["createdBy"] == "U0CAROL" and lasts(found, timedelta(hours=4))
    assert found["comment"].startswith("silenced from the incident card in Slack · oncall-bot incident")
    wait_for(lambda: shown_silences(slack, incident), what="the silence on the card")


def test_for_an_incident_without_a_channel_the_request_goes_to_the_cards_thread(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    bot = start()  # a second person approves
    run = uuid.uuid4().hex[:12]
    incident = open_with_card(bot, group(alert(ALERTNAME, labels={"severity": "warning", "run": run}),
                                         group_key=f'{{}}:{{alertname="{ALERTNAME}",run="{run}"}}'))
    assert incident.channel_id is None and incident.card_channel_id == "C0INCIDENTS"  # a P3: in a thread
    assert choose(bot, slack, incident, "Silence 1h", "U0ALICE").status_code == 200  # a responder
    [told] = wait_for(lambda: answers(slack), what="the answer")
    assert "needs a second person's approval (risk *low*): the request is in the card's thread, until <!date^" \
        in told
    [message] = wait_for(lambda: [m for _, m in slack.tagged("approval")], what="the approval message")
    assert message.thread_ts == incident.card_ts


def test_two_silences_asked_at_once_make_one_request(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    said: list[str] = []

    def one(user: str) -> None:
        said.append(ask(bot, slack, "1h", channel=incident.channel_id or "", command="/silence", user=user))

    threads = [threading.Thread(target=one, args=(user,)) for user in ("U0ALICE", "U0BOB")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)
    [row] = rows(bot)
    first, second = sorted(said, key=lambda text: not text.startswith(":lock:"))
    assert first.startswith(":lock: Silencing") and second.startswith(f"<@{row.requested_by}> already asked")


# -- crash safety: Alertmanager's answer lost ----------------------------------------------------------

def test_a_silence_whose_answer_was_lost_is_found_by_its_comment_and_recorded_once(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess, proxy: LossyProxy) -> None:
    bot = start(self_approve_low=True)
    incident, run = open_incident(bot, slack)
    proxy.lose_answer("POST", "/api/v2/silences")
    ask(bot, slack, "1h", channel=incident.channel_id or "", command="/silence")

    row = finished(bot)
    assert row.status == "succeeded", row.result
    [found] = in_alertmanager(alertmanager, run)  # exactly one: created once, never again
    assert (row.result or "").startswith(f"done before the restart: silence {found['id']} is in Alertmanager, "
                                         "found by its comment")
    posts = [e for e in proxy.exchanges if e[:2] == ("POST", "/api/v2/silences")]
    assert posts == [("POST", "/api/v2/silences", "lost_answer")]
    # The retry asked Alertmanager's listing, narrowed by the alertname, instead of creating it again.
    assert ("GET", "/api/v2/silences?" + urlencode({"filter": f'alertname="{ALERTNAME}"'}), "relayed") \
        in proxy.exchanges
    [stored] = silence_rows(bot)
    assert (stored.silence_id, stored.approval_id, stored.created_by) == (found["id"], row.id, "U0ALICE")
    wait_for(lambda: shown_silences(slack, incident), what="the reconciled silence on the card")
    assert len(timeline(bot, incident.id or 0, "silenced")) == 1
    assert audit_events(bot).count("reconciled") == 1 and audit_events(bot).count("silenced") == 1


def test_a_silence_request_lost_on_the_way_did_not_happen(
        start: Starter, slack: FakeSlack, alertmanager: RunningProcess, proxy: LossyProxy) -> None:
    bot = start(self_approve_low=True)
    incident, run = open_incident(bot, slack)
    proxy.lose_request("POST", "/api/v2/silences")
    ask(bot, slack, "1h", channel=incident.channel_id or "", command="/silence")

    row = finished(bot)
    assert row.status == "failed"
    assert (row.result or "").startswith("did not happen: Alertmanager has no silence whose comment names this "
                                         "request; not run again")
    assert in_alertmanager(alertmanager, run) == [] and silence_rows(bot) == []
    assert [e for e in proxy.exchanges if e[:2] == ("POST", "/api/v2/silences")] == [
        ("POST", "/api/v2/silences", "lost_request")]
    assert audit_events(bot).count("reconciled") == 1


# -- the client: listing, and which failures may have taken effect -------------------------------------

def test_list_silences_filters_by_matchers_and_says_what_may_have_happened(
        alertmanager: RunningProcess, proxy: LossyProxy, clock: FakeClock) -> None:
    run, now = uuid.uuid4().hex[:12], clock()
    mine = [{"name": "alertname", "value": "ListedOne", "isRegex": False, "isEqual": True},
            {"name": "run", "value": run, "isRegex": False, "isEqual": True}]
    other = [{"name": "alertname", "value": "ListedTwo", "isRegex": False, "isEqual": True},
             {"name": "run", "value": run, "isRegex": False, "isEqual": True}]
    with AlertmanagerClient(proxy.url) as client:
        first = client.create_silence(mine, now, now + timedelta(hours=1), "U0ALICE", "the first")
        client.create_silence(other, now, now + timedelta(hours=1), "U0BOB", "the second")
        client.expire_silence(first)
        [found] = client.list_silences(['alertname="ListedOne"', f'run="{run}"'])
        assert (found.id, found.created_by, found.comment, found.state) == (first, "U0ALICE", "the first", "expired")
        assert [(m.name, m.value, m.is_regex, m.is_equal) for m in found.matchers] == [
            ("alertname", "ListedOne", False, True), ("run", run, False, True)]
        assert found.ends_at - found.starts_at <= timedelta(hours=1)
        assert {s.comment for s in client.list_silences([f'run="{run}"'])} == {"the first", "the second"}

        # No answer: it may have happened (retry, and look); a refusal: it did not, and will not.
        proxy.lose_answer("POST", "/api/v2/silences")
        with pytest.raises(AlertmanagerError) as lost:
            client.create_silence(mine, now, now + timedelta(hours=1), "U0ALICE", "the third")
        assert lost.value.retryable and "cannot reach Alertmanager" in str(lost.value)
        assert "the third" in {s.comment for s in client.list_silences([f'run="{run}"'])}  # it did
        with pytest.raises(AlertmanagerError) as refused:
            client.create_silence(mine, now, now - timedelta(hours=1), "U0ALICE", "backwards")
        assert not refused.value.retryable and "HTTP 400" in str(refused.value)


# -- what it silences, and the command's step rows -------------------------------------------------------

def test_the_incidents_matchers_are_its_common_labels_and_never_a_cut_one() -> None:
    incident = Incident(title="t", alertname="A", severity="P2",
                        labels={"alertname": "A", "pod": 'p"1\\', "job": "x…[cut 12 chars]", "bad-name": "v",
                                "…[cut 3 entries]": "", "zone": "eu"})
    assert silences.incident_matchers(incident) == 'alertname="A", pod="p\\"1\\\\", zone="eu"'
    assert silences.incident_matchers(Incident(title="t", alertname="A", severity="P2", labels={"pod": "p"})) is None
    many = Incident(title="t", alertname="A", severity="P2",
                    labels={"alertname": "A", **{f"l{n:02d}": "v" for n in range(30)}})
    assert (silences.incident_matchers(many) or "").count("=") == silences.MAX_MATCHERS
    assert silences.given_matchers(["pod=api-1", "namespace=~prod-.*", "severity!=info"], "A") == (
        'alertname="A", pod="api-1", namespace=~"prod-.*", severity!="info"')
    assert silences.given_matchers(["alertname=A", "pod=p"], "A") == 'alertname="A", pod="p"'
    for other in (["alertname=B"], ["alertname=~.*"], ["alertname!=A"], ["alertname=~A|SecurityIncident"]):
        with pytest.raises(ValueError, match="silences are for its own alerts"):
            silences.given_matchers(other, "A")  # never another incident's, or every, alert
    with pytest.raises(ValueError, match="is not label=value"):
        silences.given_matchers(["=x"], "A")


def test_a_commands_step_is_not_part_of_the_runbook(db: Database, clock: FakeClock) -> None:
    now = clock()
    with db.session() as session:
        incident = Incident(title="t", alertname="A", severity="P2", created_at=now, updated_at=now)
        session.add(incident)
        session.flush()
        row = steps.add_command_step(session, incident, silences.COMMAND, silences.ACTION,
                                     {"matchers": 'alertname="A"'}, channel="C1")
        assert steps.is_command_step(row) and row.runbook_id == "/silence" and row.step_id == "silence"
        token, incident_id = row.token, incident.id or 0
    with db.read() as session:
        assert steps.steps_for(session, incident_id) == []  # its runbook is still to be posted, whole
        assert steps.find_step(session, token) is None  # no button names it
