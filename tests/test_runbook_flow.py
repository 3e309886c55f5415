"""The runbook in Slack, end to end: alert → channel → runbook message → signed click → output in the thread.

Everything crosses real HTTP: Alertmanager-shaped webhooks into the bot, signed `block_actions`
into Bolt, the bot's Slack calls into the Slack fake, its Kubernetes calls (the official client)
into the Kubernetes API fake.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.config import OncallConfig
from bot.models import Incident, RunbookStep, TimelineEntry
from tests.alerts import alert, group
from tests.conftest import RunningBot, make_settings, open_with_card, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.processes import start_prometheus
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import block_actions, post_to_slack_events, slash_command

PREVIOUS_LOGS = "starting api\nconnecting to db\npanic: connection refused\n"
CURRENT_LOGS = "starting api\nready\n"
LABELS = {"pod": "api-7d9f-x2", "deployment": "api", "container": "app"}


@pytest.fixture
def kubernetes() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        fake.add_pod("prod", "api-7d9f-x2", labels={"app": "api"}, restarts=5, logs=CURRENT_LOGS,
                     previous_logs=PREVIOUS_LOGS)
        fake.add_pod("prod", "api-long-1", labels={"app": "api"},
                     logs="".join(f"line {n:05d} of a chatty service\n" for n in range(400)))
        yield fake


def runbook_settings(database_url: str, slack: FakeSlack, kubeconfig: Path, **config: Any):  # type: ignore[no-untyped-def]
    policy = {"channels": {"announce": "C0INCIDENTS"},
              "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "U0BOB", "U0CAROL"]}],
              "runbooks": {"namespaces": ["prod"]}, **config}
    return make_settings(database_url, slack, OncallConfig.model_validate(policy), kubeconfig=str(kubeconfig))


@pytest.fixture
def rb_bot(database_url: str, slack: FakeSlack, kubernetes: FakeKubernetes, tmp_path: Path) -> Iterator[RunningBot]:
    slack.add_user("U0DAVE", "dave@example.com", "dave")
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    running = start_bot(runbook_settings(database_url, slack, kubernetes.kubeconfig(tmp_path / "kubeconfig")))
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


# -- helpers ----------------------------------------------------------------------------------------

def open_incident(bot: RunningBot, alertname: str = "PodRestartLoop", labels: dict[str, str] | None = None,
                  key: str = "restart") -> Incident:
    return open_with_card(bot, group(alert(alertname, labels=labels if labels is not None else LABELS),
                                     group_key=f"{{}}:{{alertname=\"{alertname}\",k=\"{key}\"}}"))


def runbook_messages(slack: FakeSlack, channel: str | None) -> list[Message]:
    return [m for m in slack.messages(channel) if "runbook_step_" in json.dumps(m.blocks)]


def step_rows(bot: RunningBot, incident_id: int) -> list[RunbookStep]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(RunbookStep).where(RunbookStep.incident_id == incident_id)
                                    .order_by(RunbookStep.step_index)))


def posted_steps(bot: RunningBot, incident: Incident) -> list[RunbookStep]:
    return wait_for(lambda: (rows := step_rows(bot, incident.id or 0)) and all(r.message_ts for r in rows) and rows,
                    what="the runbook to be posted")


def button(message: Message, index: int) -> dict[str, Any]:
    block = next(b for b in message.blocks if b.get("block_id") == f"runbook_step_{index}")
    return block["accessory"]


def click(bot: RunningBot, slack: FakeSlack, step: RunbookStep, user: str, value: str | None = None):  # type: ignore[no-untyped-def]
    body = block_actions(f"runbook_step:{step.step_index}", value or step.token, user=user,
                         channel=step.message_channel or "C0INCIDENTS", response_url=slack.response_url(),
                         message={"type": "message", "ts": step.message_ts, "text": "", "blocks": []})
    return post_to_slack_events(bot.url, body)


def refusals(slack: FakeSlack) -> list[str]:
    """What the bot answered through the clicks' response_url (ephemeral, the original kept)."""
    found = []
    for _, message in slack.responses:
        assert message["response_type"] == "ephemeral" and message["replace_original"] is False
        found.append(message["text"])
    return found


def thread(slack: FakeSlack, channel: str | None, ts: str | None) -> list[Message]:
    return [m for m in slack.messages(channel) if m.thread_ts == ts]


def timeline(bot: RunningBot, incident_id: int, kind: str) -> list[TimelineEntry]:
    with bot.services.db.read() as session:
        return [e for e in session.scalars(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id))
                if e.kind == kind]


def by_id(rows: list[RunbookStep], step_id: str) -> RunbookStep:
    return next(r for r in rows if r.step_id == step_id)


# -- tests ------------------------------------------------------------------------------------------

def test_a_click_on_a_diagnostic_runs_it_and_answers_in_the_step_thread(
        rb_bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    incident = open_incident(rb_bot)
    rows = posted_steps(rb_bot, incident)
    assert incident.channel_id and {r.message_channel for r in rows} == {incident.channel_id}
    [message] = runbook_messages(slack, incident.channel_id)
    assert "Pod restart loop" in json.dumps(message.blocks)
    logs = by_id(rows, "previous-logs")
    # The button carries only the opaque token, never the parameters.
    assert button(message, logs.step_index)["value"] == logs.token
    values = [button(message, r.step_index)["value"] for r in rows if r.action]
    assert values == [r.token for r in rows if r.action] and all(len(v) <= 32 for v in values)
    assert logs.params == {"namespace": "prod", "pod": "api-7d9f-x2", "container": "app", "previous": True,
                           "tail_lines": 200}

    reply = click(rb_bot, slack, logs, "U0ALICE")
    assert reply.status_code == 200 and reply.text == ""  # the ack: an empty 200
    answers = wait_for(lambda: thread(slack, incident.channel_id, logs.message_ts), what="the output in the thread")
    assert "panic: connection refused" in json.dumps(answers[0].blocks)
    assert "<@U0ALICE>" in json.dumps(answers[0].blocks)
    [request] = kubernetes.requests_for("GET", "/api/v1/namespaces/prod/pods/api-7d9f-x2/log")
    assert request.query["previous"] == "true" and request.query["tailLines"] == "200"

    [entry] = wait_for(lambda: timeline(rb_bot, incident.id or 0, "diagnostic"), what="the timeline entry")
    assert entry.actor == "U0ALICE" and "k8s.logs" in entry.text and "3 log lines" in entry.text
    wait_for(lambda: "ran by <@U0ALICE>" in json.dumps(runbook_messages(slack, incident.channel_id)[0].blocks),
             what="the step to show who ran it")
    ran = by_id(step_rows(rb_bot, incident.id or 0), "previous-logs")
    assert (ran.runs, ran.last_ok) == (1, True) and (ran.last_outcome or "").startswith("3 log lines")


def test_a_step_that_fails_shows_failed_with_the_reason(
        rb_bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    incident = open_incident(rb_bot, labels={**LABELS, "pod": "ghost-0"}, key="ghost")  # no such pod
    logs = by_id(posted_steps(rb_bot, incident), "previous-logs")
    click(rb_bot, slack, logs, "U0ALICE")
    wait_for(lambda: ":warning: failed at" in json.dumps(runbook_messages(slack, incident.channel_id)[0].blocks),
             what="the step to show it failed")
    assert kubernetes.requests_for("GET", "/api/v1/namespaces/prod/pods/ghost-0/log")  # the 404 came from there
    context = next(b for b in runbook_messages(slack, incident.channel_id)[0].blocks
                   if b.get("block_id") == f"runbook_step_{logs.step_index}_context")
    note = context["elements"][-1]["text"]
    assert "NotFound" in note and "run by <@U0ALICE>" in note and ":white_check_mark:" not in note
    failed = by_id(step_rows(rb_bot, incident.id or 0), "previous-logs")
    assert failed.last_ok is False and "NotFound" in (failed.last_outcome or "")
    [entry] = timeline(rb_bot, incident.id or 0, "diagnostic")
    assert entry.data["ok"] is False


def test_people_outside_the_channel_are_refused_and_nothing_runs(
        rb_bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    incident = open_incident(rb_bot)
    logs = by_id(posted_steps(rb_bot, incident), "previous-logs")
    assert click(rb_bot, slack, logs, "U0DAVE").status_code == 200
    [text] = wait_for(lambda: refusals(slack), what="the refusal")
    assert "Only members of" in text and incident.channel_id in text
    assert kubernetes.requests_for("GET", "/api/v1/namespaces/prod/pods/api-7d9f-x2/log") == []
    assert thread(slack, incident.channel_id, logs.message_ts) == []
    assert timeline(rb_bot, incident.id or 0, "diagnostic") == []


def test_an_unknown_token_is_refused(rb_bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    incident = open_incident(rb_bot)
    logs = by_id(posted_steps(rb_bot, incident), "previous-logs")
    assert click(rb_bot, slack, logs, "U0ALICE", value="forged-token-000").status_code == 200
    [text] = wait_for(lambda: refusals(slack), what="the refusal")
    assert "no longer available" in text
    assert kubernetes.requests_for("GET", "/api/v1/namespaces/prod/pods/api-7d9f-x2/log") == []


def test_a_remediation_click_records_an_approval_request_and_runs_nothing(
        rb_bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    incident = open_incident(rb_bot)
    delete = by_id(posted_steps(rb_bot, incident), "delete-pod")
    assert delete.kind == "remediation" and delete.disabled_reason is None
    assert click(rb_bot, slack, delete, "U0ALICE").status_code == 200
    [answer] = wait_for(lambda: thread(slack, incident.channel_id, delete.message_ts), what="the request note")
    assert "requested approval" in answer.text and "k8s.delete_pod" in answer.text
    [entry] = timeline(rb_bot, incident.id or 0, "approval_requested")
    assert entry.actor == "U0ALICE" and entry.data["params"]["pod"] == "api-7d9f-x2"
    # Only the server-side dry run shown on the approval message reached the cluster.
    assert [r.query.get("dryRun") for r in kubernetes.requests_for("DELETE")] == ["All"]


def test_a_value_outside_the_allow_list_disables_the_button_and_says_why(
        rb_bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    incident = open_incident(rb_bot, labels={**LABELS, "namespace": "kube-system"}, key="ks")
    rows = posted_steps(rb_bot, incident)
    logs = by_id(rows, "previous-logs")
    assert logs.disabled_reason and "kube-system" in logs.disabled_reason and "allow-list" in logs.disabled_reason
    [message] = runbook_messages(slack, incident.channel_id) or [None]
    blocks = message.blocks if message else []
    step = next(b for b in blocks if b.get("block_id") == f"runbook_step_{logs.step_index}")
    assert "accessory" not in step  # no button
    assert "allow-list" in json.dumps(blocks)
    assert click(rb_bot, slack, logs, "U0ALICE").status_code == 200  # a replayed token of a disabled step
    [text] = wait_for(lambda: refusals(slack), what="the refusal")
    assert "disabled" in text
    assert kubernetes.requests_for("GET", "/api/v1/namespaces/kube-system/pods/api-7d9f-x2/log") == []


def test_long_output_is_uploaded_as_a_file_in_the_thread(rb_bot: RunningBot, slack: FakeSlack) -> None:
    incident = open_incident(rb_bot, labels={**LABELS, "pod": "api-long-1"}, key="long")
    current = by_id(posted_steps(rb_bot, incident), "current-logs")
    click(rb_bot, slack, current, "U0ALICE")
    wait_for(lambda: any(m.files for m in thread(slack, incident.channel_id, current.message_ts)),
             what="the uploaded file")
    uploaded = b"".join(slack.uploads.values())
    assert b"line 00300 of a chatty service" in uploaded and b"line 00399" in uploaded
    code = next(m for m in thread(slack, incident.channel_id, current.message_ts) if m.blocks)
    assert "line 00399" in json.dumps(code.blocks)  # logs keep their tail inline


def test_the_output_speaks_the_clicking_users_language(rb_bot: RunningBot, slack: FakeSlack) -> None:
    incident = open_incident(rb_bot)
    logs = by_id(posted_steps(rb_bot, incident), "previous-logs")
    slack.channels[incident.channel_id or ""].members.add("U0KENJI")
    click(rb_bot, slack, logs, "U0KENJI")
    [answer] = wait_for(lambda: thread(slack, incident.channel_id, logs.message_ts), what="the output")
    assert "クラッシュしたコンテナのログ" in json.dumps(answer.blocks, ensure_ascii=False)


def test_no_matching_runbook_says_so_and_points_to_the_list(rb_bot: RunningBot, slack: FakeSlack) -> None:
    incident = open_incident(rb_bot, alertname="SomethingNobodyWroteARunbookFor", labels={}, key="none")
    [note] = wait_for(lambda: [m for m in slack.messages(incident.channel_id) if "No runbook matches" in m.text],
                      what="the no-runbook note")
    assert "/runbook list" in json.dumps(note.blocks)
    assert step_rows(rb_bot, incident.id or 0) == []


def test_without_a_channel_the_runbook_and_its_output_go_in_the_card_thread(
        rb_bot: RunningBot, slack: FakeSlack) -> None:
    slack.channels["C0INCIDENTS"].members.add("U0ALICE")
    incident = open_incident(rb_bot, labels={**LABELS, "severity": "warning"}, key="p3")
    assert incident.channel_id is None and incident.card_channel_id == "C0INCIDENTS"
    logs = by_id(posted_steps(rb_bot, incident), "previous-logs")
    [message] = runbook_messages(slack, "C0INCIDENTS")
    assert message.thread_ts == incident.card_ts
    click(rb_bot, slack, logs, "U0ALICE")
    wait_for(lambda: any("panic" in json.dumps(m.blocks) for m in thread(slack, "C0INCIDENTS", incident.card_ts)),
             what="the output under the card")


def test_runbook_slash_command_lists_and_shows(rb_bot: RunningBot) -> None:
    listing = post_to_slack_events(rb_bot.url, slash_command("/runbook", "list"))
    assert listing.status_code == 200 and "pod-restart-loop" in listing.json()["text"]
    assert len([line for line in listing.json()["text"].splitlines() if line.startswith("•")]) >= 13
    shown = post_to_slack_events(rb_bot.url, slash_command("/runbook", "show pod-restart-loop"))
    assert "k8s.logs" in shown.json()["text"] and "Pod restart loop" in shown.json()["text"]
    missing = post_to_slack_events(rb_bot.url, slash_command("/runbook", "show nope"))
    assert "No runbook `nope`" in missing.json()["text"]
    japanese = post_to_slack_events(rb_bot.url, slash_command("/runbook", "show pod-restart-loop", user="U0KENJI"))
    assert "Pod の再起動ループ" in japanese.json()["text"]  # the asker's Slack locale (ja-JP)


def test_refusals_speak_the_clickers_language(rb_bot: RunningBot, slack: FakeSlack) -> None:
    """issue 12 §9: a ja-JP clicker is refused in Japanese; the channel's runbook stays English."""
    incident = open_incident(rb_bot, labels={**LABELS, "namespace": "kube-system"}, key="ks")
    logs = by_id(posted_steps(rb_bot, incident), "previous-logs")
    slack.channels[incident.channel_id or ""].members.add("U0KENJI")
    assert click(rb_bot, slack, logs, "U0KENJI").status_code == 200  # a replayed token of a disabled step
    [text] = wait_for(lambda: refusals(slack), what="the refusal")
    assert text.startswith("この手順は無効です: ") and "kube-system" in text
    missing = post_to_slack_events(rb_bot.url, slash_command("/runbook", "show nope", user="U0KENJI"))
    assert missing.json()["text"] == "ランブック `nope` はありません。`/runbook list` で一覧を確認できます。"
    usage = post_to_slack_events(rb_bot.url, slash_command("/runbook", "what", user="U0KENJI"))
    assert usage.json()["text"] == "`/runbook list` でランブックの一覧を、`/runbook show ID` で 1 件を表示します。"


def test_in_a_japanese_channel_the_step_status_lines_are_japanese(
        database_url: str, slack: FakeSlack, kubernetes: FakeKubernetes, tmp_path: Path) -> None:
    bot = start_bot(runbook_settings(database_url, slack, kubernetes.kubeconfig(tmp_path / "kubeconfig"),
                                     runbooks={"namespaces": ["prod"], "locale": "ja"}))
    try:
        ok = open_incident(bot)
        logs = by_id(posted_steps(bot, ok), "previous-logs")
        click(bot, slack, logs, "U0ALICE")
        wait_for(lambda: "\":white_check_mark: <@U0ALICE> が実行(<!date^" in json.dumps(
            runbook_messages(slack, ok.channel_id)[0].blocks, ensure_ascii=False), what="the step's ran line")

        failed = open_incident(bot, labels={**LABELS, "pod": "ghost-0"}, key="ghost")  # no such pod
        ghost = by_id(posted_steps(bot, failed), "previous-logs")
        click(bot, slack, ghost, "U0ALICE")
        context = wait_for(lambda: next(
            (b for b in runbook_messages(slack, failed.channel_id)[0].blocks
             if b.get("block_id") == f"runbook_step_{ghost.step_index}_context"
             and ":warning: 失敗" in json.dumps(b, ensure_ascii=False)), None), what="the step's failed line")
        note = context["elements"][-1]["text"]
        assert note.startswith(":warning: 失敗(<!date^") and "NotFound" in note and note.endswith(" · 実行 <@U0ALICE>")
    finally:
        bot.stop()
        bot.services.db.dispose()


# -- a Prometheus graph, from the real Prometheus ------------------------------------------------------

class _Counter(BaseHTTPRequestHandler):
    scrapes = 0

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        _Counter.scrapes += 1
        n = _Counter.scrapes
        body = (f'http_requests_total{{namespace="prod",status="200"}} {100 * n}\n'
                f'http_requests_total{{namespace="prod",status="500"}} {7 * n}\n').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[str]:
    target = ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    running = start_prometheus([f"127.0.0.1:{target.server_address[1]}"], tmp_path / "prometheus")
    try:
        query = 'sum(rate(http_requests_total{namespace="prod",status=~"5.."}[5m]))'
        wait_for(lambda: httpx.get(f"{running.url}/api/v1/query", params={"query": query}).json()["data"]["result"],
                 timeout=30, what="two scrapes, so rate() has a value")
        yield running.url
    finally:
        running.stop()
        target.shutdown()
        target.server_close()


def test_a_prometheus_step_uploads_a_graph_in_the_thread(
        slack: FakeSlack, kubernetes: FakeKubernetes, prometheus: str, tmp_path: Path) -> None:
    settings = runbook_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack, kubernetes.kubeconfig(tmp_path / "kc"))
    bot = start_bot(settings.model_copy(update={"prometheus_url": prometheus}))
    try:
        incident = open_incident(bot, alertname="HighErrorRate", labels={"pod": "api-7d9f-x2"}, key="5xx")
        rate = by_id(posted_steps(bot, incident), "error-rate")
        assert rate.action == "prometheus.query" and rate.params["range"] == "3h"
        click(bot, slack, rate, "U0ALICE")
        answer = wait_for(lambda: [m for m in thread(slack, incident.channel_id, rate.message_ts) if m.files],
                          timeout=20, what="the graph in the thread")
        [file_id] = answer[0].files
        assert slack.uploads[file_id].startswith(b"\x89PNG\r\n\x1a\n")
        [entry] = wait_for(lambda: timeline(bot, incident.id or 0, "diagnostic"), what="the timeline entry")
        assert "graph of 1 series over 3h" in entry.text
    finally:
        bot.stop()
        bot.services.db.dispose()
