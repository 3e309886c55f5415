"""The fault suite (issue 13 §8): every fault the bot must live through, each asserted to lose
nothing and do nothing twice. Most are asserted where the feature they hit is tested; this file
holds the rest and, here, the map.

| fault                                         | asserted in                                                    |
|-----------------------------------------------|----------------------------------------------------------------|
| Slack 429 with Retry-After                    | test_incident_flow::test_slack_429_is_retried_after_retry_after |
| Slack 429s shared by replicas (Redis limiter) | test_redis_replicas::test_two_replicas_sharing_redis_post_...   |
| Slack 5xx, as JSON or a gateway's HTML page   | here: test_slack_5xx_at_every_step_...                          |
| Slack calls timing out after Slack acted      | here: test_slack_calls_that_time_out_...                        |
| Slack answers lost after Slack acted          | test_slack_setup::test_answers_lost_after_slack_acted_...       |
| Slack down, then back                         | test_incident_flow::test_slack_down_then_back_loses_nothing     |
| PagerDuty down, then back; PagerDuty 429      | test_escalation::test_pagerduty_down_then_back_..., ..._429_... |
| Redis down, then back                         | test_redis_replicas::test_redis_down_dedup_goes_through_...     |
| PostgreSQL restarted mid-storm                | here: test_postgresql_cut_mid_storm_...                         |
| SIGKILL after the webhook's 200, mid-opening  | test_crash_safety::test_killed_at_each_step_of_opening_...      |
| SIGKILL mid-remediation                       | test_reconcile::test_killed_while_an_approved_remediation_...   |
| HA duplicate webhooks, concurrent             | test_incident_flow::test_repeats_and_concurrent_ha_duplicates_. |
| two replicas firing one timer                 | test_timer_replicas, test_escalation::test_two_replicas_...     |
| clock jumps forward (the bot down meanwhile)  | test_escalation::test_restart_with_pending_timers_fires_...     |
| clock jumps forward and back (bot running)    | here: test_a_clock_jump_...                                     |
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bot.config import OncallConfig
from bot.models import STORM, Alert, AlertGroup, Incident, Job, JobStatus, StormMember, TimerStatus
from tests.alerts import alert, group
from tests.conftest import FakeClock, RunningBot, make_settings, start_bot, wait_for
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.fakes.tcp_proxy import TcpProxy
from tests.test_escalation import (  # the escalation tests' PagerDuty world
    actions,
    advance,
    escalations,
    idle,
    open_incident,
    pagerduty,  # noqa: F401 (a fixture)
    paging,
    pd_bot,  # noqa: F401 (a fixture)
    pd_incident_id,
    settle,
    timers,
)

BASE = {"channels": {"announce": "C0INCIDENTS"},
        "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE"]}]}


def _jobs(bot: RunningBot, *statuses: JobStatus) -> list[Job]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Job).where(Job.status.in_(statuses))))  # type: ignore[attr-defined]


def _retry_until(bot: RunningBot, clock: FakeClock, done: Any, what: str) -> None:
    """Let every retry come due (backoff is at most 10 s) until `done()`: the clock moves only
    while no job is mid-call, as real time would."""
    for _ in range(40):
        if done():
            return
        wait_for(lambda: not _jobs(bot, JobStatus.RUNNING), what="the running jobs to end")
        clock.advance(seconds=15)
        time.sleep(0.2)  # the outbox polls every 0.05 s: the jobs now due are claimed
    assert done(), f"never: {what}"


def _incident_channels(slack: FakeSlack) -> list[str]:
    return sorted(c.name for c in slack.channels.values() if c.name.startswith("inc-"))


def _the_incident(bot: RunningBot) -> Incident:
    with bot.services.db.read() as session:
        return session.scalars(select(Incident)).one()


# -- Slack failing ---------------------------------------------------------------------------------

@pytest.fixture
def short_timeout_bot(database_url: str, slack: FakeSlack, clock: FakeClock) -> Iterator[RunningBot]:
    running = start_bot(make_settings(database_url, slack, OncallConfig.model_validate(BASE),
                                      slack_timeout_seconds=1), clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


def test_slack_5xx_at_every_step_as_json_or_a_gateways_html_page_makes_each_thing_once(
        short_timeout_bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    bot = short_timeout_bot
    slack.fail_next("conversations.create", "internal_error", status=500)
    slack.gateway_error("conversations.create", status=502)
    slack.gateway_error("conversations.invite", status=503)
    slack.fail_next("conversations.setTopic", "fatal_error", status=500)
    slack.gateway_error("chat.postMessage", status=504, times=2)
    assert bot.post_alerts(group()).status_code == 200

    _retry_until(bot, clock, lambda: idle(bot), "every job done")
    incident = _the_incident(bot)
    assert _incident_channels(slack) == [incident.channel_name]
    channel = slack.channels[incident.channel_id]
    assert "U0ALICE" in channel.members and "ServiceDown" in channel.topic
    assert len(slack.tagged("card")) == 1 and len(slack.tagged("announcement")) == 1
    assert incident.card_ts and incident.announce_ts
    # Every fault was met, and none made a job give up.
    assert [c.status for c in slack.calls_to("conversations.create")] == [500, 502, 200]
    assert slack.count_failed("conversations.invite") == 1 and slack.count_failed("conversations.setTopic") == 1
    assert [c.status for c in slack.calls_to("chat.postMessage")][:2] == [504, 504]
    assert _jobs(bot, JobStatus.FAILED) == []


def test_slack_calls_that_time_out_after_slack_acted_make_each_thing_once(
        short_timeout_bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    """Slack created the channel and posted the card, but the answers came after the client's
    1 s timeout: the retries find the channel and the card instead of making second ones."""
    bot = short_timeout_bot
    holds = [slack.hold("conversations.create"),
             slack.hold("chat.postMessage", match=lambda args: '"kind": "card"' in str(args.get("metadata"))
                        or "'kind': 'card'" in str(args.get("metadata")))]
    assert bot.post_alerts(group()).status_code == 200
    releases = []
    for hold in holds:
        _retry_until(bot, clock, hold.reached.is_set, f"the bot calling {hold.method}")
        releases.append(threading.Timer(2.5, hold.release))  # past the client's 1 s: it gave up waiting
        releases[-1].start()

    _retry_until(bot, clock, lambda: idle(bot), "every job done")
    for release in releases:
        release.join()
    wait_for(lambda: len(slack.calls_to("chat.postMessage")) >= 2, what="the held answers sent, too late")
    incident = _the_incident(bot)
    assert _incident_channels(slack) == [incident.channel_name]
    assert [c.response.get("ok") for c in slack.calls_to("conversations.create")] in ([True], [True, False])
    cards = slack.tagged("card")
    assert len(cards) == 1 and cards[0][1].ts == incident.card_ts
    with bot.services.db.read() as session:
        opened = session.get(Job, 1)
    assert opened is not None and opened.attempts == 3  # the two calls that timed out, then done
    assert _jobs(bot, JobStatus.FAILED) == []


# -- PostgreSQL restarted mid-storm ---------------------------------------------------------------

def _storm_group(n: int) -> dict[str, Any]:
    alerts = [alert(f"Storm{n % 3}", labels={"instance": f"i{n}-{k}"}) for k in range(2)]
    return group(*alerts, group_key=f'{{}}/{{team="payments"}}:{{instance="i{n}"}}')


def test_postgresql_cut_mid_storm_loses_no_group_and_doubles_nothing(
        postgres_url: str, slack: FakeSlack, clock: FakeClock) -> None:
    """Every connection to PostgreSQL dropped and refused for 2 s, as when its pod restarts, while
    a storm is being opened in Slack: the webhooks meanwhile get 503 (Alertmanager retries them),
    the jobs caught mid-write are taken over after their lease and find what they had done."""
    proxy = TcpProxy(make_url(postgres_url).port or 5432).start()
    through_proxy = make_url(postgres_url).set(port=proxy.port).render_as_string(hide_password=False)
    config = OncallConfig.model_validate({**BASE, "storm": {"max_new_incidents": 5, "per_minutes": 5}})
    # A short lease: a job whose "done" could not be written is run again soon (and must find its work).
    bot = start_bot(make_settings(through_proxy, slack, config, job_lease_seconds=3.0), clock=clock)
    try:
        payloads = [_storm_group(n) for n in range(24)]
        first = [bot.post_alerts(p) for p in payloads[:12]]
        assert [r.status_code for r in first] == [200] * 12
        wait_for(lambda: slack.calls_to("chat.postMessage"), what="the storm's Slack work under way")
        proxy.cut()
        during = [bot.post_alerts(p).status_code for p in payloads[12:]]
        assert set(during) == {503}, during  # refused, not lost: Alertmanager sends them again
        wait_for(lambda: proxy.refused > 0, what="the bot's loops to meet the cut")
        proxy.restore()

        # Alertmanager's retries of the refused ones, then every group again (repeat_interval).
        assert [bot.post_alerts(p).status_code for p in payloads[12:]] == [200] * 12
        assert [bot.post_alerts(p).status_code for p in payloads] == [200] * 24
        wait_for(lambda: idle(bot), timeout=90, what="every job done after the cut")

        with bot.services.db.read() as session:
            groups = session.scalar(select(func.count()).select_from(AlertGroup).where(  # the storm's own: not one
                ~AlertGroup.group_key.startswith("storm:")))  # type: ignore[attr-defined]
            alerts = session.scalar(select(func.count()).select_from(Alert))
            incidents = list(session.scalars(select(Incident)))
            members = session.scalar(select(func.count()).select_from(StormMember))
        assert (groups, alerts) == (24, 48)
        storms = [i for i in incidents if i.kind == STORM]
        assert len(storms) == 1 and len(incidents) == 6 and members == 19
        assert len(_incident_channels(slack)) == 6 == len({i.channel_id for i in incidents})
        cards = slack.tagged("card")
        assert sorted(ts for _, m in cards for ts in [m.ts]) == sorted(i.card_ts for i in incidents)
        assert _jobs(bot, JobStatus.FAILED) == []
    finally:
        bot.stop()
        bot.services.db.dispose()
        proxy.stop()


# -- the clock jumping -----------------------------------------------------------------------------

def _reminders_fired(bot: RunningBot, incident_id: int) -> int:
    return len([t for t in timers(bot, incident_id, "reminder") if t.status == TimerStatus.FIRED])


def test_a_clock_jump_of_a_day_fires_each_overdue_escalation_once_and_one_reminder(
        pd_bot: RunningBot, pagerduty: FakePagerDuty, clock: FakeClock) -> None:  # noqa: F811
    row = open_incident(pd_bot)  # P1: paged at once, L3 at 15 min, L4 at 60 min
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on open")
    reminders = _reminders_fired(pd_bot, row.id)

    advance(pd_bot, clock, days=1)  # an NTP step, a VM resumed from suspend
    wait_for(lambda: pagerduty.escalation_level(pd_incident_id(pagerduty, key)) == 3, what="L4 after the jump")
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == [("page", None), ("escalate", 2), ("escalate", 3)]
    assert actions(pagerduty, key) == ["trigger"]
    assert _reminders_fired(pd_bot, row.id) == reminders + 1  # one late reminder, not 96


def test_a_clock_jump_back_fires_nothing_again_and_the_timetable_holds(
        pd_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:  # noqa: F811
    row = open_incident(pd_bot)
    key = paging(pd_bot, row.id).dedup_key
    wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page on open")
    advance(pd_bot, clock, minutes=15.5)
    pd_id = pd_incident_id(pagerduty, key)
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 2, what="L3 at 15 min")
    settle(pd_bot)
    fired = escalations(pd_bot, row.id)

    advance(pd_bot, clock, minutes=-30)  # the clock corrected backwards by half an hour
    assert pd_bot.post_alerts(group()).json()["incident_id"] == row.id  # Alertmanager's repeat
    settle(pd_bot)
    advance(pd_bot, clock, minutes=30)  # back where it was: the 15-minute deadline passes "again"
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == fired == [("page", None), ("escalate", 2)]
    assert pagerduty.escalation_level(pd_id) == 2 and actions(pagerduty, key) == ["trigger"]

    advance(pd_bot, clock, minutes=45)  # 60 min after the open, on the corrected clock
    wait_for(lambda: pagerduty.escalation_level(pd_id) == 3, what="L4 at 60 min")
    settle(pd_bot)
    assert escalations(pd_bot, row.id) == [("page", None), ("escalate", 2), ("escalate", 3)]
    assert len(_incident_channels(slack)) == 1
