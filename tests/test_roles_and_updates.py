"""Roles (`/incident assign`), status updates (`/incident update` and its modal) and timeline
capture (a :pushpin: or a pin on a message of an incident's channel), through signed requests to
the running bot: slash commands, `view_submission`, `reaction_added` and `pin_added` events.

Effects are read where a person would see them: the private answer, the modal the Slack fake
opened, the messages it holds (tagged, so "posted once" is countable), the card, and the
timeline and timers in the database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from bot.config import OncallConfig
from bot.models import CapturedMessage, TimelineEntry, TimerStatus
from tests.conftest import FakeClock, RunningBot, make_settings, start_bot, wait_for
from tests.fakes.slack import FakeSlack
from tests.slack_requests import post_to_slack_events, signed_headers, view_submission
from tests.test_incident_command import ask, card, incident, open_in_channel, settle, timeline, timers

_EVENT_IDS = itertools.count(1)


# -- helpers -------------------------------------------------------------------------------------

def send_event(bot: RunningBot, event: dict[str, Any], *, event_id: str | None = None,
               retry_num: int | None = None) -> None:
    """An Events API delivery as Slack sends it: JSON, signed; a redelivery repeats its event id."""
    body = json.dumps({
        "token": "legacy", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
        "event_id": event_id or f"Ev{next(_EVENT_IDS):08d}", "event_time": int(time.time()),
        "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True, "is_enterprise_install": False}],
        "event": {**event, "event_ts": f"{time.time():.6f}"},
    }).encode()
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    if retry_num is not None:
        headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
    reply = httpx.post(f"{bot.url}/slack/events", content=body, headers=headers, timeout=10)
    assert reply.status_code == 200, reply.text


def pushpin(channel: str, ts: str, *, user: str = "U0BOB", reaction: str = "pushpin") -> dict[str, Any]:
    return {"type": "reaction_added", "user": user, "reaction": reaction, "item_user": "U0CAROL",
            "item": {"type": "message", "channel": channel, "ts": ts}}


def pinned(channel: str, message: dict[str, Any], *, user: str = "U0BOB") -> dict[str, Any]:
    return {"type": "pin_added", "user": user, "channel_id": channel,
            "item": {"type": "message", "channel": channel, "created": int(time.time()), "created_by": user,
                     "message": message}}


def entries(bot: RunningBot, incident_id: int | None, kind: str) -> list[TimelineEntry]:
    return [e for e in timeline(bot, incident_id) if e.kind == kind]


def captured(bot: RunningBot) -> list[CapturedMessage]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(CapturedMessage).order_by(CapturedMessage.id)))


def update_modal(slack: FakeSlack, before: int) -> dict[str, Any]:
    """The status update modal the bot opened after the first `before` views."""
    return wait_for(lambda: next((v for v in list(slack.views.values())[before:]
                                  if v.get("callback_id") == "status_update_modal"), None),
                    what="the status update modal")


def submit(bot: RunningBot, view: dict[str, Any], *, user: str = "U0ALICE", **fields: str) -> httpx.Response:
    values = {name: {name: {"type": "plain_text_input", "value": value}} for name, value in fields.items()}
    reply = post_to_slack_events(bot.url, view_submission(view, values, user=user))
    assert reply.status_code == 200, reply.text
    return reply


# -- /incident assign ------------------------------------------------------------------------------

def test_assign_gives_each_role_invites_the_person_and_shows_it_on_the_card_and_timeline(
        bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0DAVE", "dave@example.com", "dave")
    slack.add_user("U0ERIN", "erin@example.com", "erin")
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    assert "U0DAVE" not in slack.channels[channel].members
    edits, before = card(slack, row)
    assert "*Commander* —" in before and "no status update yet" in before

    answer = ask(bot, slack, "assign commander <@U0DAVE|dave>", channel=channel)
    assert answer == (f":busts_in_silhouette: <@U0DAVE> is now the *commander* of incident #{row.id}.\n"
                      "They are invited to this channel.")
    assert ask(bot, slack, "assign Scribe <@U0ERIN>", channel=channel).startswith(
        f":busts_in_silhouette: <@U0ERIN> is now the *scribe* of incident #{row.id}.")
    assert "is now the *comms*" in ask(bot, slack, "assign comms <@U0CAROL|carol>", channel=channel)

    after = incident(bot, row.id)
    assert (after.commander, after.scribe, after.comms) == ("U0DAVE", "U0ERIN", "U0CAROL")
    invited = wait_for(lambda: {c.args["users"] for c in slack.calls_to("conversations.invite")
                                if c.args.get("channel") == channel} >= {"U0DAVE", "U0ERIN", "U0CAROL"},
                       what="the invitations")  # carol was in already: asked anyway, Slack says so
    assert invited and {"U0DAVE", "U0ERIN"} <= slack.channels[channel].members
    # The timeline names them; a mention without a name (<@U0ERIN>) is named by users.info.
    assert [(e.actor, e.text, e.data["role"]) for e in entries(bot, row.id, "role")] == [
        ("U0ALICE", "commander: @dave", "commander"), ("U0ALICE", "scribe: @erin", "scribe"),
        ("U0ALICE", "comms: @carol", "comms")]
    wait_for(lambda: (found := card(slack, row))[0] > edits
             and "*Commander* <@U0DAVE> · *Scribe* <@U0ERIN> · *Comms* <@U0CAROL>" in found[1],
             what="the roles on the card")


def test_reassigning_says_who_had_the_role_and_the_same_person_again_changes_nothing(
        bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    ask(bot, slack, "assign commander <@U0BOB|bob>", channel=channel)
    answer = ask(bot, slack, "assign commander <@U0CAROL|carol>", channel=channel, user="U0BOB")
    assert answer.startswith(f":busts_in_silhouette: <@U0CAROL> is now the *commander* of incident #{row.id}, "
                             "instead of <@U0BOB>.")
    assert ask(bot, slack, "assign commander <@U0CAROL>", channel=channel) == "<@U0CAROL> is already its *commander*."
    changes = entries(bot, row.id, "role")
    # whoever had it is named by users.info (the fake's name for U0BOB: u0bob)
    assert [(e.actor, e.text) for e in changes] == [("U0ALICE", "commander: @bob"),
                                                    ("U0BOB", "commander: @carol (was @u0bob)")]
    assert changes[-1].data == {"role": "commander", "user": "U0CAROL", "previous": "U0BOB"}
    assert incident(bot, row.id).commander == "U0CAROL"


def test_anything_but_a_role_and_one_mention_is_refused_with_the_usage(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    usage = ("Give the role and the person: `/incident assign commander @name` (roles: `commander`, `scribe`, "
             "`comms`; one person, mentioned as Slack completes it).")
    for text in ("assign", "assign commander", "assign commander bob", "assign commander @bob",
                 "assign boss <@U0BOB>", "assign commander <@U0BOB> <@U0CAROL>", "assign commander <#C0001|general>",
                 "assign commander <!channel>", "assign <@U0BOB> commander"):
        assert ask(bot, slack, text, channel=channel) == usage, text
    assert entries(bot, row.id, "role") == []
    after = incident(bot, row.id)
    assert (after.commander, after.scribe, after.comms) == (None, None, None)


def test_assign_is_put_to_the_policy_and_a_refused_invite_is_said_in_the_channel(
        bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0DAVE", "dave@example.com", "dave")
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    refused = ask(bot, slack, "assign scribe <@U0DAVE>", channel=channel, user="U0DAVE")  # not in the channel
    assert refused == f"Only members of <#{channel}> can assign its roles; join the channel first."
    assert incident(bot, row.id).scribe is None

    ask(bot, slack, "assign scribe <@U0GHOST|ghost>", channel=channel)  # Slack has no such user
    wait_for(lambda: any("Could not invite <@U0GHOST> (scribe) to this channel: user_not_found" in m.text
                         for m in slack.messages(channel)), what="the refused invitation, said in the channel")
    assert incident(bot, row.id).scribe == "U0GHOST"  # the role stands; the channel is told to invite by hand


def members_calls(slack: FakeSlack, channel: str, since: int) -> list[dict[str, Any]]:
    """The arguments of the conversations.members calls for `channel` after the first `since` calls."""
    return [c.args for c in slack.calls_to("conversations.members")[since:] if c.args.get("channel") == channel]


def test_membership_is_read_page_by_page_in_a_channel_of_thousands(bot: RunningBot, slack: FakeSlack) -> None:
    """conversations.members gives at most 1,000 members a page: a member on the third page is a
    member, one on none of them is not, and the pages stop where the answer is."""
    for user in ("U0DAVE", "U0ERIN"):
        slack.add_user(user, f"{user.lower()}@example.com", user.lower())
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    members = slack.channels[channel].members
    members.update(f"U0{n:07d}" for n in range(2500))  # listed before everyone else (the fake lists in order)
    members.add("U0DAVE")  # the 2,504th: on the third page
    since = len(slack.calls_to("conversations.members"))
    assert "is now the *scribe*" in ask(bot, slack, "assign scribe <@U0DAVE>", channel=channel, user="U0DAVE")
    calls = members_calls(slack, channel, since)
    assert [(c.get("cursor"), c["limit"]) for c in calls] == [(None, "1000"), ("c:1000", "1000"), ("c:2000", "1000")]

    since = len(slack.calls_to("conversations.members"))
    refused = ask(bot, slack, "assign comms <@U0ERIN>", channel=channel, user="U0ERIN")  # on no page
    assert refused == f"Only members of <#{channel}> can assign its roles; join the channel first."
    assert len(members_calls(slack, channel, since)) == 3  # every page, then Slack's empty next_cursor
    assert incident(bot, row.id).comms is None


def test_a_membership_check_is_bounded_in_pages_and_time_and_then_fails_closed(
        bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0DAVE", "dave@example.com", "dave")
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    slack.channels[channel].members.update({*(f"U0{n:07d}" for n in range(5200)), "U0DAVE"})  # the 6th page
    since = len(slack.calls_to("conversations.members"))
    refused = ask(bot, slack, "assign scribe <@U0DAVE>", channel=channel, user="U0DAVE")
    assert refused == f"Could not check that you are in <#{channel}> (too_many_members); try again."
    assert len(members_calls(slack, channel, since)) == 5  # 5,000 members read, no more

    slack.channels[channel].members.difference_update(f"U0{n:07d}" for n in range(5200))
    held = slack.hold("conversations.members", when="before")  # Slack slow to answer: the ack cannot wait
    try:
        started = time.monotonic()
        refused = ask(bot, slack, "assign scribe <@U0DAVE>", channel=channel, user="U0DAVE")
        assert time.monotonic() - started < 2.5
        assert refused == f"Could not check that you are in <#{channel}> (timeout); try again."
    finally:
        held.release()
    assert incident(bot, row.id).scribe is None
    assert "is now the *scribe*" in ask(bot, slack, "assign scribe <@U0DAVE>", channel=channel, user="U0DAVE")


# -- /incident update ----------------------------------------------------------------------------------

def test_update_modal_posts_in_the_channel_and_the_announcement_thread_once_and_resets_the_reminder(
        bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    announced = incident(bot, row.id)
    assert announced.announce_ts is not None
    [reminder] = [t for t in timers(bot, row.id, TimerStatus.PENDING) if t.kind == "reminder"]
    edits, _ = card(slack, row)

    views = len(slack.views)
    assert ask(bot, slack, "update", channel=channel).startswith(":memo: The status update form is open")
    view = update_modal(slack, views)
    assert view["title"]["text"] == "Status update"
    assert [b["block_id"] for b in view["blocks"] if b["type"] == "input"] == ["known", "impact", "next_steps"]
    assert all(b["element"]["multiline"] for b in view["blocks"] if b["type"] == "input")

    slack.lose_answer("chat.postMessage", times=2)  # both posts reach Slack, their answers do not: retried
    submitted_at = bot.services.clock()
    reply = submit(bot, view, known="api pods crash-loop after v42 <!channel>", impact="checkout errors for 30%",
                   next_steps="roll back to v41")
    assert reply.content == b""  # the modal closes

    posts = wait_for(lambda: len(found := slack.tagged("status_update")) == 2 and found, timeout=20,
                     what="the update in the channel and in the announcement's thread")
    by_where = {m.metadata["event_payload"]["where"]: (where, m) for where, m in posts}  # type: ignore[index]
    assert by_where["incident"][0] == channel and by_where["incident"][1].thread_ts is None
    assert by_where["announcement"][0] == "C0INCIDENTS"
    assert by_where["announcement"][1].thread_ts == announced.announce_ts
    shown = json.dumps(by_where["announcement"][1].blocks)
    assert "api pods crash-loop after v42 &lt;!channel&gt;" in shown and "<!channel>" not in shown  # escaped
    assert "*Impact*\\ncheckout errors for 30%" in shown and f"<#{channel}>" in shown
    settle(bot)
    assert len(slack.tagged("status_update")) == 2  # the retries found what the first attempts posted

    [entry] = entries(bot, row.id, "status_update")
    assert entry.actor == "U0ALICE"
    assert entry.data == {"known": "api pods crash-loop after v42 <!channel>", "impact": "checkout errors for 30%",
                          "next_steps": "roll back to v41", "view": view["id"]}
    reminders = [t for t in timers(bot, row.id) if t.kind == "reminder"]
    assert next(t for t in reminders if t.id == reminder.id).status == TimerStatus.CANCELLED
    [pending] = [t for t in reminders if t.status == TimerStatus.PENDING]
    assert pending.due_at - submitted_at >= timedelta(minutes=15)  # P1: one cadence from the update
    assert pending.due_at - submitted_at < timedelta(minutes=15, seconds=30)
    assert pending.due_at > reminder.due_at
    wait_for(lambda: (found := card(slack, row))[0] > edits and ":memo: last update <!date^" in found[1]
             and "^{ago}|" in found[1], what="the last update's time on the card")


def test_an_update_needs_one_field_and_the_same_person(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    views = len(slack.views)
    ask(bot, slack, "update", channel=channel)
    view = update_modal(slack, views)

    empty = submit(bot, view, known="  ", impact="", next_steps="")
    assert empty.json() == {"response_action": "errors", "errors": {"known": "Fill in at least one of the three."}}
    other = submit(bot, view, user="U0BOB", impact="none yet")
    assert other.json() == {"response_action": "errors", "errors": {"known": "This form was opened by someone else."}}
    settle(bot)
    assert entries(bot, row.id, "status_update") == [] and slack.tagged("status_update") == []

    assert submit(bot, view, impact="none yet").content == b""
    [entry] = entries(bot, row.id, "status_update")
    assert entry.data == {"known": "", "impact": "none yet", "next_steps": "", "view": view["id"]}
    assert entry.text == "Impact: none yet"
    # Submit pressed again (Slack was slow to close the form): a new trigger id, the same form
    assert submit(bot, view, impact="none yet").content == b""
    settle(bot)
    assert len(entries(bot, row.id, "status_update")) == 1
    assert len([m for _, m in slack.tagged("status_update")
                if m.metadata["event_payload"]["where"] == "incident"]) == 1  # type: ignore[index]


def test_update_is_put_to_the_policy_before_the_modal_opens(bot: RunningBot, slack: FakeSlack) -> None:
    slack.add_user("U0DAVE", "dave@example.com", "dave")
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    views = len(slack.views)
    refused = ask(bot, slack, "update", channel=channel, user="U0DAVE")
    assert refused == f"Only members of <#{channel}> can post its status updates; join the channel first."
    assert len(slack.views) == views


# -- Japanese ---------------------------------------------------------------------------------------------

def test_assign_and_update_answer_in_the_askers_language(bot: RunningBot, slack: FakeSlack) -> None:
    slack.users["U0BOB"].locale = "ja-JP"
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    answer = ask(bot, slack, "assign scribe <@U0CAROL|carol>", channel=channel, user="U0BOB")
    assert answer == (f":busts_in_silhouette: <@U0CAROL> をインシデント #{row.id} の *記録係* にしました。\n"
                      "このチャンネルに招待します。")
    assert ask(bot, slack, "assign scribe <@U0ALICE>", channel=channel, user="U0BOB").startswith(
        f":busts_in_silhouette: インシデント #{row.id} の *記録係* を <@U0CAROL> から <@U0ALICE> に交代しました。")
    assert ask(bot, slack, "assign chef <@U0ALICE>", channel=channel, user="U0BOB").startswith(
        "役割と担当者を指定してください")

    views = len(slack.views)
    assert ask(bot, slack, "update", channel=channel, user="U0BOB").startswith(":memo: 状況報告のフォームを開きました")
    view = update_modal(slack, views)
    assert view["title"]["text"] == "状況報告" and view["submit"]["text"] == "投稿"
    assert [b["label"]["text"] for b in view["blocks"] if b["type"] == "input"] == ["分かっていること", "影響",
                                                                                   "次の対応"]
    empty = submit(bot, view, user="U0BOB")
    assert empty.json()["errors"] == {"known": "3 つのうち少なくとも 1 つを記入してください。"}


def test_channel_posts_and_the_card_line_are_in_the_configured_language(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    config = OncallConfig.model_validate({
        "channels": {"announce": "C0INCIDENTS"}, "runbooks": {"locale": "ja"},
        "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "S0SRE"]}]})
    bot = start_bot(make_settings(database_url, slack, config), clock=clock)
    running.append(bot)
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    ask(bot, slack, "assign comms <@U0BOB|bob>", channel=channel)
    views = len(slack.views)
    ask(bot, slack, "update", channel=channel)
    assert submit(bot, update_modal(slack, views), known="原因を調査中").content == b""
    posts = wait_for(lambda: len(found := slack.tagged("status_update")) == 2 and found, what="the two posts")
    for _, message in posts:
        shown = json.dumps(message.blocks, ensure_ascii=False)
        assert ":mega: *状況報告*" in shown and "*分かっていること*\\n原因を調査中" in shown
    wait_for(lambda: "*広報担当* <@U0BOB>" in card(slack, row)[1] and "最終の状況報告 <!date^" in card(slack, row)[1],
             what="the roles line in Japanese")
    shown = card(slack, row)[1]
    assert all(words in shown for words in ("*サービス*", f"インシデント #{row.id}", "*指揮者*", "確認 (Ack)",
                                            "インシデントを解決しますか?", "1h サイレンス")), shown
    assert "Commander" not in shown and "Resolve the incident?" not in shown
    [(_, announced)] = slack.tagged("announcement")
    assert f"インシデント #{row.id} を開始しました(<#{channel}>)" in json.dumps(announced.blocks, ensure_ascii=False)
    ask(bot, slack, "ack", channel=channel, user="U0BOB")
    wait_for(lambda: any("<@U0BOB> が確認しました。エスカレーションは止まりました。" in m.text
                         for _, m in slack.tagged("notice")), what="the acknowledgement notice in Japanese")


# -- timeline capture ------------------------------------------------------------------------------------

def test_a_pushpinned_message_goes_on_the_timeline_once_with_its_author_and_permalink(
        bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    message = slack.post_as(channel, "U0CAROL", "rolled back <@U0BOB|bob> api to v41 &amp; it recovers")
    send_event(bot, pushpin(channel, message.ts))

    [entry] = wait_for(lambda: entries(bot, row.id, "message"), what="the message on the timeline")
    assert (entry.actor, entry.text) == ("U0CAROL", "rolled back @bob api to v41 & it recovers")
    assert entry.data["permalink"] == f"https://acme.slack.com/archives/{channel}/p{message.ts.replace('.', '')}"
    assert (entry.data["via"], entry.data["marked_by"], entry.data["ts"]) == ("pushpin", "U0BOB", message.ts)
    history = [c for c in slack.calls_to("conversations.history") if c.args.get("latest") == message.ts]
    assert [(c.args["inclusive"], c.args["limit"]) for c in history] == [("1", "1")]

    # Pinned as well, pushpinned by someone else, and the first event delivered again: still one entry.
    send_event(bot, pinned(channel, message.as_slack()))
    send_event(bot, pushpin(channel, message.ts, user="U0ALICE"))
    send_event(bot, pushpin(channel, message.ts), event_id="Ev-again", retry_num=None)
    send_event(bot, pushpin(channel, message.ts), event_id="Ev-again", retry_num=1)
    sentinel = slack.post_as(channel, "U0ALICE", "api is back")
    send_event(bot, pinned(channel, sentinel.as_slack(), user="U0CAROL"))
    wait_for(lambda: len(entries(bot, row.id, "message")) == 2, what="the sentinel on the timeline")
    settle(bot)
    assert [(e.actor, e.text, e.data["via"], e.data["marked_by"]) for e in entries(bot, row.id, "message")] == [
        ("U0CAROL", "rolled back @bob api to v41 & it recovers", "pushpin", "U0BOB"),
        ("U0ALICE", "api is back", "pin", "U0CAROL")]  # its author's, whoever pinned it
    assert [(c.ts, c.via) for c in captured(bot)] == [(message.ts, "pushpin"), (sentinel.ts, "pin")]
    sentinel_link = f"https://acme.slack.com/archives/{channel}/p{sentinel.ts.replace('.', '')}"
    wait_for(lambda: f"api is back <{sentinel_link}|↗>" in card(slack, row)[1], what="the message linked on the card")


def test_a_message_slack_names_no_author_for_is_not_credited_to_whoever_pinned_it(
        bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    anonymous = slack.post_as(channel, "", "error rate back under 1%")  # history gives it no `user`
    send_event(bot, pinned(channel, anonymous.as_slack(), user="U0BOB"))
    [entry] = wait_for(lambda: entries(bot, row.id, "message"), what="the message on the timeline")
    assert (entry.actor, entry.text, entry.data["marked_by"]) == ("", "error rate back under 1%", "U0BOB")


def test_a_pinned_reply_in_a_thread_is_captured_from_its_thread(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    parent = slack.post_as(channel, "U0ALICE", "what changed at 14:00?")
    reply = slack.post_as(channel, "U0BOB", "deploy of v42", thread_ts=parent.ts)
    send_event(bot, pushpin(channel, reply.ts))  # a reaction names only the channel and the ts
    [entry] = wait_for(lambda: entries(bot, row.id, "message"), what="the reply on the timeline")
    assert (entry.actor, entry.text, entry.data["thread_ts"]) == ("U0BOB", "deploy of v42", parent.ts)
    assert any(c.args.get("ts") == reply.ts for c in slack.calls_to("conversations.replies"))


def test_marks_outside_incident_channels_and_other_reactions_are_ignored(bot: RunningBot, slack: FakeSlack) -> None:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    elsewhere = slack.add_channel("random", members={"U0ALICE"})
    chatter = slack.post_as(elsewhere.id, "U0ALICE", "lunch?")
    announce = slack.post_as("C0INCIDENTS", "U0ALICE", "is anyone on this?")
    send_event(bot, pushpin(elsewhere.id, chatter.ts))
    send_event(bot, pinned("C0INCIDENTS", announce.as_slack()))
    looked = slack.post_as(channel, "U0CAROL", "looking")
    send_event(bot, pushpin(channel, looked.ts, reaction="eyes"))
    send_event(bot, pushpin(channel, looked.ts, reaction="round_pushpin"))
    sentinel = slack.post_as(channel, "U0CAROL", "found it")
    send_event(bot, pushpin(channel, sentinel.ts))
    wait_for(lambda: entries(bot, row.id, "message"), what="the sentinel on the timeline")
    settle(bot)
    assert [e.text for e in entries(bot, row.id, "message")] == ["found it"]
    assert [c.ts for c in captured(bot)] == [sentinel.ts]


def test_assign_and_update_outside_an_incident_channel_say_where_to_run_them(
        bot: RunningBot, slack: FakeSlack) -> None:
    views = len(slack.views)
    for text in ("update", "assign commander <@U0BOB>"):
        assert "not an incident's channel" in ask(bot, slack, text, channel="C0INCIDENTS")
    assert len(slack.views) == views
