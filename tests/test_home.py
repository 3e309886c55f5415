"""The app's Home tab, end to end: a signed `app_home_opened` event to the running bot → the Home
tab published with `views.publish` to the Slack fake (which checks it as Slack checks a Home
tab): the open incidents the viewer may see (a private one only to its people), with severity,
state, age, commander and a link; then who is on call, as `/oncall` says it; in the viewer's
Slack language. The builder is also checked alone against Slack's limits and hostile titles.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from bot.config import OncallConfig
from bot.models import Incident
from commands.home import HOME_SHOWN, HomeIncident, home_view
from integrations.slack import SlackClient, SlackError, make_web_client
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, make_settings, open_with_card, start_bot, wait_for
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_blocks import validate_view
from tests.slack_requests import signed_headers
from tests.test_incident_command import ask
from tests.test_snapshots import FORBIDDEN, parsed_strings

_EVENTS = itertools.count(1)


@pytest.fixture
def bot(database_url: str, slack: FakeSlack, clock: FakeClock) -> Iterator[RunningBot]:
    slack.add_user("U0DAVE", "dave@example.com", "dave")
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    config = OncallConfig.model_validate({
        "channels": {"announce": "C0INCIDENTS", "private_when": [{"alertname": "SecurityIncident"}]},
        "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "U0BOB"]}]})
    running = start_bot(make_settings(database_url, slack, config), clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


def open_home(bot: RunningBot, user: str, *, tab: str = "home") -> httpx.Response:
    """`user` opens the app's Home (or Messages) tab: the event as Slack delivers it."""
    event = {"token": "legacy", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
             "event_id": f"EvHOME{next(_EVENTS):06d}", "event_time": 1,
             "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True}],
             "event": {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": tab,
                       "event_ts": "1700000000.000100"}}
    body = json.dumps(event).encode()
    return httpx.post(f"{bot.url}/slack/events", content=body,
                      headers={**signed_headers(body), "Content-Type": "application/json"}, timeout=10)


def published(slack: FakeSlack, user: str, after: int = 0) -> dict[str, Any]:
    """The Home tab as last published for `user`, once it has been published more than `after` times."""
    def done() -> dict[str, Any] | None:
        calls = [c for c in slack.calls_to("views.publish") if c.args.get("user_id") == user and c.response["ok"]]
        return slack.homes[user] if len(calls) > after else None

    found: dict[str, Any] = wait_for(done, what=f"the Home tab published for {user}")
    return found


def texts(view: dict[str, Any]) -> list[str]:
    """What each block says, dividers left out."""
    return [(b.get("text") or {}).get("text") or " ".join(e["text"] for e in b.get("elements", []))
            for b in view["blocks"] if b["type"] != "divider"]


def p3(key: str) -> dict[str, Any]:
    """A P3: no channel of its own, its card in the announce channel."""
    return group(alert("DiskFilling", labels={"severity": "warning", "instance": key}),
                 group_key=f'{{}}:{{alertname="DiskFilling",instance="{key}"}}')


def test_the_home_tab_shows_the_open_incidents_and_who_is_on_call(bot: RunningBot, slack: FakeSlack) -> None:
    p1 = open_with_card(bot, group())
    thread = open_with_card(bot, p3("disk-1"))
    gone = p3("disk-2")
    open_with_card(bot, gone)
    assert bot.post_alerts(resolved(gone)).json()["outcome"] == "resolved"

    assert open_home(bot, "U0ALICE").status_code == 200
    view = published(slack, "U0ALICE")
    assert view["type"] == "home" and validate_view(view, surface="home") == []
    lines = texts(view)
    assert lines[0] == "Open incidents (2)"  # the resolved one is not open
    assert lines[1].startswith(f":red_circle: *P1* <#{p1.channel_id}> ServiceDown on api\ndetected · open for 5 min")
    assert lines[1].endswith("· commander unassigned")
    card_link = f"https://acme.slack.com/archives/{thread.card_channel_id}/p{(thread.card_ts or '').replace('.', '')}"
    assert lines[2].startswith(f":large_yellow_circle: *P3* <{card_link}|#{thread.id} card> DiskFilling on api\n")
    assert lines[3] == "On call"
    on_call = "\n".join(lines[4:-1])
    assert "PagerDuty is not configured" in on_call and "*Responders*" in on_call
    assert "*Escalation timetable*" in on_call and "• P1:" in on_call
    assert lines[-1].startswith("As of <!date^")

    # Acknowledged meanwhile (the asker becomes commander): opened again, the tab says so.
    assert ask(bot, slack, "ack", channel=p1.channel_id or "").startswith(":eyes:")
    open_home(bot, "U0ALICE")
    again = published(slack, "U0ALICE", after=1)
    assert again["id"] == view["id"]  # the same Home tab, replaced whole
    assert texts(again)[1].endswith("· commander <@U0ALICE>")

    # The Messages tab draws nothing; another person gets their own Home tab.
    open_home(bot, "U0CAROL", tab="messages")
    open_home(bot, "U0BOB")
    published(slack, "U0BOB")
    assert "U0CAROL" not in slack.homes


def test_the_home_tab_is_in_the_viewers_language(bot: RunningBot, slack: FakeSlack) -> None:
    open_with_card(bot, group())
    open_home(bot, "U0KENJI")
    lines = texts(published(slack, "U0KENJI"))
    assert lines[0] == "対応中のインシデント(1 件)"
    assert "detected · 発生から 5分 · 指揮者 未割り当て" in lines[1]
    assert lines[2] == "オンコール"
    assert "*エスカレーションの時刻表*" in "\n".join(lines) and "*対応者*" in "\n".join(lines)
    assert lines[-1].endswith("時点の内容です。タブを開き直すと更新されます。")


def test_a_private_incident_is_listed_only_to_its_people(bot: RunningBot, slack: FakeSlack) -> None:
    secret = open_with_card(bot, group(alert("SecurityIncident"),
                                       group_key='{}:{alertname="SecurityIncident"}'))
    open_with_card(bot, group())
    assert secret.private and secret.channel_id
    assert "U0ALICE" in slack.channels[secret.channel_id].members  # invited: a responder

    open_home(bot, "U0ALICE")
    member = "\n".join(texts(published(slack, "U0ALICE")))
    assert member.startswith("Open incidents (2)") and "SecurityIncident on api" in member

    open_home(bot, "U0DAVE")
    outsider = "\n".join(texts(published(slack, "U0DAVE")))
    assert outsider.startswith("Open incidents (1)") and "SecurityIncident" not in outsider
    assert secret.channel_id not in outsider


# -- the builder, and the fake's views.publish ------------------------------------------------------

HOSTILE = "<!channel> <@U123> <https://evil|click> *bold* &amp;"


def test_the_view_stays_within_a_home_tabs_limits_and_escapes_titles(clock: FakeClock) -> None:
    now = clock()
    many = [HomeIncident(Incident(id=n, title=f"{HOSTILE} {n}" + "x" * 400, alertname="A", severity="P2",
                                  status="investigating", commander="U0BOB", created_at=now, updated_at=now),
                         now - timedelta(minutes=n), f"<#C{n:08d}>") for n in range(1, HOME_SHOWN + 1)]
    oncall = ["*Who is on call now*", *(f"• line {n} " + "y" * 200 for n in range(60))]
    view = home_view(many, 75, oncall, now, "en")
    assert validate_view(view, surface="home") == []
    shown = json.dumps(view, ensure_ascii=False)
    assert "…and 35 more: `/incident list` shows them all." in shown
    assert sum(1 for b in view["blocks"] if b["type"] == "section" and "*P2*" in b["text"]["text"]) == HOME_SHOWN
    assert [(where, bad) for where, text in parsed_strings(view["blocks"]) for bad in FORBIDDEN if bad in text] == []
    assert "&lt;!channel&gt;" in shown
    assert "line 59" in shown  # every on-call line, in sections within Slack's limit


def test_views_publish_checks_what_slack_checks(slack: FakeSlack) -> None:
    client = SlackClient(make_web_client(slack.token, slack.base_url))

    async def publish(view: dict[str, Any]) -> str:
        return await client.publish_home("U0ALICE", view)

    section = {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}
    view_id = asyncio.run(publish({"type": "home", "blocks": [section]}))
    assert slack.homes["U0ALICE"]["id"] == view_id
    with pytest.raises(SlackError) as too_many:
        asyncio.run(publish({"type": "home", "blocks": [section] * 101}))
    assert too_many.value.error == "invalid_arguments"
    with pytest.raises(SlackError) as modal:
        asyncio.run(publish({"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": [section]}))
    assert modal.value.error == "invalid_arguments"
    slack.home_tab_enabled = False
    with pytest.raises(SlackError) as disabled:
        asyncio.run(publish({"type": "home", "blocks": [section]}))
    assert disabled.value.error == "not_enabled"
