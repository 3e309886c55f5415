"""Storm mode (bot.storm): above the configured rate of new incidents, new alert groups join one
storm incident (one channel, a live table of its groups) instead of opening a channel each;
every group is still recorded, paged through the storm, and can be split out.

On SQLite and PostgreSQL: end to end through the Slack and PagerDuty fakes, and the intake
transaction driven directly for the rules (rate, repeats, resolution, concurrency)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot import storm
from bot.card_view import CardView
from bot.config import ConfigError, OncallConfig, load_config_file
from bot.db import Database
from bot.incidents import receive
from bot.models import STORM, Alert, AlertGroup, Incident, IncidentStatus, Job, JobStatus, Paging, StormMember
from bot.storm_split import split_out
from commands.blockkit import LIMITS
from commands.cards import incident_card
from commands.ids import CARD_ACTIONS_BLOCK
from commands.storm_blocks import STORM_SPLIT
from integrations.alertmanager import WebhookMessage
from tests.alerts import alert, group, resolved
from tests.conftest import ROUTING_KEY, FakeClock, RunningBot, make_settings, start_bot, wait_for
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_blocks import validate_blocks
from tests.slack_requests import block_actions, post_to_slack_events

BASE = {"channels": {"announce": "C0INCIDENTS"}}


def _group(n: int, severity: str = "critical", *, name: str | None = None) -> dict[str, Any]:
    """Group n: two alerts of its own, a title of its own (its common summary)."""
    alertname = name or f"Storm{n % 3}"
    alerts = [alert(alertname, labels={"instance": f"i{n}-{k}", "severity": severity},
                    annotations={"summary": f"Group {n} down"}) for k in range(2)]
    return group(*alerts, group_key=f'{{}}/{{team="payments"}}:{{instance="i{n}"}}')


# -- end to end ------------------------------------------------------------------------------------

@pytest.fixture
def storm_bot(database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty,
              clock: FakeClock) -> Iterator[RunningBot]:
    settings = make_settings(database_url, slack, OncallConfig.model_validate(BASE),
                             pagerduty_routing_key=ROUTING_KEY, pagerduty_events_url=pagerduty.base_url,
                             pagerduty_api_url=pagerduty.base_url, pagerduty_ca_file=pagerduty.ca_file)
    running = start_bot(settings, clock=clock)
    running.services.timers.poll_seconds = 0.05
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


def _row(bot: RunningBot, model: Any, key: int) -> Any:
    with bot.services.db.read() as session:
        return session.get(model, key)


def _idle(bot: RunningBot) -> bool:
    with bot.services.db.read() as session:
        return session.scalar(select(func.count()).select_from(Job).where(
            Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))) == 0  # type: ignore[attr-defined]


def _card(slack: FakeSlack, incident: Incident) -> list[dict[str, Any]]:
    message = next(m for m in slack.messages(incident.card_channel_id) if m.ts == incident.card_ts)
    return message.blocks


def _storm_rows(slack: FakeSlack, incident: Incident) -> dict[int, dict[str, Any]]:
    return {int(b["block_id"].split(":")[1]): b for b in _card(slack, incident)
            if b.get("block_id", "").startswith("storm_group:")}


def _group_id(bot: RunningBot, payload: dict[str, Any]) -> int:
    with bot.services.db.read() as session:
        return session.scalars(select(AlertGroup.id).where(AlertGroup.group_key == payload["groupKey"])).one()


def _triggers(pagerduty: FakePagerDuty) -> dict[str, Any]:
    with pagerduty.lock:
        return {e.dedup_key: e for e in pagerduty.events if e.action == "trigger"}


def test_a_storm_of_30_groups_opens_10_channels_and_one_storm_that_tracks_them(
        storm_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    # The first group to join the storm is a P2, the others P1: the storm is raised to P1.
    payloads = [_group(n, "error" if n == 10 else "critical") for n in range(30)]
    replies = [storm_bot.post_alerts(p).json() for p in payloads]
    assert [r["outcome"] for r in replies] == ["created"] * 10 + ["joined_storm"] * 20
    storm_id = replies[10]["incident_id"]
    assert {r["incident_id"] for r in replies[10:]} == {storm_id}
    assert len({r["incident_id"] for r in replies[:10]}) == 10
    wait_for(lambda: _idle(storm_bot), timeout=60, what="every Slack and PagerDuty job done")

    # ≤ 10 incident channels + 1 storm channel, and every group recorded with its alerts.
    created = [c for c in slack.calls_to("conversations.create") if c.response.get("ok")]
    assert len(created) == 11
    with storm_bot.services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(AlertGroup)
                              .where(AlertGroup.receiver == "oncall-bot")) == 30
        assert session.scalar(select(func.count()).select_from(Alert)) == 60
        assert session.scalar(select(func.count()).select_from(Alert).where(Alert.incident_id == storm_id)) == 40
        row = session.get(Incident, storm_id)
        assert row is not None and row.kind == STORM and row.severity == "P1" and row.channel_id
        assert row.title == "Alert storm: 20 groups"
        storm_paging = session.get(Paging, storm_id)
        assert storm_paging is not None

    # The card: a row per group (all 20 fit), the counts by severity and alertname.
    rows = _storm_rows(slack, row)
    assert len(rows) == 20 and all(STORM_SPLIT.match(r["accessory"]["action_id"]) for r in rows.values())
    text = json.dumps(_card(slack, row), ensure_ascii=False)
    assert "Alert storm: 20 group(s)" in text and "P1 19" in text and "P2 1" in text and "`Storm1` 7" in text
    assert all(f"Group {n} down" in text for n in range(10, 30))

    # Paged per policy: each of the 10 incidents and the storm once, the storm at P1.
    triggers = wait_for(lambda: len(t := _triggers(pagerduty)) == 11 and t, what="11 PagerDuty triggers")
    assert triggers[storm_paging.dedup_key].payload["severity"] == "critical"

    # A storm member's exact repeat is answered from a read, without a write.
    again = receive(storm_bot.services.db, storm_bot.services.settings.config,
                    WebhookMessage.model_validate(payloads[20]), now=clock())
    assert again.repeat and again.incident_id == storm_id

    # A resolved group updates the table.
    gone = _group_id(storm_bot, payloads[15])
    assert storm_bot.post_alerts(resolved(payloads[15])).json() == {"incident_id": storm_id, "outcome": "updated"}
    wait_for(lambda: "resolved" in json.dumps(_storm_rows(slack, _row(storm_bot, Incident, storm_id))[gone]),
             what="the resolved group's row")
    assert "accessory" not in _storm_rows(slack, _row(storm_bot, Incident, storm_id))[gone]  # nothing to split

    # Split out: its own incident, channel and page; its row leaves the table.
    split = _group_id(storm_bot, payloads[25])
    button = _storm_rows(slack, row)[split]["accessory"]
    slack.channels[row.channel_id].members.add("U0ALICE")
    body = block_actions(button["action_id"], button["value"], channel=row.card_channel_id,
                         response_url=slack.response_url(),
                         message={"type": "message", "ts": row.card_ts, "text": "", "blocks": []})
    assert post_to_slack_events(storm_bot.url, body).status_code == 200
    own_id = wait_for(lambda: _row(storm_bot, AlertGroup, split).current_incident_id != storm_id
                      and _row(storm_bot, AlertGroup, split).current_incident_id, what="the split-out incident")
    own = wait_for(lambda: (i := _row(storm_bot, Incident, own_id)).card_ts and i, what="its card")
    assert own.kind == "incident" and own.title == "Group 25 down" and own.channel_id not in (None, row.channel_id)
    wait_for(lambda: split not in _storm_rows(slack, _row(storm_bot, Incident, storm_id)), what="its row removed")
    with storm_bot.services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Alert).where(Alert.incident_id == own_id)) == 2
        own_paging = session.get(Paging, own_id)
        assert own_paging is not None and session.get(Incident, storm_id).title == "Alert storm: 19 groups"
    wait_for(lambda: own_paging.dedup_key in _triggers(pagerduty), what="the split-out incident's own page")
    # Its next notification lands on its own incident.
    assert storm_bot.post_alerts(payloads[25]).json()["incident_id"] == own_id

    # The rate falls: a new group opens its own incident again.
    clock.advance(minutes=6)
    assert storm_bot.post_alerts(_group(99)).json()["outcome"] == "created"

    # The storm resolves when its last group does.
    outcomes = [storm_bot.post_alerts(resolved(payloads[n])).json()["outcome"] for n in range(10, 30)
                if n not in (15, 25)]
    assert outcomes == ["updated"] * 17 + ["resolved"]
    assert _row(storm_bot, Incident, storm_id).status == IncidentStatus.RESOLVED
    wait_for(lambda: any(e.action == "resolve" and e.dedup_key == storm_paging.dedup_key for e in pagerduty.events),
             what="the storm's page resolved")


# -- the rules, on the intake transaction ------------------------------------------------------------

NOW = datetime.now().astimezone()


def _config(max_new: int = 2, **storm_policy: Any) -> OncallConfig:
    return OncallConfig.model_validate({"storm": {"max_new_incidents": max_new, "per_minutes": 5, **storm_policy}})


def _post(db: Database, config: OncallConfig, payload: dict[str, Any], now: datetime = NOW) -> Any:
    return receive(db, config, WebhookMessage.model_validate(payload), now=now)


def _storms(db: Database) -> list[Incident]:
    with db.read() as session:
        return list(session.scalars(select(Incident).where(Incident.kind == STORM)))


def test_the_rate_counts_incidents_and_joins_and_the_storm_ends_when_it_falls(db: Database) -> None:
    config = _config()
    outcomes = [_post(db, config, _group(n), NOW + timedelta(seconds=n)).outcome for n in range(5)]
    assert outcomes == ["created", "created", "joined_storm", "joined_storm", "joined_storm"]
    # Joins count too: four minutes on, the last three joins still keep it a storm ...
    assert _post(db, config, _group(5), NOW + timedelta(minutes=4)).outcome == "joined_storm"
    # ... and once the window holds fewer than max_new_incidents, groups open their own again.
    assert _post(db, config, _group(6), NOW + timedelta(minutes=10)).outcome == "created"
    assert len(_storms(db)) == 1


def test_storm_mode_off_opens_every_group_its_own_incident(db: Database) -> None:
    config = _config(enabled=False)
    assert {_post(db, config, _group(n)).outcome for n in range(5)} == {"created"}
    assert _storms(db) == []


def test_a_members_repeat_is_a_read_even_after_others_joined_and_its_change_is_not(db: Database) -> None:
    config = _config(1)
    _post(db, config, _group(0))
    storm_id = _post(db, config, _group(1, "warning")).incident_id
    assert _post(db, config, _group(2, "warning")).outcome == "joined_storm"  # the storm's title changed
    repeat = _post(db, config, _group(1, "warning"))
    assert repeat.repeat and repeat.incident_id == storm_id and repeat.outcome == "unchanged"
    changed = _group(1, "warning")
    changed["alerts"][0]["annotations"]["description"] = "worse"
    assert _post(db, config, changed).outcome == "updated"
    # A P1 joining raises the storm: the others' digests covered the severity they read, so each
    # takes the full path once (changing nothing), then is a read again.
    assert _post(db, config, _group(3)).outcome == "joined_storm"
    once = _post(db, config, _group(2, "warning"))
    assert (once.repeat, once.outcome) == (False, "unchanged")
    assert _post(db, config, _group(2, "warning")).repeat


def test_the_storm_takes_its_highest_severity_and_resolves_and_reopens_with_its_groups(db: Database) -> None:
    config = _config(1)
    _post(db, config, _group(0))
    first, second = _group(1, "warning"), _group(2, "critical")
    storm_id = _post(db, config, first).incident_id
    assert _row_of(db, storm_id).severity == "P3"
    _post(db, config, second)
    assert _row_of(db, storm_id).severity == "P1"
    assert _post(db, config, resolved(first)).outcome == "updated"
    assert _post(db, config, resolved(second)).outcome == "resolved"
    assert _row_of(db, storm_id).status == IncidentStatus.RESOLVED
    # Within the reopen window the group firing again reopens the storm, as a group reopens its incident.
    assert _post(db, config, first, NOW + timedelta(minutes=1)).outcome == "reopened"
    assert _row_of(db, storm_id).is_open


def _row_of(db: Database, incident_id: int) -> Incident:
    with db.read() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        return row


def test_the_same_alert_in_two_groups_of_one_storm_is_stored_for_each(db: Database) -> None:
    config = _config(1)
    _post(db, config, _group(0))
    one = _group(1)
    other = {**one, "receiver": "another-receiver"}  # an Alertmanager route with `continue: true`
    assert _post(db, config, one).outcome == _post(db, config, other).outcome == "joined_storm"
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Alert).where(
            Alert.incident_id == _storms(db)[0].id)) == 4


def test_split_out_moves_the_group_and_its_alerts_and_opens_its_incident(db: Database) -> None:
    config = _config(1)
    _post(db, config, _group(0))
    storm_id = _post(db, config, _group(1)).incident_id
    _post(db, config, _group(2))
    with db.session() as session:
        group_id = session.scalars(select(AlertGroup.id).where(AlertGroup.group_key == _group(1)["groupKey"])).one()
        done = split_out(session, config, storm_id, group_id, "U0ALICE", NOW)
    assert done.incident_id is not None and done.refused is None
    with db.session() as session:
        assert split_out(session, config, storm_id, group_id, "U0ALICE", NOW).refused == "not_in_storm"
        own = session.get(Incident, done.incident_id)
        assert own is not None and own.kind == "incident" and own.severity == "P1" and own.title == "Group 1 down"
        assert session.scalar(select(func.count()).select_from(Alert).where(Alert.incident_id == own.id)) == 2
        member = session.scalars(select(StormMember).where(StormMember.group_id == group_id)).one()
        assert member.status == storm.SPLIT and member.split_incident_id == own.id
        assert session.get(Incident, storm_id).title == "Alert storm: 1 group"
        assert session.get(Paging, own.id) is not None  # armed to page on its own
    assert _post(db, config, _group(1)).incident_id == done.incident_id
    # The last firing group split out: nothing is left of the storm to respond to.
    with db.session() as session:
        last = session.scalars(select(AlertGroup.id).where(AlertGroup.group_key == _group(2)["groupKey"])).one()
        split_out(session, config, storm_id, last, "U0ALICE", NOW)
    assert _row_of(db, storm_id).status == IncidentStatus.RESOLVED


def test_groups_deciding_at_once_open_one_storm(db: Database) -> None:
    config = _config(2)
    barrier = threading.Barrier(8)
    results: list[str] = []

    def post(n: int) -> None:
        barrier.wait()
        results.append(_post(db, config, _group(n)).outcome)

    threads = [threading.Thread(target=post, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["created"] * 2 + ["joined_storm"] * 6
    assert len(_storms(db)) == 1


# -- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("policy", "message"), [
    ({"max_new_incidents": 0}, "storm.max_new_incidents: must be 1 to 1000 incidents, not 0"),
    ({"per_minutes": 0}, "storm.per_minutes: must be 1 to 1440 minutes (a day), not 0"),
    ({"per_minutes": 2000}, "storm.per_minutes: must be 1 to 1440 minutes (a day), not 2000"),
    ({"max_new": 3}, "storm.max_new: unknown key (a typo?)"),
    ({"enabled": "sometimes"}, "storm.enabled: Input should be a valid boolean"),
])
def test_a_wrong_storm_section_is_refused_naming_the_line_and_the_fix(
        tmp_path: Path, policy: dict[str, Any], message: str) -> None:
    key, value = next(iter(policy.items()))
    path = tmp_path / "oncall.yaml"
    path.write_text(f"channels:\n  announce: C0INCIDENTS\nstorm:\n  {key}: {json.dumps(value)}\n")
    with pytest.raises(ConfigError) as error:
        load_config_file(path)
    assert any(p.startswith(f"{path}:4: {message}") for p in error.value.problems), error.value.problems


def test_the_storm_defaults_are_10_incidents_per_5_minutes() -> None:
    policy = OncallConfig().storm
    assert (policy.max_new_incidents, policy.per_minutes, policy.enabled) == (10, 5, True)


# -- the card within Block Kit's limits ------------------------------------------------------------

def _member(n: int, now: datetime) -> StormMember:
    return StormMember(id=n, storm_id=1, group_id=n, joined_at=now, status="resolved" if n % 7 == 0 else "firing",
                       severity=("P1", "P2", "P3")[n % 3], title=f"<!channel> Group {n} " + "x" * 300,
                       alertname=f"Alert`{n % 40}", firing=2, alerts=3, updated_at=now)


@pytest.mark.parametrize("count", [0, 1, 20, 500])
@pytest.mark.parametrize("locale", ["en", "ja"])
def test_the_storm_card_fits_slacks_limits_and_counts_what_it_cuts(count: int, locale: str) -> None:
    now = datetime.now().astimezone()
    incident = Incident(id=1, title="Alert storm: 500 groups", alertname=storm.STORM_ALERTNAME, severity="P1",
                        kind=STORM, created_at=now, updated_at=now)
    members = [_member(n, now) for n in range(1, count + 1)]
    view = CardView(incident=incident, alerts=[], now=now, storm=members, storm_rate=(10, 5), locale=locale,
                    paging=Paging(incident_id=1, dedup_key="k"))
    _, blocks = incident_card(view)
    assert validate_blocks(blocks) == [] and len(blocks) <= LIMITS["blocks"]
    assert any(b.get("block_id") == CARD_ACTIONS_BLOCK for b in blocks)  # the buttons are never cut off
    rows = [b for b in blocks if b.get("block_id", "").startswith("storm_group:")]
    text = json.dumps(blocks, ensure_ascii=False)
    assert "<!channel>" not in text  # titles are alert-derived: escaped
    if count > len(rows):
        hidden = count - len(rows)
        assert (f"{hidden} more group(s)" if locale == "en" else f"ほか {hidden} グループ") in text
    else:
        assert len(rows) == count
    assert len(rows) >= min(count, 20)  # the table is not crowded out
    for row in rows:  # a Split out button on the firing groups' rows only
        assert ("accessory" in row) == (int(row["block_id"].split(":")[1]) % 7 != 0)


def test_a_resolved_storm_card_offers_no_split() -> None:
    now = datetime.now().astimezone()
    incident = Incident(id=1, title="Alert storm: 3 groups", alertname=storm.STORM_ALERTNAME, severity="P1",
                        kind=STORM, status=IncidentStatus.RESOLVED, created_at=now, updated_at=now, resolved_at=now)
    view = CardView(incident=incident, alerts=[], now=now, storm=[_member(n, now) for n in (1, 2, 3)],
                    storm_rate=(10, 5))
    _, blocks = incident_card(view)
    assert [b for b in blocks if b.get("block_id", "").startswith("storm_group:")] != []
    assert not [b for b in blocks if "accessory" in b]


def test_incident_split_in_the_storm_channel_names_a_group_by_number_or_title(
        storm_bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    from tests.test_incident_command import ask

    replies = [storm_bot.post_alerts(_group(n)).json() for n in range(13)]
    assert [r["outcome"] for r in replies] == ["created"] * 10 + ["joined_storm"] * 3
    storm_id = replies[10]["incident_id"]
    row = wait_for(lambda: (i := _row(storm_bot, Incident, storm_id)).card_ts and i, what="the storm card")
    own_row = wait_for(lambda: (i := _row(storm_bot, Incident, replies[0]["incident_id"])).channel_id and i,
                       what="an incident of its own")
    ids = {n: _group_id(storm_bot, _group(n)) for n in (10, 11, 12)}
    rows = wait_for(lambda: len(r := _storm_rows(slack, _row(storm_bot, Incident, storm_id))) == 3 and r,
                    what="the storm card's three rows")
    assert all(f"group {ids[n]}" in json.dumps(rows[ids[n]]) for n in ids)  # the number to type
    channel = row.channel_id or ""
    slack.channels[channel].members.add("U0ALICE")

    assert "works in an alert storm's channel" in ask(storm_bot, slack, "split 1", channel=own_row.channel_id or "")
    usage = ask(storm_bot, slack, "split", channel=channel)
    assert "`/incident split <number>`" in usage and all(f"group {ids[n]}: *P1* Group {n} down" in usage for n in ids)
    assert "No firing group of this storm has the number or title `99999`" in \
        ask(storm_bot, slack, "split 99999", channel=channel)
    assert "is in the titles of 3 firing groups" in ask(storm_bot, slack, "split down", channel=channel)
    assert "Only members of" in ask(storm_bot, slack, f"split {ids[11]}", channel=channel, user="U0CAROL")
    assert _row(storm_bot, AlertGroup, ids[11]).current_incident_id == storm_id  # the refusal changed nothing

    by_title = ask(storm_bot, slack, "split group 11 DOWN", channel=channel)
    assert "Split out into incident #" in by_title
    by_number = ask(storm_bot, slack, f"split #{ids[12]}", channel=channel)
    assert "Split out into incident #" in by_number
    for n in (11, 12):
        own_id = _row(storm_bot, AlertGroup, ids[n]).current_incident_id
        assert own_id not in (None, storm_id) and f"#{own_id}" in (by_title if n == 11 else by_number)
        wait_for(lambda own_id=own_id: _row(storm_bot, Incident, own_id).card_ts, what=f"group {n}'s own card")
    assert "No firing group" in ask(storm_bot, slack, f"split {ids[11]}", channel=channel)  # split out already
    wait_for(lambda: set(_storm_rows(slack, _row(storm_bot, Incident, storm_id))) == {ids[10]},
             what="the split groups' rows gone from the storm card")
