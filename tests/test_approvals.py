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

from bot.models import ApprovalRequest, AuditEntry, Incident, Job, RunbookStep
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, open_with_card, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import block_actions, post_to_slack_events
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

    def run(**remediations: Any) -> RunningBot:
        settings = runbook_settings(database_url, slack, kubernetes.kubeconfig(tmp_path / "kubeconfig"),
                                    remediations=remediations)
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
    assert f"members of <#{incident.channel_id}>" in shown
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
    assert "Only the commander, experts and members of" in text and (incident.channel_id or "") in text
    assert real(kubernetes) == [] and rows(bot)[0].status == "pending"


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


def test_a_denied_request_never_runs(start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    decide(bot, slack, incident, message, "U0BOB", "approval_deny")
    wait_for(lambda: "denied by <@U0BOB>" in json.dumps(current(slack, incident, message).blocks),
             what="the message to say denied")
    decide(bot, slack, incident, message, "U0CAROL")
    [text] = wait_for(lambda: answers(slack), what="the answer")
    assert "denied by <@U0BOB>" in text
    assert rows(bot)[0].status == "denied" and real(kubernetes) == []
    assert len(timeline(bot, incident.id or 0, "approval_denied")) == 1


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
    time.sleep(0.3)  # a second execution, if any, would have been queued by now
    assert len(real(kubernetes)) == 1
    assert len(timeline(bot, incident.id or 0, "approval_approved")) == 1


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
    decide(bot, slack, incident, message, "U0BOB", "approval_deny")
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
