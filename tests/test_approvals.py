"""Remediations behind approval, end to end: a signed click on a remediation step → a server-side
dry run and the approval message in the step's thread → a signed Approve or Deny → the action run
once against the Kubernetes fake, the result in the thread, the message redrawn.

Everything crosses real HTTP (Slack fake, Kubernetes fake, signed interaction requests); the
clock is the injected FakeClock, moved past a request's expiry without sleeping.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bot.action_params import ParamContext
from bot.action_runner import validate_params
from bot.actions import ACTIONS, get_action, risk_of
from bot.config import ConfigError, load_config_file
from bot.models import ApprovalRequest, AuditEntry, Incident, Job, RunbookStep
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, open_with_card, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import block_actions, post_to_slack_events, view_submission
from tests.test_runbook_flow import LABELS, by_id, click, kubernetes, posted_steps, runbook_settings, thread, timeline

__all__ = ["kubernetes"]  # the fixture, reused

log = logging.getLogger(__name__)
POD = "/api/v1/namespaces/prod/pods/api-7d9f-x2"

EXPERT_RUNBOOK = """\
id: expert-only
title: {en: Expert only, ja: 専門家のみ}
description: {en: A high-risk step., ja: 高リスクの手順。}
match:
  alertname: ExpertOnly
expects: [namespace, pod]
steps:
  - id: delete-pod
    title: {en: Delete the pod, ja: Pod の削除}
    text: {en: Only experts may approve this., ja: 専門家のみが承認できます。}
    risk: high
    action:
      type: k8s.delete_pod
      params:
        namespace: "{{ labels.namespace }}"
        pod: "{{ labels.pod }}"
"""

Starter = Callable[..., RunningBot]


@pytest.fixture
def start(database_url: str, slack: FakeSlack, kubernetes: FakeKubernetes, tmp_path: Path,
          clock: FakeClock) -> Iterator[Starter]:
    slack.add_user("U0DAVE", "dave@example.com", "dave")
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "expert-only.yaml").write_text(EXPERT_RUNBOOK)
    started: list[RunningBot] = []

    def run(locale: str = "en", **remediations: Any) -> RunningBot:
        settings = runbook_settings(database_url, slack, kubernetes.kubeconfig(tmp_path / "kubeconfig"),
                                    remediations=remediations, runbooks={"namespaces": ["prod"], "locale": locale})
        bot = start_bot(settings.model_copy(update={"runbooks_path": str(runbooks)}), clock=clock)
        started.append(bot)
        return bot

    yield run
    for bot in started:
        bot.stop()
        bot.services.db.dispose()


# -- helpers ----------------------------------------------------------------------------------------

def open_incident(bot: RunningBot, slack: FakeSlack, alertname: str = "PodRestartLoop",
                  key: str = "restart") -> tuple[Incident, dict[str, Any]]:
    payload = group(alert(alertname, labels=LABELS), group_key=f"{{}}:{{alertname=\"{alertname}\",k=\"{key}\"}}")
    incident = open_with_card(bot, payload)
    for member in ("U0BOB", "U0CAROL"):
        slack.channels[incident.channel_id or ""].members.add(member)
    return incident, payload


def approval_message(slack: FakeSlack, incident: Incident, step: RunbookStep) -> Message:
    found = [m for m in thread(slack, incident.channel_id, step.message_ts) if "requested approval" in m.text]
    assert len(found) <= 1, "the approval message was posted twice"
    return found[0] if found else None  # type: ignore[return-value]


def request(bot: RunningBot, slack: FakeSlack, incident: Incident, step_id: str = "delete-pod",
            user: str = "U0ALICE") -> tuple[RunbookStep, Message]:
    step = by_id(posted_steps(bot, incident), step_id)
    clicked = time.monotonic()
    assert click(bot, slack, step, user).status_code == 200
    message = wait_for(lambda: approval_message(slack, incident, step), what="the approval message")
    buttons = {e["action_id"]: e["value"] for b in message.blocks if b.get("type") == "actions" for e in b["elements"]}
    wait_for(lambda: [r for r in rows(bot) if r.message_ts == message.ts], what="the message to be recorded")
    assert set(buttons) == {"approval_approve", "approval_deny"}
    assert buttons["approval_approve"] == buttons["approval_deny"] == rows(bot)[-1].token  # only the opaque token
    log.warning("click → approval message posted: %.0f ms", (time.monotonic() - clicked) * 1000)
    return step, message


def decide(bot: RunningBot, slack: FakeSlack, incident: Incident, message: Message, user: str,
           action_id: str = "approval_approve") -> httpx.Response:
    """`user` clicks the button as first posted (a late click on a message since redrawn included)."""
    token = next(r.token for r in rows(bot) if r.message_ts == message.ts)
    body = block_actions(action_id, token, user=user, channel=incident.channel_id or "",
                         response_url=slack.response_url(),
                         message={"type": "message", "ts": message.ts, "text": "", "blocks": []})
    return post_to_slack_events(bot.url, body)


def answers(slack: FakeSlack) -> list[str]:
    return [m["text"] for _, m in slack.responses if m["response_type"] == "ephemeral" and not m["replace_original"]]


def real(kubernetes: FakeKubernetes, method: str = "DELETE") -> list[Any]:
    return [r for r in kubernetes.requests_for(method, POD) if r.query.get("dryRun") != "All"]


def current(slack: FakeSlack, incident: Incident, message: Message) -> Message:
    return next(m for m in slack.messages(incident.channel_id) if m.ts == message.ts)


def rows(bot: RunningBot) -> list[ApprovalRequest]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(ApprovalRequest).order_by(ApprovalRequest.id)))


def audit_events(bot: RunningBot) -> list[str]:
    with bot.services.db.read() as session:
        return [e.event for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


# -- tests ------------------------------------------------------------------------------------------

def test_a_request_shows_the_dry_run_and_a_second_person_approves_it_once(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    shown = json.dumps(message.blocks)
    assert "kubectl -n prod delete pod api-7d9f-x2 --grace-period=30" in shown
    assert "(server dry run)" in shown and "ok:" in shown  # the dry run's outcome
    assert "<@U0ALICE>" in shown and "risk *medium*" in shown and "<!date^" in shown  # requester, expiry
    assert "the responders and on-call" in shown and f"<#{incident.channel_id}>" not in shown
    assert [r.query.get("dryRun") for r in kubernetes.requests_for("DELETE", POD)] == ["All"]
    assert real(kubernetes) == []

    approved = time.monotonic()
    assert decide(bot, slack, incident, message, "U0BOB").status_code == 200
    wait_for(lambda: "executed" in json.dumps(current(slack, incident, message).blocks), what="the redrawn message")
    log.warning("approve → executed and redrawn: %.0f ms", (time.monotonic() - approved) * 1000)
    assert len(real(kubernetes)) == 1  # exactly one real DELETE
    redrawn = current(slack, incident, message)
    assert not [b for b in redrawn.blocks if b.get("type") == "actions"]  # buttons gone
    assert "approved by <@U0BOB>, executed" in json.dumps(redrawn.blocks)
    wait_for(lambda: any("deleted" in m.text for m in thread(slack, incident.channel_id, step.message_ts)
                         if m.ts != message.ts), what="the outcome in the thread")
    [row] = rows(bot)
    assert (row.status, row.decided_by, row.requested_by) == ("succeeded", "U0BOB", "U0ALICE")
    assert "deleted" in (row.result or "") and "dry run" in (row.dry_run_outcome or "")
    assert [e.actor for e in timeline(bot, incident.id or 0, "approval_approved")] == ["U0BOB"]
    assert len(timeline(bot, incident.id or 0, "remediation")) == 1
    assert [e for e in audit_events(bot) if e != "diagnostic_run"] == ["requested", "approved", "executed", "result"]
    assert decide(bot, slack, incident, message, "U0CAROL").status_code == 200  # a late click
    assert "already approved by <@U0BOB>" in wait_for(lambda: answers(slack), what="the answer")[0]
    assert len(real(kubernetes)) == 1


def test_the_requester_cannot_approve_their_own_medium_request(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    decide(bot, slack, incident, message, "U0ALICE")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "second person" in text
    assert real(kubernetes) == [] and rows(bot)[0].status == "pending"


def test_someone_outside_the_channel_is_refused_privately(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    decide(bot, slack, incident, message, "U0DAVE")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "Only the commander, the responders and on-call may approve" in text
    assert "`remediations.approvers`" in text
    assert real(kubernetes) == [] and rows(bot)[0].status == "pending"


def test_refusals_speak_the_clickers_language(start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    """issue 12 §9: what a clicker is told is in their Slack locale, whatever the channel's."""
    slack.users["U0ALICE"].locale = slack.users["U0DAVE"].locale = "ja-JP"
    bot = start()  # an English channel
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    decide(bot, slack, incident, message, "U0ALICE")  # their own medium-risk request
    [own] = wait_for(lambda: answers(slack), what="the refusal")
    assert own == "自分の依頼は承認できません。別の人の承認が必要です。"
    decide(bot, slack, incident, message, "U0DAVE")  # not in the channel
    [outsider] = wait_for(lambda: answers(slack)[1:], what="the outsider's refusal")
    assert outsider == ("この対処を承認できるのは コマンダー, 対応者とオンコール だけです"
                        "(ONCALL_CONFIG の `remediations.approvers`)。")
    assert rows(bot)[0].status == "pending" and real(kubernetes) == []
    decide(bot, slack, incident, message, "U0BOB")
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the approved run")
    decide(bot, slack, incident, message, "U0ALICE")  # a late click
    [late] = wait_for(lambda: answers(slack)[2:], what="the late click's answer")
    assert late == "この依頼は <@U0BOB> がすでに承認しています(成功)。"
    # The thread stays in the channel's language.
    [result] = wait_for(lambda: [m for m in thread(slack, incident.channel_id, step.message_ts)
                                 if m.ts != message.ts and "approved by <@U0BOB>" in json.dumps(m.blocks)],
                        what="the result in the thread")
    assert "(requested by <@U0ALICE>)" in json.dumps(result.blocks)


def test_in_a_japanese_channel_the_thread_lines_are_japanese_and_a_clicker_hears_their_own(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start(locale="ja", expiry_minutes=15)  # runbooks.locale: ja
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    clock.advance(minutes=16)  # nobody approves
    [line] = wait_for(lambda: [m for m in thread(slack, incident.channel_id, step.message_ts)
                               if m.ts != message.ts and "期限切れ" in m.text], what="the expiry line in the thread")
    assert line.text == "k8s.delete_pod: 依頼は承認されないまま期限切れになりました"
    assert line.blocks[0]["text"]["text"] == (":hourglass: <@U0ALICE> による `k8s.delete_pod` の実行依頼は、"
                                              "承認されないまま期限切れになりました。まだ必要なら、ランブックから"
                                              "もう一度依頼してください。")
    decide(bot, slack, incident, message, "U0BOB")  # en-US, late
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert text == "This request expired; request it again from the runbook if it is still needed."


def test_in_a_japanese_channel_the_result_line_is_japanese(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start(locale="ja")
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    decide(bot, slack, incident, message, "U0BOB")
    [result] = wait_for(lambda: [m for m in thread(slack, incident.channel_id, step.message_ts)
                                 if "を <@U0BOB> が承認" in json.dumps(m.blocks, ensure_ascii=False)],
                        what="the result line")
    assert result.blocks[0]["text"]["text"].startswith(
        ":white_check_mark: `k8s.delete_pod` を <@U0BOB> が承認(<@U0ALICE> が依頼): ")


def test_joining_the_channel_does_not_make_an_approver_unless_the_policy_says_so(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    slack.channels[incident.channel_id or ""].members.add("U0DAVE")  # anyone may join a public channel
    _, message = request(bot, slack, incident)
    decide(bot, slack, incident, message, "U0DAVE")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "Only the commander, the responders and on-call may approve" in text
    assert rows(bot)[0].status == "pending" and real(kubernetes) == []

    bot.stop()  # one bot on the database: its outbox would draw the next request with its own policy
    open_to_channel = start(approvers=["channel"])
    incident, _ = open_incident(open_to_channel, slack, key="channel")
    slack.channels[incident.channel_id or ""].members.add("U0DAVE")
    _, message = request(open_to_channel, slack, incident)
    assert f"members of <#{incident.channel_id}>" in json.dumps(message.blocks)
    decide(open_to_channel, slack, incident, message, "U0DAVE")
    wait_for(lambda: rows(open_to_channel)[-1].status == "succeeded", what="the channel member's approval")
    assert rows(open_to_channel)[-1].decided_by == "U0DAVE"


def test_a_listed_user_group_approves_and_an_empty_list_leaves_only_experts(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    slack.add_usergroup("S0OPS", ["U0DAVE"])
    bot = start(approvers=["S0OPS"])
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    assert "<!subteam^S0OPS>" in json.dumps(message.blocks)
    decide(bot, slack, incident, message, "U0BOB")  # a responder, but the policy names only S0OPS
    assert "Only <!subteam^S0OPS> may approve" in wait_for(lambda: answers(slack), what="the refusal")[0]
    decide(bot, slack, incident, message, "U0DAVE")  # in the group (not even in the channel)
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the group member's approval")
    assert len(real(kubernetes)) == 1

    bot.stop()  # one bot on the database: its outbox would draw the next request with its own policy
    closed = start(approvers=[])
    incident, _ = open_incident(closed, slack, key="closed")
    _, message = request(closed, slack, incident)
    assert "nobody: `remediations.approvers` and `remediations.experts` are empty" in json.dumps(message.blocks)
    decide(closed, slack, incident, message, "U0BOB")
    assert "the experts (none configured)" in wait_for(lambda: answers(slack)[1:], what="the refusal")[0]
    assert rows(closed)[-1].status == "pending"


def test_high_risk_needs_an_expert(start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start(experts=["S0SRE"])  # U0BOB and U0CAROL
    incident, _ = open_incident(bot, slack, alertname="ExpertOnly", key="expert")
    slack.channels[incident.channel_id or ""].members.add("U0DAVE")
    _, message = request(bot, slack, incident)
    assert "risk *high*" in json.dumps(message.blocks) and "an expert: <!subteam^S0SRE>" in json.dumps(message.blocks)
    decide(bot, slack, incident, message, "U0DAVE")  # in the channel, not an expert
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "only the configured experts" in text and real(kubernetes) == []
    decide(bot, slack, incident, message, "U0CAROL")
    wait_for(lambda: real(kubernetes), what="the expert's approval to run it")
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the result")
    assert len(real(kubernetes)) == 1


def test_high_risk_without_experts_nobody_may_approve(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack, alertname="ExpertOnly", key="expert")
    _, message = request(bot, slack, incident)
    assert "nobody: high-risk remediations need an expert" in json.dumps(message.blocks)
    decide(bot, slack, incident, message, "U0BOB")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "no experts are configured" in text and real(kubernetes) == []


def test_an_expired_request_cannot_be_approved(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start(expiry_minutes=15)
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    clock.advance(minutes=16)
    decide(bot, slack, incident, message, "U0BOB")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "expired" in text
    wait_for(lambda: "expired unapproved" in json.dumps(current(slack, incident, message).blocks),
             what="the message to say expired")
    assert rows(bot)[0].status == "expired" and real(kubernetes) == []
    assert "expired" in audit_events(bot)


def deny(bot: RunningBot, slack: FakeSlack, incident: Incident, message: Message, user: str,
         reason: str | None) -> httpx.Response:
    """`user` clicks Deny; the modal that opens is submitted with `reason` (None: left empty)."""
    opened = len(slack.views)
    assert decide(bot, slack, incident, message, user, "approval_deny").status_code == 200
    wait_for(lambda: len(slack.views) > opened, what="the deny dialog")
    view = list(slack.views.values())[-1]
    value = {"type": "plain_text_input", "value": reason}
    return post_to_slack_events(bot.url, view_submission(view, {"reason": {"reason": value}}, user=user))


def test_a_denied_request_never_runs(start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    answer = deny(bot, slack, incident, message, "U0BOB", "  the pod is already being replaced by the HPA  ")
    assert answer.status_code == 200 and answer.content == b""  # the modal closes
    wait_for(lambda: "denied by <@U0BOB>: the pod is already being replaced by the HPA" in json.dumps(
        current(slack, incident, message).blocks), what="the message to say denied, and why")
    decide(bot, slack, incident, message, "U0CAROL")
    [text] = wait_for(lambda: answers(slack), what="the answer")
    assert "denied by <@U0BOB>" in text
    [row] = rows(bot)
    assert (row.status, row.reason) == ("denied", "the pod is already being replaced by the HPA")
    assert real(kubernetes) == []
    assert len(timeline(bot, incident.id or 0, "approval_denied")) == 1
    with bot.services.db.read() as session:
        [entry] = [e for e in session.scalars(select(AuditEntry)) if e.event == "denied"]
    assert entry.data["reason"] == "the pod is already being replaced by the HPA"


def test_the_deny_dialog_says_so_when_the_request_was_approved_meanwhile(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    assert decide(bot, slack, incident, message, "U0BOB", "approval_deny").status_code == 200
    view = wait_for(lambda: list(slack.views.values()), what="the deny dialog")[-1]
    assert view["private_metadata"].startswith(rows(bot)[0].token)
    assert decide(bot, slack, incident, message, "U0CAROL").status_code == 200  # approved while Bob types
    wait_for(lambda: rows(bot)[0].status != "pending", what="the approval")
    answer = post_to_slack_events(bot.url, view_submission(view, {"reason": {"reason": {"value": "no"}}},
                                                           user="U0BOB"))
    assert answer.status_code == 200
    errors = answer.json()
    assert errors["response_action"] == "errors" and "already approved by <@U0CAROL>" in errors["errors"]["reason"]
    assert rows(bot)[0].status in ("executing", "succeeded")


def test_a_deny_whose_dialog_cannot_open_still_denies(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    slack.fail_next("views.open", "expired_trigger_id")
    assert decide(bot, slack, incident, message, "U0BOB", "approval_deny").status_code == 200
    wait_for(lambda: rows(bot)[0].status == "denied", what="the denial")
    assert "Denied (the dialog for a reason could not open)." in wait_for(lambda: answers(slack), what="the answer")
    assert rows(bot)[0].reason is None and real(kubernetes) == []


def test_a_deny_dialog_submitted_by_someone_else_is_refused(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    assert decide(bot, slack, incident, message, "U0BOB", "approval_deny").status_code == 200
    view = wait_for(lambda: list(slack.views.values()), what="the deny dialog")[-1]
    answer = post_to_slack_events(bot.url, view_submission(view, {"reason": {"reason": {"value": "x"}}},
                                                           user="U0DAVE"))
    assert answer.json()["errors"]["reason"] == "This dialog was opened by someone else."
    assert rows(bot)[0].status == "pending"


def test_the_kill_switch_refuses_the_request(start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start(enabled=False)
    incident, _ = open_incident(bot, slack)
    step = by_id(posted_steps(bot, incident), "delete-pod")
    click(bot, slack, step, "U0ALICE")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "switched off" in text
    assert rows(bot) == [] and kubernetes.requests_for("DELETE") == []
    assert thread(slack, incident.channel_id, step.message_ts) == []


def test_the_budget_per_incident_refuses_further_requests(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start(budget_per_incident=1)
    incident, _ = open_incident(bot, slack)
    request(bot, slack, incident)
    rollback = by_id(posted_steps(bot, incident), "rollback")
    click(bot, slack, rollback, "U0ALICE")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "budget of 1" in text and len(rows(bot)) == 1


def test_two_approvers_at_the_same_moment_run_it_once(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def approve(user: str) -> None:
        barrier.wait()
        statuses.append(decide(bot, slack, incident, message, user).status_code)

    threads = [threading.Thread(target=approve, args=(user,)) for user in ("U0BOB", "U0CAROL")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200]
    [text] = wait_for(lambda: answers(slack), what="the loser's answer")
    assert "already approved by" in text
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the execution")
    with bot.services.db.read() as session:  # one execution was ever queued, not merely run so far
        executions = [j for j in session.scalars(select(Job)) if j.kind == "approval.execute"]
    assert len(executions) == 1
    assert len(real(kubernetes)) == 1
    assert len(timeline(bot, incident.id or 0, "approval_approved")) == 1


def test_two_clicks_on_a_remediation_at_the_same_moment_make_one_request(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    step = by_id(posted_steps(bot, incident), "delete-pod")
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def press(user: str) -> None:
        barrier.wait()
        statuses.append(click(bot, slack, step, user).status_code)

    threads = [threading.Thread(target=press, args=(user,)) for user in ("U0ALICE", "U0BOB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200]
    assert "already requested this step" in wait_for(lambda: answers(slack), what="the second click's answer")[0]
    wait_for(lambda: approval_message(slack, incident, step), what="the approval message")
    assert len(rows(bot)) == 1  # each Slack click has its own trigger id: only the row lock tells them apart


def test_a_decision_is_redrawn_even_when_slack_refuses_the_first_redraw(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    slack.fail_next("chat.update", "ratelimited", status=429, retry_after=1, times=3)
    deny(bot, slack, incident, message, "U0BOB", "not now")
    wait_for(lambda: "denied by <@U0BOB>: not now" in json.dumps(current(slack, incident, message).blocks),
             timeout=20, what="the message redrawn after Slack's 429s")
    assert not [b for b in current(slack, incident, message).blocks if b.get("type") == "actions"]


def test_switched_off_after_a_request_it_can_no_longer_be_approved(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    bot.stop()
    restarted = start(enabled=False)  # the operator flips the kill switch and restarts the bot
    body = block_actions("approval_approve", rows(restarted)[0].token, user="U0BOB", channel=incident.channel_id or "",
                         response_url=slack.response_url(),
                         message={"type": "message", "ts": message.ts, "text": "", "blocks": []})
    assert post_to_slack_events(restarted.url, body).status_code == 200
    assert "switched off" in wait_for(lambda: answers(slack), what="the refusal")[0]
    assert rows(restarted)[0].status == "pending" and real(kubernetes) == []


def test_a_cluster_that_refuses_the_read_before_the_run_fails_the_request_and_runs_nothing(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    kubernetes.forbid("get", "pods", "prod")  # a Role without `get pods` (the bot reads the pod first)
    assert decide(bot, slack, incident, message, "U0BOB").status_code == 200
    wait_for(lambda: rows(bot)[0].status == "failed", what="the request to fail, not hang in executing")
    [row] = rows(bot)
    assert (row.result or "").startswith("not run: the cluster could not be read before running it")
    assert "forbidden" in (row.result or "").lower() and row.started_at is None
    assert real(kubernetes) == []
    wait_for(lambda: [m for m in thread(slack, incident.channel_id, step.message_ts)
                      if m.ts != message.ts and "not run" in m.text], what="the thread to say so")
    assert [e for e in audit_events(bot) if e != "diagnostic_run"][-1] == "result"


def test_the_started_mark_is_set_once(database_url: str, clock: FakeClock) -> None:
    from bot import approvals
    from bot.db import Database
    from bot.models import Incident as IncidentRow
    from bot.models import RunbookStep as StepRow

    db = Database(database_url)
    db.migrate()
    with db.session() as session:
        incident = IncidentRow(title="t", alertname="A", severity="P2", created_at=clock(), updated_at=clock())
        session.add(incident)
        session.flush()
        step = StepRow(incident_id=incident.id, runbook_id="r", step_index=0, step_id="s", kind="remediation",
                       action="k8s.delete_pod", params={}, token="tok")
        session.add(step)
        session.flush()
        row = ApprovalRequest(token="a1", incident_id=incident.id, step_id=step.id, action="k8s.delete_pod",
                              params={}, risk="medium", requested_by="U1", requested_at=clock(),
                              expires_at=clock(), status="executing", decided_by="U2")
        session.add(row)
    with db.session() as session:
        first = session.get(ApprovalRequest, row.id)
        assert first is not None and approvals.started(session, first, clock(), run=True, before={"exists": True})
    with db.read() as session:  # a second worker loaded the row before the mark (a lapsed lease)
        second = session.get(ApprovalRequest, row.id)
        assert second is not None
        session.expunge(second)
    second.started_at = None  # as that worker saw it
    with db.session() as session:
        assert not approvals.started(session, second, clock(), run=True, before={})
    db.dispose()


def test_approval_on_a_resolved_incident_is_refused(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, payload = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    assert bot.post_alerts(resolved(payload)).status_code == 200

    def status() -> str:
        with bot.services.db.read() as session:
            row = session.get(Incident, incident.id)
            return row.status if row else ""

    wait_for(lambda: status() == "resolved", what="the incident to resolve")
    decide(bot, slack, incident, message, "U0BOB")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "resolved" in text
    assert rows(bot)[0].status == "pending" and real(kubernetes) == []


def expire_jobs(bot: RunningBot) -> list[Job]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Job).where(Job.kind == "approval.expire")))  # type: ignore[arg-type]


def test_a_pending_request_expires_by_itself_and_approve_afterwards_is_refused(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start(expiry_minutes=15)
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    [job] = expire_jobs(bot)
    assert job.run_at == rows(bot)[0].expires_at and job.lane is None  # queued with the request, due at expiry
    clock.advance(minutes=16)  # nobody clicks
    wait_for(lambda: "expired unapproved" in json.dumps(current(slack, incident, message).blocks), timeout=5,
             what="the message redrawn as expired")
    assert not [b for b in current(slack, incident, message).blocks if b.get("type") == "actions"]  # no buttons
    wait_for(lambda: [m for m in thread(slack, incident.channel_id, step.message_ts)
                      if m.ts != message.ts and "expired unapproved" in m.text], what="the line in the thread")
    assert rows(bot)[0].status == "expired" and audit_events(bot).count("expired") == 1
    decide(bot, slack, incident, message, "U0BOB")  # a late click on the message as first posted
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "expired" in text
    assert rows(bot)[0].status == "expired" and real(kubernetes) == [] and audit_events(bot).count("expired") == 1
    assert len([m for m in thread(slack, incident.channel_id, step.message_ts) if "expired unapproved" in m.text
                and m.ts != message.ts]) == 1


def test_a_request_decided_before_its_expiry_is_left_alone_by_the_expiry_job(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start(expiry_minutes=15)
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    deny(bot, slack, incident, message, "U0BOB", None)
    wait_for(lambda: "denied by <@U0BOB>" in json.dumps(current(slack, incident, message).blocks),
             what="the message to say denied")

    def redraws() -> int:  # of the approval message only: the card has its own updates (timers)
        return sum(c.args.get("ts") == message.ts for c in slack.calls_to("chat.update"))

    updates = redraws()
    clock.advance(minutes=16)
    wait_for(lambda: all(j.status == "done" for j in expire_jobs(bot)), what="the expiry job to run")
    assert rows(bot)[0].status == "denied" and "expired" not in audit_events(bot)
    assert redraws() == updates  # not redrawn
    assert not [m for m in thread(slack, incident.channel_id, step.message_ts) if "expired" in m.text]


def test_an_execution_interrupted_after_its_call_is_reconciled_never_run_again(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    step, message = request(bot, slack, incident)
    # The DELETE takes effect in the cluster, but its answer never comes back (504): the first
    # attempt cannot know whether it happened, so the job is retried.
    kubernetes.lose_answer("DELETE", POD)
    assert decide(bot, slack, incident, message, "U0BOB").status_code == 200
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the reconciled result")
    [row] = rows(bot)
    assert len(real(kubernetes)) == 1  # exactly one real call: the retry read the cluster instead
    assert [r.status for r in real(kubernetes)] == [504]
    assert row.started_at is not None and row.before and row.before["exists"] is True
    assert (row.result or "").startswith("done before the restart: pod/api-7d9f-x2 in prod")
    assert "not run again" in (row.result or "")
    events = [e for e in audit_events(bot) if e != "diagnostic_run"]
    assert events == ["requested", "approved", "executed", "result", "reconciled"]
    wait_for(lambda: [m for m in thread(slack, incident.channel_id, step.message_ts)
                      if m.ts != message.ts and "done before the restart" in m.text], what="the thread to say so")
    wait_for(lambda: "executed" in json.dumps(current(slack, incident, message).blocks), what="the redrawn message")
    assert len(timeline(bot, incident.id or 0, "remediation")) == 1
    assert len(real(kubernetes)) == 1


# -- risk per action and per parameters (bot.actions.risk_of), and the installation's overrides ------

REMEDIES_RUNBOOK = """\
id: remedies
title: {en: Remedies, ja: 対処}
description: {en: Restart and scale., ja: 再起動とスケール。}
match:
  alertname: Remedies
expects: [namespace, deployment]
scale: {min: 0, max: 6}
steps:
  - id: restart
    title: {en: Restart, ja: 再起動}
    text: {en: A rollout restart., ja: ロールアウトの再起動。}
    action:
      type: k8s.rollout_restart
      params: {namespace: "{{ labels.namespace }}", deployment: "{{ labels.deployment }}"}
  - id: scale-to-zero
    title: {en: Stop it, ja: 停止}
    text: {en: Scale to 0 replicas., ja: レプリカを 0 に。}
    action:
      type: k8s.scale
      params: {namespace: "{{ labels.namespace }}", deployment: "{{ labels.deployment }}", replicas: 0}
  - id: scale-out
    title: {en: Scale out, ja: スケールアウト}
    text: {en: Scale to 3 replicas., ja: レプリカを 3 に。}
    action:
      type: k8s.scale
      params: {namespace: "{{ labels.namespace }}", deployment: "{{ labels.deployment }}", replicas: 3}
"""
DEPLOYMENT = "/apis/apps/v1/namespaces/prod/deployments/api"


@pytest.fixture
def remedies(start: Starter, tmp_path: Path, kubernetes: FakeKubernetes) -> None:
    """The remedies runbook next to expert-only (in the directory `start` made; a bot it starts loads it)."""
    (tmp_path / "runbooks" / "remedies.yaml").write_text(REMEDIES_RUNBOOK)
    kubernetes.add_deployment("prod", "api", replicas=2)


def real_changes(kubernetes: FakeKubernetes, path: str) -> list[Any]:
    return [r for r in kubernetes.requests_for("PATCH", path) if r.query.get("dryRun") != "All"]


def step_block(slack: FakeSlack, incident: Incident, step: RunbookStep, suffix: str = "") -> dict[str, Any]:
    """The step's block in the runbook message as posted."""
    message = next(m for m in slack.messages(incident.channel_id) if m.ts == step.message_ts)
    return next(b for b in message.blocks if b.get("block_id") == f"runbook_step_{step.step_index}{suffix}")


def shown_risk(slack: FakeSlack, incident: Incident, step: RunbookStep) -> str:
    """The risk the posted runbook message shows on the step, before anyone clicks."""
    text = step_block(slack, incident, step, "_context")["elements"][0]["text"]
    return text.split("risk: *", 1)[1].split("*", 1)[0]


@pytest.mark.parametrize("self_approve_low", [True, False])
def test_a_low_risk_restart_is_self_approved_only_when_the_policy_says_so(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, remedies: None, self_approve_low: bool) -> None:
    bot = start(self_approve_low=self_approve_low)
    incident, _ = open_incident(bot, slack, alertname="Remedies", key="restart-self")
    restart = by_id(posted_steps(bot, incident), "restart")
    assert shown_risk(slack, incident, restart) == "low"
    _, message = request(bot, slack, incident, "restart")
    shown = json.dumps(message.blocks)
    assert "risk *low*" in shown
    assert ("(not <@U0ALICE>, who asked)" in shown) is not self_approve_low
    decide(bot, slack, incident, message, "U0ALICE")  # the requester
    if self_approve_low:
        wait_for(lambda: rows(bot)[0].status == "succeeded", what="the self-approved restart to run")
        assert rows(bot)[0].decided_by == "U0ALICE" and len(real_changes(kubernetes, DEPLOYMENT)) == 1
    else:
        [text] = wait_for(lambda: answers(slack), what="the refusal")
        assert "second person" in text and "`remediations.self_approve_low`" in text
        assert rows(bot)[0].status == "pending" and real_changes(kubernetes, DEPLOYMENT) == []


def test_scaling_to_zero_needs_an_expert_while_scaling_out_does_not(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, remedies: None) -> None:
    # U0BOB and U0CAROL are the experts; U0DAVE approves as a channel member
    bot = start(experts=["S0SRE"], approvers=["commander", "responders", "channel"])
    scale = DEPLOYMENT + "/scale"
    # One incident per request: the steps share the runbook message, and so the approvals' thread.
    stop, _ = open_incident(bot, slack, alertname="Remedies", key="scale-0")
    slack.channels[stop.channel_id or ""].members.add("U0DAVE")  # in the channel, not an expert
    posted = posted_steps(bot, stop)
    zero, out = by_id(posted, "scale-to-zero"), by_id(posted, "scale-out")
    assert (shown_risk(slack, stop, zero), shown_risk(slack, stop, out)) == ("high", "medium")
    _, to_zero = request(bot, slack, stop, "scale-to-zero")
    assert "risk *high*" in json.dumps(to_zero.blocks) and "an expert: <!subteam^S0SRE>" in json.dumps(to_zero.blocks)
    decide(bot, slack, stop, to_zero, "U0DAVE")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "only the configured experts" in text
    assert rows(bot)[0].status == "pending" and real_changes(kubernetes, scale) == []

    grow, _ = open_incident(bot, slack, alertname="Remedies", key="scale-3")
    slack.channels[grow.channel_id or ""].members.add("U0DAVE")
    _, to_three = request(bot, slack, grow, "scale-out")
    assert "risk *medium*" in json.dumps(to_three.blocks)
    decide(bot, slack, grow, to_three, "U0DAVE")
    wait_for(lambda: rows(bot)[1].status == "succeeded", what="the non-expert's approval to run it")
    [patch] = real_changes(kubernetes, scale)
    assert patch.body["spec"]["replicas"] == 3
    assert [r.risk for r in rows(bot)] == ["high", "medium"] and rows(bot)[0].status == "pending"


def test_a_raised_risk_override_makes_the_step_expert_only(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start(experts=["S0SRE"], risk={"k8s.delete_pod": "high"})  # medium by default
    incident, _ = open_incident(bot, slack)
    slack.channels[incident.channel_id or ""].members.add("U0DAVE")
    delete = by_id(posted_steps(bot, incident), "delete-pod")
    assert shown_risk(slack, incident, delete) == "high"
    assert step_block(slack, incident, delete)["accessory"]["style"] == "danger"
    _, message = request(bot, slack, incident)
    assert "risk *high*" in json.dumps(message.blocks) and "an expert: <!subteam^S0SRE>" in json.dumps(message.blocks)
    decide(bot, slack, incident, message, "U0DAVE")  # would do for medium
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "only the configured experts" in text and real(kubernetes) == []
    decide(bot, slack, incident, message, "U0BOB")
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the expert's approval to run it")
    assert len(real(kubernetes)) == 1 and rows(bot)[0].risk == "high"


def test_a_lowered_risk_override_lets_the_requester_approve_but_scaling_to_zero_stays_high(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, remedies: None) -> None:
    bot = start(experts=["S0SRE"], self_approve_low=True, risk={"k8s.scale": "low"})  # medium by default
    grow, _ = open_incident(bot, slack, alertname="Remedies", key="lowered-3")
    posted = posted_steps(bot, grow)
    zero, out = by_id(posted, "scale-to-zero"), by_id(posted, "scale-out")
    assert (shown_risk(slack, grow, zero), shown_risk(slack, grow, out)) == ("high", "low")
    _, to_three = request(bot, slack, grow, "scale-out")
    assert "risk *low*" in json.dumps(to_three.blocks)
    decide(bot, slack, grow, to_three, "U0ALICE")  # the requester
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the self-approved scale to run")

    stop, _ = open_incident(bot, slack, alertname="Remedies", key="lowered-0")
    _, to_zero = request(bot, slack, stop, "scale-to-zero")
    assert "risk *high*" in json.dumps(to_zero.blocks) and "an expert: <!subteam^S0SRE>" in json.dumps(to_zero.blocks)
    decide(bot, slack, stop, to_zero, "U0ALICE")
    [text] = wait_for(lambda: answers(slack), what="the refusal")
    assert "second person" in text and rows(bot)[1].status == "pending"
    assert len(real_changes(kubernetes, DEPLOYMENT + "/scale")) == 1  # only the scale to 3


def test_risk_of_fails_closed_and_a_step_only_raises() -> None:
    restart, scale = get_action("k8s.rollout_restart"), get_action("k8s.scale")
    assert restart is not None and scale is not None
    context = ParamContext(namespaces=frozenset({"prod"}), scale=(0, 6))
    three = validate_params(scale.name, {"namespace": "prod", "deployment": "api", "replicas": 3}, context)
    zero = validate_params(scale.name, {"namespace": "prod", "deployment": "api", "replicas": 0}, context)
    assert (risk_of(scale, three), risk_of(scale, zero)) == ("medium", "high")
    assert risk_of(scale, None) == "high"  # parameters it cannot read: fail closed
    assert risk_of(scale, three, overrides={"k8s.scale": "low"}) == "low"
    assert risk_of(scale, zero, overrides={"k8s.scale": "low"}) == "high"
    assert risk_of(restart, None) == "low"  # its risk does not depend on the parameters
    assert risk_of(restart, None, "medium") == "medium"  # a step raises
    assert risk_of(restart, None, "low", {restart.name: "high"}) == "high"  # and never lowers
    assert risk_of(restart, None, "high", {restart.name: "medium"}) == "high"
    assert risk_of(restart, None, overrides={restart.name: "extreme"}) == "high"
    assert risk_of(restart, None, "unknown") == "high"


def test_an_unknown_action_in_remediations_risk_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text("remediations:\n  risk:\n    k8s.rollout_undo: medium\n    k8s.restart: low\n"
                    "    k8s.pods: high\n    k8s.cordon: severe\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    known = ", ".join(s.name for s in ACTIONS if s.kind == "remediation")
    assert caught.value.problems == [
        f"{path}:4: remediations.risk.k8s.restart: unknown action 'k8s.restart'; the remediations are {known}",
        f"{path}:5: remediations.risk.k8s.pods: k8s.pods is a diagnostic: it runs without approval, so it has no "
        f"risk to set; the remediations are {known}",
        f"{path}:6: remediations.risk.k8s.cordon: Input should be 'low', 'medium' or 'high'",
    ]
    assert "oncall-bot config schema" in str(caught.value)
    path.write_text("remediations:\n  risk: {k8s.rollout_undo: medium, alertmanager.silence: high}\n")
    assert load_config_file(path).remediations.risk == {"k8s.rollout_undo": "medium", "alertmanager.silence": "high"}


def test_the_approval_message_and_the_step_line_speak_the_channels_language(clock: FakeClock) -> None:
    from datetime import timedelta

    from commands.approval_blocks import ApprovalView, approval_blocks, approvers_text, deny_modal, step_note
    from tests.fakes.slack_blocks import validate_blocks, validate_view

    now = clock()
    row = ApprovalRequest(id=7, token="t0k3n", incident_id=1, step_id=1, action="k8s.scale",
                          params={"namespace": "prod", "deployment": "api", "replicas": 6}, risk="medium",
                          requested_by="U0ALICE", requested_at=now, expires_at=now + timedelta(minutes=15))
    who = approvers_text(row, ["commander", "responders"], [], commander="U0CAROL", channel="C1",
                         self_approve_low=False, locale="ja")
    assert who == "コマンダー(<@U0CAROL>), 対応者とオンコール(依頼者 <@U0ALICE> 以外)"
    blocks = approval_blocks(ApprovalView(row, who, now, "ja"))
    shown = json.dumps(blocks, ensure_ascii=False)
    assert "<@U0ALICE> が `k8s.scale` の実行承認を依頼しました · リスク *medium*" in shown
    assert "承認できる人: コマンダー" in shown and '"text": "承認"' in shown and '"text": "却下"' in shown
    assert "kubectl -n prod scale deployment/api --replicas=6" in shown  # commands stay as they are
    assert validate_blocks(blocks) == []
    assert step_note(row, now, "ja").startswith(":lock: 承認待ち · 依頼者 <@U0ALICE> · 期限 <!date^")
    assert validate_view(deny_modal(row, "U0BOB", "ja")) == []
    assert deny_modal(row, "U0BOB", "ja")["title"]["text"] == "対処を却下"
    row.status, row.decided_by, row.result, row.rollout = "succeeded", "U0BOB", "scaled", "complete"
    row.rollout_detail = 'deployment "api" successfully rolled out'
    assert step_note(row, now, "ja") == (':white_check_mark: ロールアウト完了: deployment "api" successfully rolled out'
                                         " · 承認 <@U0BOB>")
    assert step_note(row, now).startswith(":white_check_mark: Rolled out: ")  # English by default
