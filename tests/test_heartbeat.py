"""Watch the watchers: Alertmanager's always-firing Watchdog is the bot's heartbeat.

Driven over HTTP (Alertmanager webhooks, /readyz, /metrics), observed through the Slack and
PagerDuty fakes; the heartbeat goes missing by moving the clock, and timers fire as they come due.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.config import ConfigError, OncallConfig, load_config_file
from bot.heartbeat import DEDUP_KEY, LATE, MISSING
from bot.jobs import JOB_HEARTBEAT_PAGE, JOB_HEARTBEAT_POST
from bot.models import Alert, Heartbeat, Incident, Job, JobStatus, Timer, TimerStatus
from commands.app import build
from tests.alerts import alert, group, resolved
from tests.conftest import WEBHOOK_TOKEN, FakeClock, RunningBot, fire_side_by_side, make_settings, start_bot, wait_for
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.processes import start_alertmanager
from tests.fakes.slack import FakeSlack

ROUTING_KEY = "R0UTINGKEY0FTHEPAYMENTSSERVICE00"
ANNOUNCE = "C0INCIDENTS"
MISSING_AFTER = 10  # minutes
POLICY: dict[str, Any] = {"channels": {"announce": ANNOUNCE}, "heartbeat": {"missing_after_minutes": MISSING_AFTER}}
PAST_DUE = {"minutes": MISSING_AFTER, "seconds": 5}  # just past the deadline: the runner was up, on time


@pytest.fixture
def pagerduty(clock: FakeClock) -> Iterator[FakePagerDuty]:
    with FakePagerDuty() as fake:
        fake.clock = clock
        fake.add_service("PSVC1", ROUTING_KEY)
        yield fake


def settings_for(database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty | None,
                 config: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    paging = {} if pagerduty is None else dict(
        pagerduty_routing_key=ROUTING_KEY, pagerduty_events_url=pagerduty.base_url,
        pagerduty_ca_file=pagerduty.ca_file)
    return make_settings(database_url, slack, OncallConfig.model_validate(config or POLICY), **paging)


def start(settings, clock: FakeClock, running: list[RunningBot]) -> RunningBot:  # type: ignore[no-untyped-def]
    bot = start_bot(settings, clock=clock)
    bot.services.timers.poll_seconds = 0.05
    running.append(bot)
    return bot


@pytest.fixture
def hb_bot(database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock,
           running: list[RunningBot]) -> RunningBot:
    return start(settings_for(database_url, slack, pagerduty), clock, running)


# -- helpers -------------------------------------------------------------------------------------

def watchdog(status: str = "firing") -> dict[str, Any]:
    """The heartbeat as kube-prometheus sends it: its own route, its own group."""
    payload = group(alert("Watchdog", labels={"severity": "none"},
                          annotations={"summary": "An alert that should always be firing"}),
                    group_key='{}/{alertname="Watchdog"}:{}')
    return resolved(payload) if status == "resolved" else payload


def beat(bot: RunningBot, payload: dict[str, Any] | None = None) -> None:
    reply = bot.post_alerts(payload or watchdog())
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"incident_id": None, "outcome": "heartbeat"}


def idle(bot: RunningBot) -> bool:
    with bot.services.db.read() as session:
        return session.scalars(select(Job).where(Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING]))).first() \
            is None


def settle(bot: RunningBot) -> None:
    """Fire whatever is due and let the outbox drain: "nothing else happens" becomes checkable."""
    wait_for(lambda: bot.services.timers.fire_due() == 0 and idle(bot), what="timers and jobs to settle")


def advance(bot: RunningBot, clock: FakeClock, **delta: float) -> None:
    settle(bot)
    clock.advance(**delta)
    settle(bot)


def heartbeat_timers(bot: RunningBot) -> list[Timer]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Timer).where(Timer.kind == MISSING).order_by(Timer.id)))


def pending(bot: RunningBot) -> list[Timer]:
    return [t for t in heartbeat_timers(bot) if t.status == TimerStatus.PENDING]


def row(bot: RunningBot) -> Heartbeat | None:
    with bot.services.db.read() as session:
        return session.get(Heartbeat, 1)


def incidents(bot: RunningBot) -> list[Incident]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Incident)))


def pd_actions(pagerduty: FakePagerDuty) -> list[str]:
    with pagerduty.lock:
        return [e.action for e in pagerduty.events if e.dedup_key == DEDUP_KEY]


def posts(slack: FakeSlack, event: str) -> list[str]:
    """The texts of the heartbeat's `event` (lost, back) posts, in whichever channel."""
    found = slack.tagged(f"heartbeat_{event}")
    assert all(channel == ANNOUNCE for channel, _ in found)
    return [m.text for _, m in found]


# -- a heartbeat is no incident, and keeps the watch armed ---------------------------------------

def test_a_heartbeat_opens_no_incident_and_arms_one_timer(hb_bot: RunningBot, slack: FakeSlack,
                                                          clock: FakeClock) -> None:
    beat(hb_bot)
    settle(hb_bot)
    assert incidents(hb_bot) == []
    assert slack.calls_to("conversations.create") == [] and slack.messages(ANNOUNCE) == []
    (timer,) = pending(hb_bot)
    found = row(hb_bot)
    assert found is not None and found.last_seen_at is not None and found.timer_id == timer.id
    assert timer.due_at == found.last_seen_at + timedelta(minutes=MISSING_AFTER)
    assert abs((found.last_seen_at - clock()).total_seconds()) < 5


def test_heartbeats_that_keep_coming_move_the_one_timer_and_page_nobody(
        hb_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    beat(hb_bot)
    for _ in range(4):  # 24 minutes in all: far past one deadline, but never without a heartbeat for 10
        advance(hb_bot, clock, minutes=6)
        beat(hb_bot)
    settle(hb_bot)
    (timer,) = heartbeat_timers(hb_bot)  # moved, never a new row per heartbeat
    assert timer.status == TimerStatus.PENDING
    assert timer.due_at > clock() + timedelta(minutes=MISSING_AFTER - 1)
    assert pd_actions(pagerduty) == [] and slack.messages(ANNOUNCE) == []


def test_only_the_heartbeat_is_taken_out_of_the_webhooks(hb_bot: RunningBot, slack: FakeSlack) -> None:
    beat(hb_bot)
    other = hb_bot.post_alerts(group())
    assert other.status_code == 200 and other.json()["outcome"] == "created"
    # A route grouping by something else puts the heartbeat beside a real alert: the alert is
    # the group's incident, the heartbeat is only recorded.
    mixed = group(alert("Watchdog", labels={"severity": "none"}), alert("DiskFull", labels={"severity": "warning"}),
                  group_key='{}:{team="payments"}')
    reply = hb_bot.post_alerts(mixed)
    assert reply.status_code == 200 and reply.json()["outcome"] == "created", reply.text
    settle(hb_bot)
    with hb_bot.services.db.read() as session:
        mixed_alerts = list(session.scalars(select(Alert).where(Alert.incident_id == reply.json()["incident_id"])))
    assert [a.alertname for a in mixed_alerts] == ["DiskFull"]
    assert sorted(i.alertname for i in incidents(hb_bot)) == ["DiskFull", "ServiceDown"]
    assert len(pending(hb_bot)) == 1


def test_a_resolved_heartbeat_is_no_heartbeat(hb_bot: RunningBot) -> None:
    """Alertmanager resolves the Watchdog when Prometheus stops sending it: the absence of one."""
    beat(hb_bot, watchdog("resolved"))
    settle(hb_bot)
    assert incidents(hb_bot) == [] and heartbeat_timers(hb_bot) == []
    assert row(hb_bot) is None


# -- lost, and back -------------------------------------------------------------------------------

def test_a_missing_heartbeat_pages_once_says_so_and_clears_when_it_returns(
        hb_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    beat(hb_bot)
    advance(hb_bot, clock, minutes=MISSING_AFTER - 1)
    assert pd_actions(pagerduty) == []  # not yet

    advance(hb_bot, clock, seconds=65)
    wait_for(lambda: posts(slack, "lost") and pd_actions(pagerduty), what="the page and the announce channel told")
    settle(hb_bot)
    assert pd_actions(pagerduty) == ["trigger"]
    with pagerduty.lock:
        (event,) = [e for e in pagerduty.events if e.dedup_key == DEDUP_KEY]
    assert event.routing_key == ROUTING_KEY and event.payload["severity"] == "critical"
    assert event.payload["summary"].startswith("Alerts are not reaching the bot: no Watchdog heartbeat since ")
    (text,) = posts(slack, "lost")
    assert "Alerts are not reaching the bot" in text and "`Watchdog`" in text and "PagerDuty was paged" in text

    advance(hb_bot, clock, minutes=45)  # still nothing: no second page, no second post
    assert pd_actions(pagerduty) == ["trigger"] and len(posts(slack, "lost")) == 1

    beat(hb_bot)
    settle(hb_bot)
    assert pd_actions(pagerduty) == ["trigger", "resolve"]
    assert pagerduty.alert(DEDUP_KEY, ROUTING_KEY).status == "resolved"  # type: ignore[union-attr]
    (back,) = posts(slack, "back")
    assert "Alerts reach the bot again" in back and "silent for 55 min" in back and "page was resolved" in back
    assert len(pending(hb_bot)) == 1  # watching again
    assert incidents(hb_bot) == []


def test_readyz_and_metrics_report_the_heartbeat_without_failing_readiness(
        hb_bot: RunningBot, slack: FakeSlack, clock: FakeClock) -> None:
    with hb_bot.client() as http:
        assert http.get("/readyz").json()["heartbeat"]["status"] == "waiting"
        beat(hb_bot)
        assert http.get("/readyz").json()["heartbeat"]["status"] == "ok"
        advance(hb_bot, clock, **PAST_DUE)
        wait_for(lambda: posts(slack, "lost"), what="the heartbeat to be lost")
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text  # degraded, not unready: the bot still works
        body = ready.json()
        assert body["heartbeat"]["status"] == "lost" and body["heartbeat"]["age_seconds"] >= MISSING_AFTER * 60
        lost = "alerts are not reaching the bot: no Watchdog heartbeat since"
        assert any(w.startswith(lost) for w in body["warnings"]), body["warnings"]
        metrics = http.get("/metrics").text
        assert "oncall_heartbeat_lost 1.0" in metrics
        age = float(next(line.split()[1] for line in metrics.splitlines()
                         if line.startswith("oncall_heartbeat_age_seconds ")))
        assert MISSING_AFTER * 60 <= age < MISSING_AFTER * 60 + 60
        beat(hb_bot)
        assert http.get("/readyz").json()["heartbeat"]["status"] == "ok"
        assert "oncall_heartbeat_lost 0.0" in http.get("/metrics").text


def test_the_page_and_the_post_are_retried_and_delivered_once(
        hb_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    beat(hb_bot)
    settle(hb_bot)
    pagerduty.fail_next("/v2/enqueue", 503, times=3)  # past the client's one quick retry: the outbox retries
    slack.lose_answer("chat.postMessage")  # posted, but the bot never hears so: the retry must find it
    clock.advance(**PAST_DUE)
    wait_for(lambda: pd_actions(pagerduty) and posts(slack, "lost"), timeout=30, what="page and post, retried")
    settle(hb_bot)
    assert pd_actions(pagerduty) == ["trigger"] and len(posts(slack, "lost")) == 1
    with hb_bot.services.db.read() as session:
        jobs = list(session.scalars(select(Job).where(Job.kind.in_([JOB_HEARTBEAT_PAGE, JOB_HEARTBEAT_POST]))))
    assert {j.kind: j.attempts > 1 for j in jobs} == {JOB_HEARTBEAT_PAGE: True, JOB_HEARTBEAT_POST: True}
    assert all(j.status == JobStatus.DONE for j in jobs)


def test_a_heartbeat_back_before_pagerduty_heard_of_the_loss_pages_nobody(
        hb_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    """PagerDuty down for the whole loss: once it is back, the trigger would page someone about a
    loss that is over; it is left out, and the resolve behind it (same lane) finds nothing open."""
    beat(hb_bot)
    settle(hb_bot)
    pagerduty.set_down(True)
    clock.advance(**PAST_DUE)

    def page_job(action: str) -> Job | None:
        with hb_bot.services.db.read() as session:
            jobs = session.scalars(select(Job).where(Job.kind == JOB_HEARTBEAT_PAGE))
            return next((j for j in jobs if j.payload["action"] == action), None)

    wait_for(lambda: posts(slack, "lost"), what="the announce channel told")
    wait_for(lambda: (job := page_job("trigger")) and job.last_error, what="the trigger to fail once")
    beat(hb_bot)
    # Its next try finds the loss over and sends nothing: done while PagerDuty is still down.
    wait_for(lambda: page_job("trigger").status == JobStatus.DONE, timeout=30,  # type: ignore[union-attr]
             what="the trigger left out")
    pagerduty.set_down(False)
    wait_for(lambda: pd_actions(pagerduty), timeout=30, what="PagerDuty to hear the resolve")
    settle(hb_bot)
    assert pd_actions(pagerduty) == ["resolve"] and pagerduty.alert(DEDUP_KEY, ROUTING_KEY) is None
    assert posts(slack, "back")


def test_two_timer_services_fire_the_missing_heartbeat_once(
        database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    from bot.heartbeat import record

    settings = settings_for(database_url, slack, pagerduty)
    replicas = [build(settings, clock=clock), build(settings, clock=clock)]  # two engines, one database
    try:
        with replicas[0].db.session() as session:
            record(session, settings.config.heartbeat, now=clock())
        clock.advance(**PAST_DUE)
        fire_side_by_side(replicas)
        with replicas[1].db.read() as session:
            kinds = [j.kind for j in session.scalars(select(Job))]
            (timer,) = session.scalars(select(Timer).where(Timer.kind == MISSING))
        assert sorted(kinds) == [JOB_HEARTBEAT_PAGE, JOB_HEARTBEAT_POST]
        assert timer.status == TimerStatus.FIRED and timer.outcome == "lost: paged"
        asyncio.run(_drain(replicas[1]))
        assert pd_actions(pagerduty) == ["trigger"] and len(posts(slack, "lost")) == 1
    finally:
        for replica in replicas:
            replica.db.dispose()


async def _drain(services) -> None:  # type: ignore[no-untyped-def]
    while await services.outbox.run_due():
        pass


def test_a_heartbeat_arriving_while_its_timer_fires_supersedes_it(
        postgres_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    """The runner holds the due timer (bot.timers); a heartbeat arriving then must neither wait
    for it nor be undone by it: it arms a new timer, and the firing one skips itself."""
    from bot import heartbeat

    settings = settings_for(postgres_url, slack, pagerduty)
    services = build(settings, clock=clock)
    try:
        with services.db.session() as session:
            heartbeat.record(session, settings.config.heartbeat, now=clock())
        clock.advance(**PAST_DUE)
        with services.db.session() as firing:  # what TimerRunner.fire_due does, held open
            (due,) = firing.scalars(select(Timer).where(Timer.kind == MISSING).with_for_update(skip_locked=True))
            arrived = threading.Thread(target=lambda: _record(services, settings, clock))
            arrived.start()
            arrived.join(10)
            assert not arrived.is_alive(), "the heartbeat waited for the runner's timer"
            heartbeat.fire(firing, due, services.timers.config, clock())
        assert due.status == TimerStatus.SKIPPED and due.outcome is not None and "superseded" in due.outcome
        with services.db.read() as session:
            assert session.scalars(select(Job)).all() == []
            (armed,) = session.scalars(select(Timer).where(Timer.status == TimerStatus.PENDING))
        assert armed.due_at > clock() + timedelta(minutes=MISSING_AFTER - 1)
    finally:
        services.db.dispose()


def _record(services, settings, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    from bot import heartbeat

    with services.db.session() as session:
        heartbeat.record(session, settings.config.heartbeat, now=clock())


def test_a_timer_that_fires_late_waits_one_period_before_paging(
        hb_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    """No runner was up at the deadline (the bot was down): Alertmanager re-sends the heartbeat
    within a repeat_interval of the bot's return, so paging at once would page about nothing."""
    beat(hb_bot)
    advance(hb_bot, clock, minutes=MISSING_AFTER + 30)  # the deadline passes while nothing fires timers
    assert pd_actions(pagerduty) == [] and posts(slack, "lost") == []
    first, second = heartbeat_timers(hb_bot)
    assert first.lateness_seconds is not None and first.lateness_seconds > LATE.total_seconds()
    assert second.status == TimerStatus.PENDING
    advance(hb_bot, clock, **PAST_DUE)  # and still none: now it pages
    wait_for(lambda: posts(slack, "lost") and pd_actions(pagerduty), what="the page after the grace period")
    settle(hb_bot)
    assert pd_actions(pagerduty) == ["trigger"]
    assert "(50 min)" in posts(slack, "lost")[0]  # silent since the last heartbeat, not since the grace


def test_without_pagerduty_the_post_says_nobody_was_paged_in_the_configured_language(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    config = {**POLICY, "runbooks": {"locale": "ja"}}
    bot = start(settings_for(database_url, slack, None, config), clock, running)
    beat(bot)
    advance(bot, clock, **PAST_DUE)
    (text,) = wait_for(lambda: posts(slack, "lost"), what="the announce channel told")
    assert "アラートがボットに届いていません" in text and "誰も呼び出されていません" in text
    with bot.services.db.read() as session:
        assert session.scalars(select(Job).where(Job.kind == JOB_HEARTBEAT_PAGE)).all() == []
    beat(bot)
    (back,) = wait_for(lambda: posts(slack, "back"), what="the all-clear")
    assert "アラートが再びボットに届いています" in back and "呼び出しは解決しました" not in back


# -- enabled: auto, true, false ---------------------------------------------------------------------

def test_auto_never_pages_a_bot_that_has_never_had_a_heartbeat(
        hb_bot: RunningBot, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    advance(hb_bot, clock, hours=3)
    assert heartbeat_timers(hb_bot) == [] and pd_actions(pagerduty) == [] and slack.messages(ANNOUNCE) == []


def test_enabled_true_pages_when_no_heartbeat_ever_arrives(
        database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock,
        running: list[RunningBot]) -> None:
    config = {**POLICY, "heartbeat": {"missing_after_minutes": MISSING_AFTER, "enabled": True}}
    bot = start(settings_for(database_url, slack, pagerduty, config), clock, running)
    (timer,) = wait_for(lambda: pending(bot), what="the watch armed at start")
    again = start(settings_for(database_url, slack, pagerduty, config), clock, running)  # a second replica
    wait_for(lambda: (found := row(again)) is not None and found.watching_since is not None, what="a row")
    assert [t.id for t in heartbeat_timers(again)] == [timer.id]  # armed once, by whoever came first
    advance(bot, clock, **PAST_DUE)
    wait_for(lambda: posts(slack, "lost") and pd_actions(pagerduty), what="the page and the announce channel told")
    settle(bot)
    (text,) = posts(slack, "lost")
    assert "no `Watchdog` heartbeat has arrived from Alertmanager since the bot began watching" in text
    assert pd_actions(pagerduty) == ["trigger"]
    with pagerduty.lock:
        summary = next(e.payload["summary"] for e in pagerduty.events if e.dedup_key == DEDUP_KEY)
    assert summary.startswith("Alerts are not reaching the bot: no Watchdog heartbeat has arrived since ")


def test_enabled_false_makes_the_watchdog_an_ordinary_alert(
        database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock,
        running: list[RunningBot]) -> None:
    config = {**POLICY, "heartbeat": {"enabled": False}}
    bot = start(settings_for(database_url, slack, pagerduty, config), clock, running)
    reply = bot.post_alerts(watchdog())
    assert reply.status_code == 200 and reply.json()["outcome"] == "created"
    settle(bot)
    assert [i.alertname for i in incidents(bot)] == ["Watchdog"] and heartbeat_timers(bot) == []


def test_a_configured_alertname_is_the_heartbeat_and_watchdog_is_not(
        database_url: str, slack: FakeSlack, clock: FakeClock, running: list[RunningBot]) -> None:
    config = {**POLICY, "heartbeat": {"alertname": "DeadMansSwitch"}}
    bot = start(settings_for(database_url, slack, None, config), clock, running)
    beat(bot, group(alert("DeadMansSwitch"), group_key='{}:{alertname="DeadMansSwitch"}'))
    assert bot.post_alerts(watchdog()).json()["outcome"] == "created"
    settle(bot)
    assert len(pending(bot)) == 1 and [i.alertname for i in incidents(bot)] == ["Watchdog"]


# -- configuration ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("yaml", "expected"), [
    ("missing_after_minutes: 0", "heartbeat.missing_after_minutes: Input should be greater than 0"),
    ("missing_after_minutes: -5", "heartbeat.missing_after_minutes: Input should be greater than 0"),
    ("enabled: sometimes", "heartbeat.enabled: Input should be a valid boolean"),
    ("alertname: 'no spaces'", "heartbeat.alertname: String should match pattern"),
    ("missed_after_minutes: 5", "heartbeat.missed_after_minutes: unknown key (a typo?)"),
])
def test_heartbeat_settings_are_validated(tmp_path: Path, yaml: str, expected: str) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text(f"heartbeat:\n  {yaml}\n")
    with pytest.raises(ConfigError) as raised:
        load_config_file(path)
    (problem,) = raised.value.problems
    assert problem.startswith(f"{path}:2: {expected}"), problem


def test_heartbeat_defaults() -> None:
    policy = OncallConfig().heartbeat
    assert (policy.alertname, policy.missing_after_minutes, policy.enabled) == ("Watchdog", 10, "auto")


# -- end to end, with the real Alertmanager --------------------------------------------------------

def _alertmanager_config(bot: RunningBot) -> str:
    # The heartbeat on a route of its own, re-sent every 2 s (in production: a repeat_interval well
    # under heartbeat.missing_after_minutes).
    return f"""
route:
  receiver: oncall-bot
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['alertname="Watchdog"']
      receiver: oncall-bot
      repeat_interval: 2s
receivers:
  - name: oncall-bot
    webhook_configs:
      - url: {bot.url}/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {WEBHOOK_TOKEN}
"""


def _post_to_alertmanager(url: str, *names: str) -> None:
    now = datetime.now(UTC)
    alerts = [{"labels": {"alertname": name, "severity": "none" if name == "Watchdog" else "warning",
                          "team": "payments", "service": "api"},
               "annotations": {"summary": f"{name} on api"},
               "startsAt": (now - timedelta(minutes=1)).isoformat()} for name in names]
    httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=5).raise_for_status()


def test_real_alertmanager_heartbeat_keeps_the_watch_and_its_absence_pages(
        database_url: str, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock,
        running: list[RunningBot], tmp_path: Path) -> None:
    config = {**POLICY, "heartbeat": {"missing_after_minutes": 1}}
    bot = start(settings_for(database_url, slack, pagerduty, config), clock, running)
    manager = start_alertmanager(_alertmanager_config(bot), tmp_path / "am1")
    try:
        _post_to_alertmanager(manager.url, "Watchdog", "HighLatency")
        first = wait_for(lambda: (found := row(bot)) and found.last_seen_at, timeout=30, what="the first heartbeat")
        wait_for(lambda: (found := row(bot)) and found.last_seen_at and found.last_seen_at > first, timeout=30,
                 what="Alertmanager's repeat of the heartbeat")
        wait_for(lambda: incidents(bot), timeout=30, what="the real alert's incident")
    finally:
        manager.stop()  # alerts stop reaching the bot
    assert [i.alertname for i in incidents(bot)] == ["HighLatency"] and len(pending(bot)) == 1
    advance(bot, clock, minutes=1, seconds=5)
    wait_for(lambda: posts(slack, "lost") and pd_actions(pagerduty), what="the page and the announce channel told")

    manager = start_alertmanager(_alertmanager_config(bot), tmp_path / "am2")
    try:
        _post_to_alertmanager(manager.url, "Watchdog")
        wait_for(lambda: posts(slack, "back") and len(pd_actions(pagerduty)) == 2, timeout=30,
                 what="the heartbeat back through Alertmanager")
    finally:
        manager.stop()
    assert pd_actions(pagerduty) == ["trigger", "resolve"] and len(posts(slack, "lost")) == 1
    assert [i.alertname for i in incidents(bot)] == ["HighLatency"]
