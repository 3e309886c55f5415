"""Declaring an incident by hand: `/incident new` and the Declare incident message shortcut open
a modal (in the Slack fake, through views.open with its trigger-id rules); its signed
view_submission opens the incident as an alert would: channel, responders, card, runbook,
escalation timers, announcement. Private incidents (declared so, or by `channels.private_when`,
Alertmanager's included) get a private channel, an announcement without details, and a hidden
title in `/incident list` for people outside their channel. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from bot.config import OncallConfig
from bot.escalation import PAGE
from bot.models import Incident, Paging, TimelineEntry, Timer, TimerStatus
from commands.declare_blocks import private_announcement
from commands.ids import DECLARE_SHORTCUT, DECLARE_VIEW
from tests.alerts import alert, group
from tests.conftest import ROUTING_KEY, FakeClock, RunningBot, make_settings, start_bot, wait_for
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import message_action, post_to_slack_events, view_submission
from tests.test_incident_command import ask, settle

MANIFEST = Path(__file__).parent.parent / "manifest.yml"
TITLE = "Checkout fails for card payments"


def config(**extra: Any) -> OncallConfig:
    return OncallConfig.model_validate({
        "channels": {"announce": "C0INCIDENTS", "private_when": [{"alertname": "SecurityIncident"}]},
        "responders": [{"match": {"service": "payments"}, "invite": ["U0BOB"]},
                       {"match": {"severity": "critical"}, "invite": ["U0CAROL"]}],
        **extra,
    })


@pytest.fixture
def bot(database_url: str, slack: FakeSlack, clock: FakeClock) -> Iterator[RunningBot]:
    slack.add_user("U0JUN", "jun@example.com", "jun", locale="ja-JP")
    slack.add_channel("general", channel_id="C0GENERAL", members={"U0ALICE", "U0BOB", "U0CAROL"})
    running = start_bot(make_settings(database_url, slack, config()), clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


# -- helpers ---------------------------------------------------------------------------------------

def new_views(slack: FakeSlack, before: set[str]) -> list[dict[str, Any]]:
    return [view for view_id, view in sorted(slack.views.items()) if view_id not in before]


def open_modal(bot: RunningBot, slack: FakeSlack, text: str = "", *, user: str = "U0ALICE",
               channel: str = "C0GENERAL") -> tuple[str, dict[str, Any]]:
    """`/incident new text`: (the private answer, the modal Slack opened)."""
    before = set(slack.views)
    answer = ask(bot, slack, f"new {text}".strip(), channel=channel, user=user)
    views = new_views(slack, before)
    assert len(views) == 1, "one modal, opened with the command's trigger id"
    return answer, views[0]


def fields(title: str, severity: str | None = "P2", *, service: str | None = None, description: str | None = None,
           private: bool = False) -> dict[str, dict[str, Any]]:
    """The modal's state as Slack submits it (an empty optional input: value null)."""
    option = {"text": {"type": "plain_text", "text": "Private"}, "value": "private"}
    return {
        "title": {"title": {"type": "plain_text_input", "value": title}},
        "severity": {"severity": {"type": "static_select", "selected_option": {
            "text": {"type": "plain_text", "text": severity}, "value": severity} if severity else None}},
        "service": {"service": {"type": "plain_text_input", "value": service}},
        "description": {"description": {"type": "plain_text_input", "value": description}},
        "private": {"private": {"type": "checkboxes", "selected_options": [option] if private else []}},
    }


def submit(bot: RunningBot, view: dict[str, Any], values: dict[str, dict[str, Any]], *,
           user: str = "U0ALICE") -> httpx.Response:
    reply = post_to_slack_events(bot.url, view_submission(view, values, user=user))
    assert reply.status_code == 200, reply.text
    return reply


def incidents(bot: RunningBot) -> list[Incident]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)))  # type: ignore[arg-type]


def ready(bot: RunningBot, incident_id: int | None) -> Incident:
    """The incident once its card is posted and its Slack work is done."""
    def posted() -> Incident | None:
        with bot.services.db.read() as session:
            row = session.get(Incident, incident_id)
            return row if row is not None and row.card_ts else None

    wait_for(posted, what="the declared incident's card")
    settle(bot)
    found = posted()
    assert found is not None
    return found


def timeline(bot: RunningBot, incident_id: int | None) -> list[TimelineEntry]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
                                    .order_by(TimelineEntry.at, TimelineEntry.id)))  # type: ignore[arg-type]


def element(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    element: dict[str, Any] = next(b for b in view["blocks"] if b.get("block_id") == block_id)["element"]
    return element


def shown_text(messages: list[Message]) -> str:
    return json.dumps([(m.text, m.blocks) for m in messages], ensure_ascii=False)


# -- /incident new ---------------------------------------------------------------------------------

def test_new_opens_the_modal_and_its_submission_opens_the_incident_as_an_alert_would(
        bot: RunningBot, slack: FakeSlack) -> None:
    answer, view = open_modal(bot, slack, TITLE)
    assert answer == ":memo: Fill in the form to declare the incident."
    assert view["callback_id"] == DECLARE_VIEW and view["title"]["text"] == "Declare an incident"
    assert element(view, "title")["initial_value"] == TITLE  # the words after `new`
    assert [o["value"] for o in element(view, "severity")["options"]] == ["P1", "P2", "P3", "P4"]
    assert element(view, "private")["type"] == "checkboxes"

    reply = submit(bot, view, fields(TITLE, "P2", service="payments", description="since 14:02, 30% of orders"))
    assert reply.json()["response_action"] == "update"  # the modal turns into the confirmation
    [row] = incidents(bot)
    assert f"Incident #{row.id} is declared and you are its commander" in json.dumps(reply.json()["view"])
    assert (row.source, row.commander, row.severity, row.service, row.title, row.private) == \
        ("slack", "U0ALICE", "P2", "payments", TITLE, False)
    assert row.labels == {"alertname": "ManualIncident", "severity": "error", "service": "payments"}
    first = timeline(bot, row.id)[0]
    assert (first.actor, first.kind, first.text) == ("U0ALICE", "created", "declared the incident")
    assert first.data["group_key"].startswith("manual:") and first.data["source"] == "slack"

    row = ready(bot, row.id)
    channel = slack.channels[row.channel_id or ""]
    assert not channel.is_private and row.card_channel_id == row.channel_id  # a P2: a channel of its own
    assert {"U0ALICE", "U0BOB"} <= channel.members  # the declarer, and the `service: payments` responders
    assert "U0CAROL" not in channel.members  # the `severity: critical` rule is for P1s
    assert "since 14:02, 30% of orders" in shown_text([m for m in channel.messages if m.ts == row.card_ts])
    assert any("No runbook matches ManualIncident" in m.text for m in channel.messages)  # runbooks were asked
    [(where, announced)] = slack.tagged("announcement")
    assert where == "C0INCIDENTS" and TITLE in shown_text([announced])
    with bot.services.db.read() as session:
        pending = list(session.scalars(select(Timer).where(Timer.incident_id == row.id,  # type: ignore[arg-type]
                                                           Timer.status == TimerStatus.PENDING)))
    page_minutes = config().escalation.for_severity("P2").page_minutes
    assert page_minutes is not None
    assert [t.due_at for t in pending if t.kind == PAGE] == [row.created_at + timedelta(minutes=page_minutes)]


def test_a_submission_sent_again_declares_one_incident(bot: RunningBot, slack: FakeSlack) -> None:
    _, view = open_modal(bot, slack)
    body = view_submission(view, fields(TITLE, "P1"))
    first = post_to_slack_events(bot.url, body)
    again = post_to_slack_events(bot.url, body)  # Slack's retry, or a replay: the same request
    assert first.json()["response_action"] == "update"
    assert again.status_code == 200 and again.content == b""  # answered, not acted on
    double = submit(bot, view, fields(TITLE, "P1"))  # the same modal submitted twice (a new trigger id)
    [row] = incidents(bot)
    assert f"Incident #{row.id} is declared" in json.dumps(double.json())  # the same incident, found again
    ready(bot, row.id)
    assert len(slack.calls_to("conversations.create")) == 1
    assert len(slack.tagged("card")) == 1 and len(slack.tagged("announcement")) == 1


def test_the_message_shortcut_prefills_the_modal_from_the_message(bot: RunningBot, slack: FakeSlack) -> None:
    shortcut = next(s for s in yaml.safe_load(MANIFEST.read_text())["features"]["shortcuts"]
                    if s["callback_id"] == DECLARE_SHORTCUT)
    assert shortcut["type"] == "message" and len(shortcut["name"]) <= 24
    posted = Message(ts="1700000000.000200", text="<@U0BOB> checkout returns 500 &amp; payments fail", blocks=[],
                     user="U0CAROL")
    slack.channels["C0GENERAL"].messages.append(posted)
    before = set(slack.views)
    reply = post_to_slack_events(bot.url, message_action(DECLARE_SHORTCUT, {"ts": posted.ts, "text": posted.text,
                                                                             "user": posted.user}))
    assert reply.status_code == 200
    [view] = wait_for(lambda: new_views(slack, before), what="the modal")
    link = "https://acme.slack.com/archives/C0GENERAL/p1700000000000200"
    description = element(view, "description")["initial_value"]
    assert description == f"@U0BOB checkout returns 500 & payments fail\n\nDeclared from this message: {link}"
    assert "initial_value" not in element(view, "title")

    submit(bot, view, fields("Checkout 500s", "P3", description=description))
    [row] = incidents(bot)
    first = timeline(bot, row.id)[0]
    assert (first.text, first.data["via"], first.data["message_url"]) == \
        ("declared the incident from a message", "shortcut", link)
    assert row.annotations["description"] == description
    row = ready(bot, row.id)
    assert row.channel_id is None and row.card_channel_id == "C0INCIDENTS"  # a P3: a thread, as an alert's


def test_invalid_titles_are_answered_in_the_modal_and_a_corrected_one_declares(
        bot: RunningBot, slack: FakeSlack) -> None:
    _, view = open_modal(bot, slack)
    empty = submit(bot, view, fields("   ")).json()
    assert empty == {"response_action": "errors", "errors": {"title": "Give the incident a title."}}
    long = submit(bot, view, fields("x" * 151, None)).json()
    assert long == {"response_action": "errors", "errors": {"title": "At most 150 characters (this is 151).",
                                                            "severity": "Choose a severity."}}
    assert incidents(bot) == []
    # The modal stays open with the same id and hash: the corrected submission is acted on.
    assert submit(bot, view, fields("x" * 150)).json()["response_action"] == "update"
    assert [len(i.title) for i in incidents(bot)] == [150]


def test_a_japanese_user_gets_the_modal_errors_and_confirmation_in_japanese(
        bot: RunningBot, slack: FakeSlack) -> None:
    answer, view = open_modal(bot, slack, user="U0JUN")
    assert answer == ":memo: フォームに入力してインシデントを宣言してください。"
    assert view["title"]["text"] == "インシデントを宣言" and view["submit"]["text"] == "宣言する"
    labels = [b["label"]["text"] for b in view["blocks"] if b["type"] == "input"]
    assert labels == ["タイトル", "重大度", "サービス", "説明", "公開範囲"]
    assert submit(bot, view, fields(""), user="U0JUN").json()["errors"] == {"title": "タイトルを入力してください。"}
    done = submit(bot, view, fields("決済が失敗する", "P4"), user="U0JUN").json()
    assert "を宣言しました。あなたが指揮者です。" in json.dumps(done["view"], ensure_ascii=False)


# -- who may declare: a full member of this workspace (bot.policy, Act.DECLARE) -----------------------

GUEST_REFUSAL = (":no_entry: Guests of this workspace cannot declare incidents. Ask a member of it, or the on-call "
                 "(`/oncall`), to declare it.")
OUTSIDER_REFUSAL = (":no_entry: Only members of this workspace can declare its incidents. Ask one of them, or the "
                    "on-call (`/oncall`), to declare it.")


def shortcut_answer(bot: RunningBot, slack: FakeSlack, user: str, *, user_team: str = "T0001") -> dict[str, Any]:
    """The Declare incident shortcut chosen by `user` on a message of #general: its private answer."""
    posted = slack.post_as("C0GENERAL", "U0BOB", "checkout returns 500")
    url = slack.response_url()
    path = url.split(str(slack.port), 1)[1]
    reply = post_to_slack_events(bot.url, message_action(DECLARE_SHORTCUT, {"ts": posted.ts, "text": posted.text,
                                                                             "user": posted.user},
                                                         user=user, response_url=url, user_team=user_team))
    assert reply.status_code == 200
    answer: dict[str, Any] = wait_for(lambda: next((m for p, m in list(slack.responses) if p == path), None),
                                      what="the shortcut's private answer")
    assert answer["response_type"] == "ephemeral"
    return answer


def refused_text(reply: httpx.Response) -> str:
    """The modal a refused submission turned into: its text (it says why, and nothing is declared)."""
    body = reply.json()
    assert body["response_action"] == "update" and body["view"]["title"]["text"] == "Not declared", body
    [block] = body["view"]["blocks"]
    text: str = block["text"]["text"]
    return text


@pytest.mark.parametrize("guest", ["multi", "single"])  # users.info: is_restricted / is_ultra_restricted
def test_a_guest_can_neither_open_the_form_nor_submit_it(bot: RunningBot, slack: FakeSlack, guest: str) -> None:
    slack.add_user("U0GUEST", "guest@partner.example", "guest", guest=guest)
    slack.add_user("U0GAST", "gast@partner.example", "gast", locale="ja-JP", guest=guest)
    slack.channels["C0GENERAL"].members.update({"U0GUEST", "U0GAST"})
    before = set(slack.views)
    assert ask(bot, slack, f"new {TITLE}", channel="C0GENERAL", user="U0GUEST") == GUEST_REFUSAL
    assert ask(bot, slack, "new", channel="C0GENERAL", user="U0GAST").startswith(
        ":no_entry: ゲストはインシデントを宣言できません。")
    assert shortcut_answer(bot, slack, "U0GUEST")["text"] == GUEST_REFUSAL
    assert set(slack.views) == before  # no form opened for them

    slack.add_user("U0DAN", "dan@example.com", "dan")
    _, view = open_modal(bot, slack, user="U0DAN")  # a member opens the form, then is made a guest
    slack.users["U0DAN"].guest = guest
    assert refused_text(submit(bot, view, fields(TITLE, "P1"), user="U0DAN")) == GUEST_REFUSAL
    assert incidents(bot) == []
    assert not slack.calls_to("conversations.create") and not slack.tagged("announcement")

    _, view = open_modal(bot, slack)  # a member may
    assert submit(bot, view, fields(TITLE, "P1")).json()["response_action"] == "update"
    assert [i.commander for i in incidents(bot)] == ["U0ALICE"]


def test_people_of_another_workspace_cannot_declare(bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0EXT", "ext@partner.example", "ext", team_id="T0PARTNER")  # a Slack Connect user
    slack.channels["C0GENERAL"].members.add("U0EXT")
    before = set(slack.views)
    assert ask(bot, slack, "new", channel="C0GENERAL", user="U0EXT") == OUTSIDER_REFUSAL  # users.info says so
    assert shortcut_answer(bot, slack, "U0EXT", user_team="T0PARTNER")["text"] == OUTSIDER_REFUSAL
    assert set(slack.views) == before

    _, view = open_modal(bot, slack)  # the payload names another workspace for its user: refused too
    reply = post_to_slack_events(bot.url, view_submission(view, fields(TITLE), user_team="T0PARTNER"))
    assert reply.status_code == 200 and refused_text(reply) == OUTSIDER_REFUSAL
    assert incidents(bot) == []


def test_when_slack_cannot_say_who_declares_nothing_is_declared(bot: RunningBot, slack: FakeSlack) -> None:
    _, view = open_modal(bot, slack)
    slack.fail_next("users.info", "internal_error")
    assert refused_text(submit(bot, view, fields(TITLE))) == \
        "Could not check that you may declare an incident (Slack: internal_error); try again."
    assert incidents(bot) == []  # fail closed
    assert submit(bot, view, fields(TITLE)).json()["response_action"] == "update"  # Slack answers again
    assert len(incidents(bot)) == 1


# -- private incidents -------------------------------------------------------------------------------

def test_a_private_declaration_gets_a_private_channel_a_bare_announcement_and_a_hidden_title(
        bot: RunningBot, slack: FakeSlack) -> None:
    _, view = open_modal(bot, slack)
    submit(bot, view, fields("Leaked API keys in a public repo", "P3", service="payments", private=True))
    [row] = incidents(bot)
    assert row.private
    row = ready(bot, row.id)
    channel = slack.channels[row.channel_id or ""]  # a P3, yet a channel of its own: never the announce thread
    assert channel.is_private and row.card_channel_id == channel.id
    assert channel.members == {"UBOT", "U0ALICE", "U0BOB"}
    [(where, announced)] = slack.tagged("announcement")
    assert where == "C0INCIDENTS"
    assert announced.text == (f":lock: A private *P3* incident (#{row.id}) was declared. Ask its commander "
                              "<@U0ALICE> for details.")
    everything = shown_text(slack.messages("C0INCIDENTS"))
    assert "Leaked" not in everything and "payments" not in everything and channel.name not in everything

    _, other = open_modal(bot, slack)  # a public incident beside it: its title is for everyone
    submit(bot, other, fields("Slow search", "P4"))
    outsider = ask(bot, slack, "list", channel="C0GENERAL", user="U0CAROL")
    assert ":lock: _private incident_" in outsider and "Leaked" not in outsider and "Slow search" in outsider
    member = ask(bot, slack, "list", channel="C0GENERAL", user="U0BOB")
    assert "Leaked API keys in a public repo" in member and "private incident" not in member


def test_a_private_when_rule_makes_an_alertmanager_incident_private(bot: RunningBot, slack: FakeSlack) -> None:
    payload = group(alert("SecurityIncident", labels={"severity": "warning", "service": "auth", "team": "sec"},
                          annotations={"summary": "Brute force on admin login"}),
                    group_key='{}:{alertname="SecurityIncident"}')
    reply = bot.post_alerts(payload)
    assert reply.status_code == 200, reply.text
    row = ready(bot, reply.json()["incident_id"])
    assert (row.source, row.private, row.commander) == ("alertmanager", True, None)
    assert slack.channels[row.channel_id or ""].is_private
    [(_, announced)] = slack.tagged("announcement")
    assert announced.text == f":lock: A private *P3* incident (#{row.id}) was opened. Ask the on-call (`/oncall`) " \
        "for details."
    assert "Brute force" not in shown_text(slack.messages("C0INCIDENTS"))


def test_the_private_announcement_in_japanese_names_no_detail() -> None:
    row = Incident(id=7, title="Secret", alertname="SecurityIncident", severity="P1", service="auth",
                   commander="U0ALICE", private=True)
    text, blocks = private_announcement(row, "ja")
    assert text == ":lock: 非公開の *P1* インシデント(#7)が宣言されました。詳細は指揮者 <@U0ALICE> に確認してください。"
    assert "Secret" not in json.dumps(blocks) and "auth" not in json.dumps(blocks)


# -- escalation: a declared P1 pages at once, as an alert's would --------------------------------------

def test_a_declared_p1_is_paged_through_pagerduty_at_once(
        database_url: str, slack: FakeSlack, clock: FakeClock, pagerduty: FakePagerDuty,
        running: list[RunningBot]) -> None:
    settings = make_settings(database_url, slack, config(pagerduty={"routes": [
        {"match": {"service": "payments"}, "routing_key": ROUTING_KEY}]}),
        pagerduty_events_url=pagerduty.base_url, pagerduty_api_url=pagerduty.base_url,
        pagerduty_ca_file=pagerduty.ca_file)
    bot = start_bot(settings, clock=clock)
    running.append(bot)
    _, view = open_modal(bot, slack, channel="C0INCIDENTS")
    submit(bot, view, fields(TITLE, "P1", service="payments"))
    [row] = incidents(bot)
    with bot.services.db.read() as session:
        key = session.get(Paging, row.id).dedup_key  # type: ignore[union-attr]
    bot.services.timers.fire_due()  # a P1 pages at once
    wait_for(lambda: [e.action for e in pagerduty.events if e.dedup_key == key] == ["trigger"], what="the page")
    [event] = [e for e in pagerduty.events if e.dedup_key == key]
    assert event.routing_key == ROUTING_KEY and TITLE in event.payload["summary"]
    row = ready(bot, row.id)
    assert {"U0ALICE", "U0BOB", "U0CAROL"} <= slack.channels[row.channel_id or ""].members  # P1: `critical` too


def test_private_when_and_the_declared_alertname_are_checked_with_their_line(tmp_path: Path) -> None:
    from bot.config import ConfigError, load_config_file

    path = tmp_path / "oncall.yaml"
    path.write_text("channels:\n  private_when:\n    - {}\n    - {alertname: '('}\nincidents:\n"
                    "  declared_alertname: 'not a name'\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    problems = caught.value.problems
    assert len(problems) == 2 and problems[0].startswith(f"{path}:2: channels.private_when: an empty match")
    assert problems[1].startswith(f"{path}:6: incidents.declared_alertname:")
