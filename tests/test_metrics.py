"""GET /metrics and the JSON logs: each metric moves by what the bot did, read the way Prometheus
reads it (the text format, through prometheus_client's parser), from the running app driven over
real HTTP with the Slack, PagerDuty and Kubernetes fakes; the gauges read from the database on
SQLite and PostgreSQL; the example alert rules checked and unit-tested with the real promtool,
and every metric name they use found in a scrape.

The registry is one per process, so counters are compared before and after (a delta), never as
absolute values; the gauges read from each test's own database are absolute.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from bot import metrics
from bot.db import Database
from bot.heartbeat import MISSING
from bot.logs import JsonFormatter, incident_context
from bot.models import IncidentStatus, Job, JobStatus, Timer, TimerStatus
from tests.alerts import alert, group
from tests.conftest import FakeClock, RunningBot, free_port, make_settings, open_with_card, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.slack_requests import block_actions, post_to_slack_events
from tests.test_approvals import decide, deny, open_incident, request, start
from tests.test_card_memory import state_buttons
from tests.test_escalation import actions, pagerduty, paging, pd_settings
from tests.test_runbook_flow import kubernetes

__all__ = ["kubernetes", "pagerduty", "start"]  # fixtures, reused

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus-rules.yml"
RULES_TEST = ROOT / "tests" / "data" / "prometheus-rules-test.yml"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(bot: RunningBot) -> Samples:
    with bot.client() as http:
        reply = http.get("/metrics")
    assert reply.status_code == 200, reply.text
    return parse(reply.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def labelled(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def settle(bot: RunningBot) -> None:
    """Until the outbox has nothing due or running: every Slack call of the flow has ended."""
    def idle() -> bool:
        with bot.services.db.read() as session:
            return session.scalars(select(Job).where(Job.status.in_(  # type: ignore[attr-defined]
                [JobStatus.PENDING, JobStatus.RUNNING]), Job.run_at <= bot.services.clock())).first() is None  # type: ignore[arg-type,operator]
    wait_for(idle, what="the outbox to finish what is due")


@pytest.fixture
def lite(tmp_path: Path, slack: FakeSlack, clock: FakeClock) -> Iterator[RunningBot]:
    """The bot on SQLite, for what does not depend on the database."""
    running = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack), clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


# -- intake ------------------------------------------------------------------------------------------

def test_intake_latency_is_observed_once_per_webhook_by_outcome_class(bot: RunningBot) -> None:
    before = scrape(bot)
    payload = group(alert(labels={"team": "payments"}))
    open_with_card(bot, payload)
    settle(bot)
    middle = scrape(bot)
    assert bot.post_alerts(payload).status_code == 200  # Alertmanager's repeat_interval: nothing new
    assert bot.post_alerts(payload).status_code == 200  # and its HA peer
    assert bot.post_alerts(payload, token="wrong").status_code == 401
    after = scrape(bot)
    count = "oncall_webhook_intake_seconds_count"
    assert moved(before, middle, count, outcome="applied") == 1
    assert moved(middle, after, count, outcome="repeat") == 2
    assert moved(middle, after, count, outcome="applied") == 0
    assert moved(before, after, count, outcome="rejected") == 1
    assert moved(before, after, "oncall_webhooks_total", outcome="rejected_401") == 1
    spent = moved(before, after, "oncall_webhook_intake_seconds_sum", outcome="repeat")
    assert 0 < spent < 10  # seconds, both repeats together
    # every answer falls in some bucket: the +Inf bucket moved as much as the count
    assert moved(before, after, "oncall_webhook_intake_seconds_bucket", outcome="repeat", le="+Inf") == 2


# -- Slack ------------------------------------------------------------------------------------------

def test_slack_calls_are_timed_by_method_and_every_429_is_counted(lite: RunningBot, slack: FakeSlack) -> None:
    before = scrape(lite)
    # two 429s in a row: slack_sdk retries the first in place (Retry-After 1 s), the second reaches
    # the outbox, which retries the job after Retry-After
    slack.fail_next("conversations.create", "ratelimited", status=429, retry_after=1, times=2)
    open_with_card(lite, group(alert(labels={"team": "payments"})))
    settle(lite)
    after = scrape(lite)
    assert moved(before, after, "oncall_slack_ratelimited_total", method="conversations.create") == 2
    assert moved(before, after, "oncall_slack_calls_total", method="conversations.create", outcome="ratelimited") == 1
    assert moved(before, after, "oncall_slack_calls_total", method="conversations.create", outcome="ok") == 1
    # the call that took the in-place retry waited Retry-After inside it
    assert moved(before, after, "oncall_slack_call_seconds_sum", method="conversations.create") >= 1.0
    for method in ("conversations.create", "chat.postMessage"):
        calls = sum(v for labels, v in labelled(after, "oncall_slack_calls_total").items()
                    if dict(labels)["method"] == method) - \
            sum(v for labels, v in labelled(before, "oncall_slack_calls_total").items()
                if dict(labels)["method"] == method)
        assert calls >= 1
        assert moved(before, after, "oncall_slack_call_seconds_count", method=method) == calls, method


# -- PagerDuty --------------------------------------------------------------------------------------

def test_pagerduty_calls_are_timed_and_their_errors_counted_by_method(
        tmp_path: Path, slack: FakeSlack, pagerduty: FakePagerDuty, clock: FakeClock) -> None:
    bot = start_bot(pd_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack, pagerduty), clock=clock)
    try:
        before = scrape(bot)
        pagerduty.fail_next("/v2/enqueue", 503, times=2)  # the client's one quick retry fails too
        reply = bot.post_alerts(group())  # a P1: paged at once
        assert reply.status_code == 200
        key = paging(bot, reply.json()["incident_id"]).dedup_key
        wait_for(lambda: actions(pagerduty, key) == ["trigger"], what="the page, after the outbox's retry")
        settle(bot)
        after = scrape(bot)
    finally:
        bot.stop()
        bot.services.db.dispose()
    assert moved(before, after, "oncall_pagerduty_calls_total", method="events.trigger", outcome="http_503") == 1
    assert moved(before, after, "oncall_pagerduty_calls_total", method="events.trigger", outcome="ok") == 1
    assert moved(before, after, "oncall_pagerduty_call_seconds_count", method="events.trigger") == 2
    assert moved(before, after, "oncall_pagerduty_calls_total", method="oncalls.list", outcome="ok") >= 1  # invite


# -- what the database holds, read at scrape time -----------------------------------------------------

def test_incidents_by_state_and_the_outbox_queue_are_read_from_the_database(bot: RunningBot) -> None:
    incident = open_with_card(bot, group(alert(labels={"team": "payments"})))
    now = bot.services.clock()
    with bot.services.db.session() as session:
        # a job held by a live lease (the tests' lease is an hour), and one queued behind it in its
        # lane for two minutes: neither runs, so the scrape sees both
        session.add(Job(kind="test.held", lane="test-lane", status=JobStatus.RUNNING, attempts=1,
                        run_at=now, lease_until=now + timedelta(hours=1), created_at=now))
        session.flush()
        session.add(Job(kind="test.waiting", lane="test-lane", run_at=now - timedelta(minutes=2),
                        created_at=now - timedelta(minutes=2)))
        session.add(Job(kind="test.later", run_at=now + timedelta(hours=1), created_at=now))  # not due: no backlog
    samples = scrape(bot)
    assert labelled(samples, "oncall_incidents_by_state") == {
        (("severity", incident.severity), ("state", IncidentStatus(incident.status).value)): 1.0}
    assert value(samples, "oncall_outbox_depth", kind="test.held") == 1
    assert value(samples, "oncall_outbox_depth", kind="test.waiting") == 1
    assert ("oncall_outbox_depth", (("kind", "test.later"),)) not in samples
    assert ("oncall_outbox_oldest_age_seconds", (("kind", "test.held"),)) not in samples  # running, not waiting
    age = value(samples, "oncall_outbox_oldest_age_seconds", kind="test.waiting")
    assert 120 <= age < 150, age


def test_a_database_error_leaves_the_gauges_out_and_the_scrape_still_answers(
        database_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    unmigrated = Database(database_url)  # no tables yet: the collector's reads fail
    try:
        metrics.STORAGE.bind(unmigrated, clock)
        with caplog.at_level(logging.ERROR, logger="bot.metrics"):
            text = generate_latest(metrics.REGISTRY).decode()
        parse(text)  # still the text format
        assert "# TYPE oncall_webhooks_total counter" in text  # everything else is there
        assert "oncall_incidents_by_state" not in text and "oncall_outbox_depth" not in text
        [record] = [r for r in caplog.records if r.name == "bot.metrics"]
        assert "could not be read" in record.getMessage() and "error" in record.__dict__
        unmigrated.migrate()
        text = generate_latest(metrics.REGISTRY).decode()
        assert "# TYPE oncall_incidents_by_state gauge" in text and "# TYPE oncall_outbox_depth gauge" in text
        assert not labelled(parse(text), "oncall_incidents_by_state")  # no incidents yet: no series
    finally:
        unmigrated.dispose()


# -- timers --------------------------------------------------------------------------------------------

def test_timer_lateness_is_observed_when_a_timer_fires(lite: RunningBot) -> None:
    before = scrape(lite)
    with lite.services.db.session() as session:  # due 42 s ago; no heartbeat armed it: skipped as superseded
        session.add(Timer(kind=MISSING, due_at=lite.services.clock() - timedelta(seconds=42)))
    wait_for(lambda: lite.services.timers.next_due() is None, what="the timer to fire")
    after = scrape(lite)
    assert moved(before, after, "oncall_timer_lateness_seconds_count") == 1
    assert 42 <= moved(before, after, "oncall_timer_lateness_seconds_sum") < 52
    assert moved(before, after, "oncall_timer_lateness_seconds_bucket", le="60.0") == 1
    assert moved(before, after, "oncall_timer_lateness_seconds_bucket", le="10.0") == 0
    with lite.services.db.read() as session:
        assert [t.status for t in session.scalars(select(Timer))] == [TimerStatus.SKIPPED]


# -- approvals and executions ------------------------------------------------------------------------

def test_approvals_and_executions_are_counted(start: Any, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    before = scrape(bot)
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)  # dry run included: not an execution
    middle = scrape(bot)
    assert moved(before, middle, "oncall_approvals_total", event="requested") == 1
    assert moved(before, middle, "oncall_action_executions_total", action="k8s.delete_pod", outcome="ok") == 0
    assert decide(bot, slack, incident, message, "U0BOB").status_code == 200
    wait_for(lambda: moved(middle, scrape(bot), "oncall_action_executions_total", action="k8s.delete_pod",
                           outcome="ok") == 1, what="the execution counted")
    second, _ = open_incident(bot, slack, key="again")
    _, other = request(bot, slack, second)
    assert deny(bot, slack, second, other, "U0BOB", "not now").status_code == 200
    wait_for(lambda: moved(middle, scrape(bot), "oncall_approvals_total", event="rejected") == 1,
             what="the denial counted")
    after = scrape(bot)
    assert moved(before, after, "oncall_approvals_total", event="requested") == 2
    assert moved(before, after, "oncall_approvals_total", event="approved") == 1
    assert moved(before, after, "oncall_approvals_total", event="expired") == 0
    assert moved(before, after, "oncall_action_executions_total", action="k8s.delete_pod", outcome="ok") == 1


# -- logs -------------------------------------------------------------------------------------------------

@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the bot's JsonFormatter writes, for every logger at INFO and above."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def logged(out: io.StringIO, message: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, out.getvalue().splitlines()) if line["message"] == message]


def test_a_line_logged_deep_inside_a_job_names_the_incident(
        lite: RunningBot, slack: FakeSlack, json_lines: io.StringIO) -> None:
    # the channel name is taken: slack_sync tries the next one and logs so with only the channel,
    # from inside the outbox job that opens the incident
    slack.fail_next("conversations.create", "name_taken")
    incident = open_with_card(lite, group(alert(labels={"team": "payments"})))
    [line] = logged(json_lines, "channel name taken; trying the next")
    assert line["incident"] == incident.id and line["logger"] == "commands.slack_sync"
    assert set(line) >= {"channel", "time", "level"}
    [posted] = logged(json_lines, "incident card posted")  # its own extra, the same incident
    assert posted["incident"] == incident.id
    # the webhook's request, once its result is known: to its end, uvicorn's access line included
    [access] = [e for e in map(json.loads, json_lines.getvalue().splitlines())
                if e["logger"] == "uvicorn.access" and "POST /alertmanager" in e["message"]]
    assert access["incident"] == incident.id


def test_a_timers_effect_logs_with_the_incident_of_the_timer(
        lite: RunningBot, json_lines: io.StringIO) -> None:
    row = open_with_card(lite, group(alert(labels={"team": "payments"})))
    with lite.services.db.session() as session:  # a kind no effect handles: its failure is logged, with the timer
        session.add(Timer(kind="test.no_such_effect", incident_id=row.id,
                          due_at=lite.services.clock() - timedelta(seconds=1)))
    [line, *_] = wait_for(lambda: [e for e in map(json.loads, json_lines.getvalue().splitlines())
                                   if e["message"].endswith("(test.no_such_effect) failed")], what="the failure")
    assert line["incident"] == row.id and line["logger"] == "bot.timers" and "timer" in line


def test_a_click_on_a_card_names_the_incident_in_what_its_middleware_and_listener_log(
        lite: RunningBot, slack: FakeSlack, json_lines: io.StringIO) -> None:
    row = open_with_card(lite, group(alert(labels={"team": "payments"})))
    _, action_id, value = state_buttons(slack, row)[0]
    # someone outside the channel is refused privately, through a response_url that answers
    # nothing: the note's failure is logged from a task of its own, with only the user and text
    body = block_actions(action_id, value, user="U0MALLORY", channel=row.card_channel_id or "",
                         response_url=f"http://127.0.0.1:{free_port()}/nobody-listens",
                         message={"type": "message", "ts": row.card_ts, "text": "", "blocks": []})
    assert post_to_slack_events(lite.url, body).status_code == 200
    [line] = wait_for(lambda: [e for e in map(json.loads, json_lines.getvalue().splitlines())
                               if e["message"].startswith("could not tell U0MALLORY")], what="the failed note")
    assert line["incident"] == row.id and line["logger"] == "commands.middleware"


def test_an_explicit_incident_wins_over_the_context(json_lines: io.StringIO) -> None:
    log = logging.getLogger("tests.metrics")
    with incident_context(7):
        log.info("inside")
        log.info("explicit", extra={"incident": 9})
        with incident_context(None):
            log.info("about none")
    log.info("outside")
    assert [logged(json_lines, m)[0].get("incident") for m in ("inside", "explicit", "about none", "outside")] == \
        [7, 9, None, None]


# -- the example alert rules ----------------------------------------------------------------------------

def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed: apt-get install prometheus (Debian) puts it on PATH")
    return found


def test_the_rules_pass_promtool_check() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_every_rule_fires_in_promtools_unit_tests() -> None:
    done = subprocess.run([promtool(), "test", "rules", str(RULES_TEST)], capture_output=True, text=True,
                          timeout=60, cwd=RULES_TEST.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == set(rules)
    for name, rule in rules.items():
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_every_metric_the_rules_use_is_in_the_bots_metrics(lite: RunningBot) -> None:
    with lite.client() as http:
        text = http.get("/metrics").text
    exposed = set()
    for family in text_string_to_metric_families(text):  # the names a query may use, samples or not
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        exposed |= {family.name + suffix for suffix in suffixes}
    used = {name for group_ in yaml.safe_load(RULES.read_text())["groups"] for rule in group_["rules"]
            for name in re.findall(r"\b(oncall_[a-z_]+)", rule["expr"])}
    assert used and used - exposed == set()
