"""An approved remediation that starts a rollout is followed like `kubectl rollout status`: its
progress on the approval message and the runbook step, its end (complete, or failed past the
Deployment's progressDeadlineSeconds) in the step's thread, the timeline and the audit log.

The Kubernetes fake's controller holds the rollout (new pods wait, or crash-loop like a bad
image) and reports ProgressDeadlineExceeded on its clock, which is the test's injected clock.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from bot.models import ApprovalRequest, AuditEntry
from integrations.kubernetes import KubernetesClient
from tests.conftest import FakeClock, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack, Message
from tests.test_approvals import Starter, current, decide, open_incident, request, rows, start
from tests.test_runbook_flow import kubernetes, runbook_messages, thread, timeline

__all__ = ["kubernetes", "start"]  # the fixtures, reused


def _rollout(bot, slack: FakeSlack, step_id: str, *, approver: str = "U0BOB"):  # type: ignore[no-untyped-def]
    incident, _ = open_incident(bot, slack, alertname="HighCPU", key=step_id)
    step, message = request(bot, slack, incident, step_id)
    assert decide(bot, slack, incident, message, approver).status_code == 200
    return incident, step, message


def _row(bot) -> ApprovalRequest:  # type: ignore[no-untyped-def]
    return rows(bot)[-1]


def _step_line(slack: FakeSlack, channel: str | None) -> str:
    return json.dumps([m.blocks for m in runbook_messages(slack, channel)], ensure_ascii=False)


def _ends(slack: FakeSlack, channel: str | None, step_ts: str | None, message: Message) -> list[Message]:
    return [m for m in thread(slack, channel, step_ts) if m.ts != message.ts and "Roll" in m.text + json.dumps(m.blocks)
            and ("Rolled out" in json.dumps(m.blocks) or "Rollout" in json.dumps(m.blocks))]


def test_a_scale_out_is_followed_until_every_new_replica_is_available(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    kubernetes.clock = clock
    kubernetes.add_deployment("prod", "api", replicas=3)
    kubernetes.hold_rollouts("prod", "api")
    bot = start()
    incident, step, message = _rollout(bot, slack, "scale-out")

    wait_for(lambda: _row(bot).rollout_detail and "of 6 updated replicas are available" in _row(bot).rollout_detail,
             what="the rollout's progress to be recorded")
    row = _row(bot)
    assert (row.status, row.rollout) == ("succeeded", "progressing")
    wait_for(lambda: "Rolling out: Waiting for deployment" in json.dumps(current(slack, incident, message).blocks),
             what="the progress on the approval message")
    wait_for(lambda: "Rolling out: " in _step_line(slack, incident.channel_id), what="the progress on the step")
    assert not _ends(slack, incident.channel_id, step.message_ts, message)  # not over yet

    kubernetes.finish_rollout("prod", "api")
    wait_for(lambda: _row(bot).rollout == "complete", what="the rollout to complete")
    assert _row(bot).rollout_detail == 'deployment "api" successfully rolled out'
    wait_for(lambda: _ends(slack, incident.channel_id, step.message_ts, message), what="the end in the thread")
    wait_for(lambda: "Rolled out: deployment" in json.dumps(current(slack, incident, message).blocks),
             what="the end on the approval message")
    wait_for(lambda: "Rolled out: " in _step_line(slack, incident.channel_id), what="the end on the step")
    [end] = _ends(slack, incident.channel_id, step.message_ts, message)
    assert "successfully rolled out" in json.dumps(end.blocks) and "<@U0BOB>" in json.dumps(end.blocks)
    [entry] = timeline(bot, incident.id or 0, "rollout")
    assert "complete" in entry.text
    with bot.services.db.read() as session:
        events = [e.event for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert events[-1] == "rollout" and events.count("rollout") == 1
    scales = [r for r in kubernetes.requests_for("PATCH", "/apis/apps/v1/namespaces/prod/deployments/api/scale")
              if r.query.get("dryRun") != "All"]
    assert len(scales) == 1  # following only reads


def test_a_restart_whose_new_pods_crash_fails_at_the_progress_deadline(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    kubernetes.clock = clock
    kubernetes.add_deployment("prod", "api", replicas=3)
    kubernetes.hold_rollouts("prod", "api", broken=True)
    bot = start()
    incident, step, message = _rollout(bot, slack, "restart")

    wait_for(lambda: _row(bot).rollout_detail and "old replicas are pending termination" in _row(bot).rollout_detail,
             what="the stuck rollout's progress")
    assert _row(bot).rollout == "progressing"
    clock.advance(seconds=601)  # spec.progressDeadlineSeconds (600) without progress
    wait_for(lambda: _row(bot).rollout == "failed", what="the rollout to fail")
    assert "exceeded its progress deadline" in (_row(bot).rollout_detail or "")
    wait_for(lambda: _ends(slack, incident.channel_id, step.message_ts, message), what="the failure in the thread")
    wait_for(lambda: "Rollout failed: deployment" in json.dumps(current(slack, incident, message).blocks),
             what="the failure on the approval message")
    wait_for(lambda: "Rollout failed: " in _step_line(slack, incident.channel_id), what="the failure on the step")
    assert len(_ends(slack, incident.channel_id, step.message_ts, message)) == 1
    assert "failed" in timeline(bot, incident.id or 0, "rollout")[0].text


def test_rollout_status_reads_like_kubectl(kubernetes: FakeKubernetes, clock: FakeClock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    kubernetes.clock = clock
    kubernetes.add_deployment("prod", "web", replicas=4)
    with KubernetesClient.from_environment(str(kubernetes.kubeconfig(tmp_path / "kubeconfig"))) as kube:
        done = kube.rollout_status("prod", "web")
        assert (done.done, done.failed, done.message) == (True, False, 'deployment "web" successfully rolled out')
        assert done.progress_deadline_seconds == 600
        kubernetes.hold_rollouts("prod", "web")
        kubernetes.set_image("prod", "web", "registry.example/web:2.0")
        waiting = kube.rollout_status("prod", "web")
        assert not waiting.done and not waiting.failed
        assert waiting.message.startswith('Waiting for deployment "web" rollout to finish: ')
        clock.advance(seconds=601)
        stuck = kube.rollout_status("prod", "web")
        assert stuck.failed and 'deployment "web" exceeded its progress deadline' in stuck.message
        kubernetes.finish_rollout("prod", "web")
        assert kube.rollout_status("prod", "web").done


def test_the_step_shows_awaiting_approval_then_the_decision(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    from tests.test_approvals import deny

    bot = start()
    incident, _ = open_incident(bot, slack)
    _, message = request(bot, slack, incident)
    wait_for(lambda: ":lock: awaiting approval · requested by <@U0ALICE> · expires <!date^" in
             _step_line(slack, incident.channel_id), what="the step to await approval")
    deny(bot, slack, incident, message, "U0BOB", "not now")
    wait_for(lambda: ":no_entry: denied by <@U0BOB>: not now" in _step_line(slack, incident.channel_id),
             what="the step to say denied, and why")
    assert "awaiting approval" not in _step_line(slack, incident.channel_id)
