"""The incident card tells the truth: when it started, what it is, what each alert says, what
happened (readable), and when and after how long it resolved.

Builder tests render domain objects and check the blocks against Slack's rules (the fake's
validator); the end-to-end tests drive the bot over HTTP and read the card the Slack fake received.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from bot.card_view import CardView
from bot.models import Alert, Incident, IncidentStatus, TimelineEntry
from commands.cards import incident_card
from commands.slack_time import duration, slack_time
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, wait_for
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_blocks import validate_blocks

GROUP_KEY = '{}/{team="payments"}:{alertname="HighLatency"}'


# -- builders ---------------------------------------------------------------------------------------

def _incident(now: datetime, **fields: Any) -> Incident:
    values: dict[str, Any] = dict(id=7, title="HighLatency on checkout (3 alerts)", alertname="HighLatency",
                                  severity="P2", service="checkout", namespace="prod", created_at=now, updated_at=now)
    return Incident(**{**values, **fields})


def _alert(started: datetime, name: str = "HighLatency", description: str | None = None, **labels: str) -> Alert:
    annotations = {"description": description} if description is not None else {}
    return Alert(incident_id=7, fingerprint=f"fp-{name}-{sorted(labels.items())}", alertname=name, status="firing",
                 labels={"alertname": name, **labels}, annotations=annotations, starts_at=started)


def _entry(at: datetime, actor: str, text: str, kind: str = "note", **data: Any) -> TimelineEntry:
    return TimelineEntry(incident_id=7, at=at, actor=actor, kind=kind, text=text, data=data)


def _render(view: CardView) -> list[dict[str, Any]]:
    _, blocks = incident_card(view)
    assert validate_blocks(blocks) == []
    return blocks


def _field(blocks: list[dict[str, Any]], name: str) -> str | None:
    for item in blocks[1].get("fields", []):
        title, _, value = item["text"].partition("\n")
        if title == f"*{name}*":
            return value
    return None


def _timeline(blocks: list[dict[str, Any]]) -> str:
    [text] = [b["elements"][0]["text"] for b in blocks if b["type"] == "context"
              and b["elements"][0]["text"].startswith(":clock3:")]
    return str(text)


def test_started_is_the_earliest_starts_at_of_the_alerts(clock: FakeClock) -> None:
    now = clock()
    earliest = now - timedelta(minutes=47)
    alerts = [_alert(now - timedelta(minutes=5), pod="a"), _alert(earliest, pod="b"),
              _alert(now - timedelta(minutes=12), pod="c")]
    started = _field(_render(CardView(incident=_incident(now), alerts=alerts, now=now)), "Started")
    assert started == slack_time(earliest, now)
    assert started.startswith(f"<!date^{int(earliest.timestamp())}^")


def test_started_falls_back_to_when_the_bot_heard_of_it(clock: FakeClock) -> None:
    now = clock()
    unset = _alert(datetime.min.replace(tzinfo=now.tzinfo))  # Go's zero time: startsAt not set
    for alerts in ([], [unset]):
        view = CardView(incident=_incident(now - timedelta(minutes=3)), alerts=alerts, now=now)
        assert _field(_render(view), "Started") == slack_time(now - timedelta(minutes=3), now)


def test_times_show_their_date_only_when_not_today(clock: FakeClock) -> None:
    now = clock()
    assert slack_time(now, now) == f"<!date^{int(now.timestamp())}^{{time}}|{now:%H:%M} UTC>"
    yesterday = now - timedelta(days=1)
    assert slack_time(yesterday, now).endswith(f"^{{date_short_pretty}} {{time}}|{yesterday:%Y-%m-%d %H:%M} UTC>")


def test_each_alert_shows_its_own_description_when_it_differs_from_the_common_one(clock: FakeClock) -> None:
    now = clock()
    incident = _incident(now, annotations={"description": "p99 latency above 2 s"})
    alerts = [_alert(now, description="p99 latency above 2 s", pod="same"),
              _alert(now, description="p99 4.2 s on <!channel> & friends", pod="other"),
              _alert(now, description="x" * 20_000, pod="huge")]
    sections = [b["text"]["text"] for b in _render(CardView(incident=incident, alerts=alerts, now=now))
                if b["type"] == "section"]
    same, other, huge = (next(s for s in sections if f"pod={pod}" in s) for pod in ("same", "other", "huge"))
    assert "p99 latency above 2 s" not in same  # the card's description already says it
    assert "p99 4.2 s on &lt;!channel&gt; &amp; friends" in other and "<!channel>" not in other
    assert len(huge) <= 3000 and "xxx…" in huge and "`pod=huge`" in huge  # cut, its labels kept


def test_the_timeline_is_readable_oldest_first_with_actors(clock: FakeClock) -> None:
    now = clock().replace(hour=12)  # mid-day, so "nine minutes ago" is today whatever time the suite runs
    yesterday = now - timedelta(days=1)
    entries = [
        _entry(yesterday, "alertmanager", "opened the incident with 3 alerts firing", "created", group_key=GROUP_KEY),
        _entry(now - timedelta(minutes=9), "U0ALICE", "detected → triaged", "status"),
        _entry(now - timedelta(minutes=5), "pagerduty:Ann <Ops>", "acknowledged in PagerDuty", "ack"),
        _entry(now - timedelta(minutes=2), "oncall-bot", "paged L2: not acknowledged", "page"),
    ]
    text = _timeline(_render(CardView(incident=_incident(now), alerts=[], timeline=entries[::-1], now=now)))
    lines = text.splitlines()[1:]
    assert lines == [
        f"{slack_time(yesterday, now)} Alertmanager: opened the incident with 3 alerts firing",
        f"{slack_time(entries[1].at, now)} <@U0ALICE>: status detected → triaged",
        f"{slack_time(entries[2].at, now)} Ann &lt;Ops&gt; (PagerDuty): acknowledged in PagerDuty",
        f"{slack_time(entries[3].at, now)} the bot: paged L2: not acknowledged",
    ]
    assert "{}/{team=" not in text
    assert "date_short_pretty" in lines[0] and "date_short_pretty" not in lines[1]


def test_a_resolved_card_says_when_by_whom_and_after_how_long(clock: FakeClock) -> None:
    now = clock()
    started = now - timedelta(hours=1, minutes=12, seconds=30)
    incident = _incident(now - timedelta(hours=1), status=IncidentStatus.RESOLVED, resolved_at=now,
                         resolved_by="U0ALICE")
    blocks = _render(CardView(incident=incident, alerts=[_alert(started)], now=now))
    assert _field(blocks, "Resolved") == f"{slack_time(now, now)} after 1 h 12 min\nby <@U0ALICE>"
    assert _field(_render(CardView(incident=_incident(now), alerts=[], now=now)), "Resolved") is None


def test_durations_read_like_people_write_them() -> None:
    assert [duration(timedelta(seconds=s)) for s in (20, 60, 45 * 60, 3600, 4320, 86400 * 3 + 3600 * 4, 86400)] == [
        "under a minute", "1 min", "45 min", "1 h", "1 h 12 min", "3 d 4 h", "1 d"]


# -- end to end -------------------------------------------------------------------------------------

def _card(slack: FakeSlack, incident: Incident) -> list[dict[str, Any]]:
    message = next(m for m in slack.messages(incident.card_channel_id) if m.ts == incident.card_ts)
    return message.blocks


def _posted(bot: RunningBot, incident_id: int) -> Incident:
    def ready() -> Incident | None:
        with bot.services.db.read() as session:
            row = session.get(Incident, incident_id)
            return row if row and row.card_ts else None
    return wait_for(ready, what="the incident card")


def _latency(clock: FakeClock, pod: str, minutes_ago: int, description: str) -> dict[str, Any]:
    return alert("HighLatency", labels={"pod": pod, "severity": "warning"},
                 annotations={"summary": f"latency on {pod}", "description": description},
                 starts_at=(clock() - timedelta(minutes=minutes_ago)).isoformat())


def test_the_card_of_a_group_tells_the_truth_from_open_to_resolved(
        bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    alerts = [_latency(clock, "api-1", 5, "p99 2.1 s"), _latency(clock, "api-2", 50, "p99 3.4 s"),
              _latency(clock, "api-3", 20, "p99 2.8 s")]
    earliest = datetime.fromisoformat(alerts[1]["startsAt"])
    payload = group(*alerts, group_key=GROUP_KEY)
    assert "summary" not in payload["commonAnnotations"]  # each alert has its own
    reply = bot.post_alerts(payload).json()
    incident = _posted(bot, reply["incident_id"])
    assert incident.title == "HighLatency on api (3 alerts)"  # alertname + service, the count
    blocks = _card(slack, incident)
    assert blocks[0]["text"]["text"] == "P3 · HighLatency on api (3 alerts)"
    assert _field(blocks, "Started").startswith(f"<!date^{int(earliest.timestamp())}^")  # type: ignore[union-attr]
    text = json.dumps(blocks, ensure_ascii=False)
    assert all(d in text for d in ("p99 2.1 s", "p99 3.4 s", "p99 2.8 s"))
    timeline = _timeline(blocks)
    assert "Alertmanager: opened the incident with 3 alerts firing" in timeline
    assert "{}/{team=" not in text and "alert group" not in text  # no raw group key
    with bot.services.db.read() as session:
        created = session.scalars(select(TimelineEntry).where(TimelineEntry.kind == "created")).one()
    assert created.data["group_key"] == GROUP_KEY  # kept, just not shown

    clock.advance(minutes=60)
    assert bot.post_alerts(resolved(payload)).json()["outcome"] == "resolved"
    wait_for(lambda: _field(_card(slack, incident), "Resolved"), what="the card to say when it resolved")
    with bot.services.db.read() as session:
        resolved_at = session.get(Incident, incident.id).resolved_at  # type: ignore[union-attr]
    assert _field(_card(slack, incident), "Resolved") == (
        f"{slack_time(resolved_at, clock())} after {duration(resolved_at - earliest)}\nby Alertmanager")
    assert duration(resolved_at - earliest) == "1 h 50 min"


def test_the_title_comes_from_the_common_summary_else_the_group_labels(bot: RunningBot, clock: FakeClock) -> None:
    def title_of(payload: dict[str, Any]) -> str:
        incident_id = bot.post_alerts(payload).json()["incident_id"]
        with bot.services.db.read() as session:
            return session.get(Incident, incident_id).title  # type: ignore[union-attr]

    shared = [alert("DiskFull", labels={"instance": f"db-{n}"}, annotations={"summary": "Disk almost full"})
              for n in (1, 2)]
    assert title_of(group(*shared, group_key="{}:{disk}")) == "Disk almost full"
    lone = alert("QueueStuck", labels={"service": "billing"}, annotations={"summary": ""})
    assert title_of(group(lone, group_key="{}:{queue}")) == "QueueStuck on billing"  # one alert: no count
    by_service = group(_latency(clock, "a", 1, "x"), _latency(clock, "b", 2, "y"), group_key="{}:{checkout}",
                       groupLabels={"alertname": "HighLatency", "service": "checkout"}, truncatedAlerts=4)
    assert title_of(by_service) == "HighLatency on checkout (6 alerts)"  # group labels win; truncated count
