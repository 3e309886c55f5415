"""Alert groups become Slack incidents: driven over HTTP, observed through the Slack fake."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from bot.models import Incident, IncidentStatus, Job, JobStatus, TimelineEntry
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, make_settings, start_bot, wait_for
from tests.fakes.slack import FakeSlack


def _running_jobs(bot: RunningBot) -> list[Job]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Job).where(Job.status == JobStatus.RUNNING)))


def _incidents(bot: RunningBot) -> list[Incident]:
    with bot.services.db.session() as session:
        return list(session.scalars(select(Incident).order_by(Incident.id)))


def _card_posted(slack: FakeSlack, bot: RunningBot, incident_id: int | None = None):  # type: ignore[no-untyped-def]
    def ready():  # type: ignore[no-untyped-def]
        rows = [i for i in _incidents(bot) if incident_id in (None, i.id)]
        return rows[-1] if rows and rows[-1].card_ts else None
    return wait_for(ready, what="the incident card")


def _card_text(slack: FakeSlack, incident: Incident) -> str:
    message = next(m for m in slack.messages(incident.card_channel_id) if m.ts == incident.card_ts)
    return json.dumps(message.blocks, ensure_ascii=False)


def _idle(bot: RunningBot) -> bool:
    with bot.services.db.session() as session:
        return not session.scalars(select(Job).where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))).first()


def test_critical_group_gets_channel_topic_responders_card_and_announcement(bot: RunningBot, slack: FakeSlack) -> None:
    assert bot.post_alerts(group()).json()["outcome"] == "created"
    incident = _card_posted(slack, bot)
    wait_for(lambda: _incidents(bot)[0].announce_ts, what="the announcement")
    channel = slack.channels[incident.channel_id]
    assert channel.name == f"inc-{incident.created_at:%Y%m%d}-{incident.id}-servicedown"
    assert channel.topic.startswith("P1 · ServiceDown on api")
    # U0ALICE directly, U0BOB and U0CAROL through the S0SRE user group.
    assert {"U0ALICE", "U0BOB", "U0CAROL"} <= channel.members
    texts = [m.text for m in slack.messages(channel.id)]
    assert any("nobody@example.com" in t and "no Slack user" in t for t in texts)
    card = _card_text(slack, incident)
    assert "ServiceDown on api" in card and "up == 0 for 1m" in card and "runbooks.example.com" in card
    announcement = slack.messages("C0INCIDENTS")[-1]
    assert f"<#{incident.channel_id}>" in json.dumps(announcement.blocks)
    with bot.services.db.session() as session:
        kinds = [t.kind for t in session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident.id))]
    assert kinds[:2] == ["created", "alert"]


def test_warning_group_gets_a_thread_in_the_incidents_channel(bot: RunningBot, slack: FakeSlack) -> None:
    bot.post_alerts(group(alert("HighLatency", labels={"severity": "warning"}),
                          group_key='{}:{alertname="HighLatency"}'))
    incident = _card_posted(slack, bot)
    assert incident.severity == "P3" and incident.channel_id is None
    assert incident.card_channel_id == "C0INCIDENTS"
    assert slack.calls_to("conversations.create") == []
    bot.post_alerts(resolved(group(alert("HighLatency", labels={"severity": "warning"}),
                                   group_key='{}:{alertname="HighLatency"}')))
    wait_for(lambda: any(m.thread_ts == incident.card_ts for m in slack.messages("C0INCIDENTS")),
             what="the resolution note in the thread")


def test_repeats_and_concurrent_ha_duplicates_make_one_incident_and_one_channel(
        bot: RunningBot, slack: FakeSlack) -> None:
    payload = group()
    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = [r.json()["outcome"] for r in pool.map(lambda _: bot.post_alerts(payload), range(24))]
    assert outcomes.count("created") == 1
    assert all(o in ("created", "unchanged") for o in outcomes)
    _card_posted(slack, bot)
    wait_for(lambda: _idle(bot), what="the outbox to drain")
    assert len(_incidents(bot)) == 1
    assert len(slack.calls_to("conversations.create")) == 1
    assert len([c for c in slack.calls_to("chat.postMessage") if c.args.get("channel") == "C0INCIDENTS"]) == 1


def test_changing_group_updates_the_card(bot: RunningBot, slack: FakeSlack) -> None:
    first = alert(labels={"instance": "api-1"})
    bot.post_alerts(group(first))
    incident = _card_posted(slack, bot)
    second = alert(labels={"instance": "api-2"})
    assert bot.post_alerts(group(first, second)).json()["outcome"] == "updated"
    wait_for(lambda: "instance=api-2" in _card_text(slack, incident), what="the card to show the new alert")
    assert "2 firing" in _card_text(slack, incident)
    assert slack.calls_to("chat.update")


def test_resolve_then_reopen_within_window_then_new_incident_after(
        bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    payload = group()
    bot.post_alerts(payload)
    incident = _card_posted(slack, bot)
    assert bot.post_alerts(resolved(payload)).json()["outcome"] == "resolved"
    wait_for(lambda: "RESOLVED" in _card_text(slack, incident), what="the card to say resolved")
    assert _incidents(bot)[0].status == IncidentStatus.RESOLVED

    clock.advance(minutes=10)
    assert bot.post_alerts(payload).json() == {"incident_id": incident.id, "outcome": "reopened"}
    wait_for(lambda: "DETECTED" in _card_text(slack, incident), what="the card to say detected again")
    wait_for(lambda: any("Reopened" in m.text for m in slack.messages(incident.channel_id)),
             what="the reopened note in the channel")

    bot.post_alerts(resolved(payload))
    clock.advance(minutes=31)
    response = bot.post_alerts(payload).json()
    assert response["outcome"] == "created" and response["incident_id"] != incident.id
    second = _card_posted(slack, bot, response["incident_id"])
    assert second.channel_id != incident.channel_id
    assert len(slack.calls_to("conversations.create")) == 2


def test_manual_resolution_is_not_reopened_by_repeats(bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    payload = group()
    bot.post_alerts(payload)
    incident = _card_posted(slack, bot)
    from bot.lifecycle import transition

    with bot.services.db.session() as session:
        row = session.get(Incident, incident.id)
        transition(session, row, IncidentStatus.RESOLVED, actor="U0ALICE", now=clock())
    assert bot.post_alerts(payload).json()["outcome"] == "unchanged"  # Alertmanager's repeat
    assert _incidents(bot)[0].status == IncidentStatus.RESOLVED


def test_channel_name_collision_gets_a_suffix(bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    date = clock().strftime("%Y%m%d")
    for name in (f"inc-{date}-1-servicedown", f"inc-{date}-1-servicedown-2"):
        slack.create_channel(name)
    bot.post_alerts(group())
    incident = _card_posted(slack, bot)
    assert incident.channel_name == f"inc-{date}-1-servicedown-3"
    errors = [c.response.get("error") for c in slack.calls_to("conversations.create")]
    assert errors == ["name_taken", "name_taken", None]


def test_slack_429_is_retried_after_retry_after(bot: RunningBot, slack: FakeSlack) -> None:
    slack.fail_next("conversations.create", "ratelimited", status=429, retry_after=0, times=3)
    bot.post_alerts(group())
    incident = _card_posted(slack, bot)
    assert incident.channel_id
    statuses = [c.status for c in slack.calls_to("conversations.create")]
    assert statuses == [429, 429, 429, 200]


def test_slack_down_then_back_loses_nothing(bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    slack.set_down(True)
    payloads = [group(alert(f"Alert{i}"), group_key=f'{{}}:{{alertname="Alert{i}"}}') for i in range(5)]
    for payload in payloads:
        assert bot.post_alerts(payload).status_code == 200
    wait_for(lambda: len(slack.calls) >= 5, what="attempts against the unavailable Slack")
    assert all(i.card_ts is None for i in _incidents(bot))
    slack.set_down(False)
    # Jump only while no job is mid-call: a jump past a running job's 2-minute lease would make
    # it look abandoned and run it twice, which real time never does.
    wait_for(lambda: not _running_jobs(bot), what="the failed attempts to finish")
    clock.advance(minutes=10)  # retries were scheduled with backoff; make them due now
    wait_for(lambda: all(i.card_ts for i in _incidents(bot)) and len(_incidents(bot)) == 5,
             timeout=20, what="every card after Slack came back")
    assert len(slack.calls_to("conversations.create")) - slack.count_failed("conversations.create") == 5


def test_huge_odd_and_cjk_annotations_stay_within_block_kit_limits(bot: RunningBot, slack: FakeSlack) -> None:
    weird = {f"label_{i}": "値" * 500 + "<!channel> & |>" for i in range(4)}
    annotations = {
        "summary": "サービス停止: API が応答しません 服务中断 서비스 중단 " * 40,
        "description": "데이터베이스 연결 풀 고갈 <@U0ALICE> `code` *bold* " * 40,
        "runbook_url": "javascript:alert(1)",
        "dashboard": "https://grafana.example.com/d/abc|evil",
    }
    alerts = [alert("DatabaseConnectionExhausted", labels={**weird, "pod": f"db-{i}"}, annotations=annotations)
              for i in range(45)]
    bot.post_alerts(group(*alerts, group_key='{}:{alertname="DatabaseConnectionExhausted"}'))
    incident = _card_posted(slack, bot)
    card = _card_text(slack, incident)
    assert "サービス停止" in card and "데이터베이스" in card
    assert "<!channel>" not in card and "javascript:" not in card and "evil" not in card
    assert "…and 25 more alert(s)" in card
    assert all(c.response.get("ok") for c in slack.calls_to("chat.postMessage"))
    assert len(slack.channel_by_name(incident.channel_name).topic) <= 250


def test_card_updates_are_coalesced(bot: RunningBot, slack: FakeSlack) -> None:
    alerts = [alert(labels={"instance": f"api-{i}"}) for i in range(12)]
    bot.post_alerts(group(alerts[0]))
    incident = _card_posted(slack, bot)
    for n in range(2, 13):
        bot.post_alerts(group(*alerts[:n]))
    wait_for(lambda: "12 firing" in _card_text(slack, incident), what="the card to show all 12 alerts")
    assert len(slack.calls_to("chat.update")) < 11


def test_severity_rising_moves_the_card_into_a_new_channel(bot: RunningBot, slack: FakeSlack) -> None:
    key = '{}:{alertname="HighErrorRate"}'
    warn = alert("HighErrorRate", labels={"severity": "warning", "instance": "a"})
    bot.post_alerts(group(warn, group_key=key))
    first = _card_posted(slack, bot)
    assert first.channel_id is None
    crit = alert("HighErrorRate", labels={"severity": "critical", "instance": "b"})
    bot.post_alerts(group(warn, crit, group_key=key))
    moved = wait_for(lambda: (i := _incidents(bot)[0]).channel_id and i.card_channel_id == i.channel_id and i,
                     what="the card to move into the new channel")
    assert moved.severity == "P1" and moved.announce_ts == first.card_ts


def test_restart_with_pending_work_delivers_it(database_url: str, slack: FakeSlack, clock: FakeClock) -> None:
    settings = make_settings(database_url, slack)
    slack.set_down(True)
    first = start_bot(settings, clock=clock)
    first.post_alerts(group())
    first.stop()
    first.services.db.dispose()
    slack.set_down(False)
    clock.advance(minutes=10)
    second = start_bot(settings, clock=clock)
    try:
        incident = _card_posted(slack, second)
        assert incident.channel_id and len(_incidents(second)) == 1
    finally:
        second.stop()
        second.services.db.dispose()
