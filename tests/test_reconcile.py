"""Crash reconciliation of approved remediations: did the change happen? Read from the cluster,
never run again.

* `bot.reconcile.verdict` for every action in `RECONCILABLE`, on facts read through the real
  `KubernetesClient` from the Kubernetes fake: happened, did not happen, the object gone.
* End to end (signed clicks, the Slack and Kubernetes fakes over real HTTP): the call takes
  effect but its answer is lost, or it is refused before it is applied; the retry reconciles.
* SIGKILL: the bot as its own OS process, killed while the remediation's call is in flight
  (the Kubernetes fake holds it), then restarted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import audit, reconcile
from bot.action_params import ParamContext
from bot.action_runner import run_action, validate_params
from bot.actions import ActionContext
from bot.db import Database
from bot.models import ApprovalRequest, AuditEntry, Incident
from integrations.kubernetes import KubernetesClient
from tests.alerts import alert, group
from tests.conftest import FakeClock, RunningBot, open_with_card, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes, RecordedRequest
from tests.fakes.kubernetes_store import RESTARTED_AT
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import block_actions, post_to_slack_events
from tests.test_approvals import audit_events, current, decide, request, rows
from tests.test_crash_safety import BotProcess, start_process
from tests.test_runbook_flow import button, runbook_settings, thread, timeline

DEPLOYMENT = "/apis/apps/v1/namespaces/prod/deployments/api"
SCALE = f"{DEPLOYMENT}/scale"
POD = "/api/v1/namespaces/prod/pods/api-7d9f-x2"

DRILL_RUNBOOK = """\
id: reconcile-drill
title: {en: Reconcile drill, ja: 照合の訓練}
description: {en: Every remediation the bot reconciles after a crash., ja: クラッシュ後に照合するすべての修復。}
match:
  alertname: ReconcileDrill
namespaces: [prod]
scale: {min: 1, max: 10}
expects: [namespace, deployment, node]
steps:
  - id: scale
    title: {en: Scale out, ja: スケールアウト}
    text: {en: To 6 replicas., ja: 6 レプリカにします。}
    action:
      type: k8s.scale
      params:
        namespace: "{{ labels.namespace }}"
        deployment: "{{ labels.deployment }}"
        replicas: 6
  - id: rollback
    title: {en: Roll back, ja: ロールバック}
    text: {en: To the previous revision., ja: 前のリビジョンに戻します。}
    action:
      type: k8s.rollout_undo
      params:
        namespace: "{{ labels.namespace }}"
        deployment: "{{ labels.deployment }}"
  - id: restart
    title: {en: Restart, ja: 再起動}
    text: {en: A rolling restart., ja: ローリング再起動です。}
    action:
      type: k8s.rollout_restart
      params:
        namespace: "{{ labels.namespace }}"
        deployment: "{{ labels.deployment }}"
  - id: cordon
    title: {en: Cordon the node, ja: ノードを cordon}
    text: {en: No new pods on it., ja: 新しい Pod を配置しません。}
    action:
      type: k8s.cordon
      params:
        node: "{{ labels.node }}"
  - id: uncordon
    title: {en: Uncordon the node, ja: ノードを uncordon}
    text: {en: Pods may land on it again., ja: Pod の配置を再開します。}
    action:
      type: k8s.uncordon
      params:
        node: "{{ labels.node }}"
"""
SCALE_STEP = 0  # its index in DRILL_RUNBOOK


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    """`api` in prod at revision 2 (so an undo has a revision to go back to), 3 replicas; node-1
    schedulable, node-2 cordoned; a bare pod."""
    with FakeKubernetes() as fake:
        fake.add_node("node-1")
        fake.add_node("node-2", unschedulable=True)
        fake.add_deployment("prod", "api", replicas=3, image="registry.example/api:1.0")
        fake.set_image("prod", "api", "registry.example/api:2.0")
        fake.add_pod("prod", "api-7d9f-x2", labels={"app": "api-debug"})
        yield fake


def image_of(cluster: FakeKubernetes) -> str:
    return str(cluster.get("deployments", "prod", "api")["spec"]["template"]["spec"]["containers"][0]["image"])


def real(cluster: FakeKubernetes, method: str, path: str) -> list[RecordedRequest]:
    """The requests on `path` that were not server-side dry runs."""
    return [r for r in cluster.requests_for(method, path) if r.query.get("dryRun") != "All"]


# -- verdict, on facts read from the cluster -----------------------------------------------------

# Each action's parameters in a runbook; `params()` gives them as an approval request stores them.
RAW: dict[str, dict[str, Any]] = {
    "k8s.rollout_restart": {"namespace": "prod", "deployment": "api"},
    "k8s.rollout_undo": {"namespace": "prod", "deployment": "api"},
    "k8s.scale": {"namespace": "prod", "deployment": "api", "replicas": 6},
    "k8s.delete_pod": {"namespace": "prod", "pod": "api-7d9f-x2"},
    "k8s.cordon": {"node": "node-1"},
    "k8s.uncordon": {"node": "node-2"},
}
PARAMS_CONTEXT = ParamContext(namespaces=frozenset({"prod"}), nodes=("node-*",), scale=(1, 10))
# The object each action changes: (resource, namespace, name) in the fake's store.
TARGET = {"k8s.rollout_restart": ("deployments", "prod", "api"), "k8s.rollout_undo": ("deployments", "prod", "api"),
          "k8s.scale": ("deployments", "prod", "api"), "k8s.delete_pod": ("pods", "prod", "api-7d9f-x2"),
          "k8s.cordon": ("nodes", "", "node-1"), "k8s.uncordon": ("nodes", "", "node-2")}


def test_every_reconcilable_action_is_covered() -> None:
    assert set(RAW) == set(TARGET) == set(HAPPENED) == set(NOT_HAPPENED) == set(reconcile.RECONCILABLE)


@pytest.fixture
def kube(cluster: FakeKubernetes, tmp_path: Path) -> Iterator[KubernetesClient]:
    with KubernetesClient.from_environment(str(cluster.kubeconfig(tmp_path / "kubeconfig"))) as client:
        yield client


def params(action: str) -> dict[str, Any]:
    return validate_params(action, RAW[action], PARAMS_CONTEXT).model_dump(mode="json")


async def run(kube: KubernetesClient, action: str, *, dry_run: bool = False) -> str:
    """The action as the approval flow runs it (the generic executor), against the fake."""
    model = validate_params(action, RAW[action], PARAMS_CONTEXT)
    return (await run_action(action, model, ActionContext(kubernetes=kube, dry_run=dry_run))).summary


HAPPENED = {
    "k8s.rollout_restart": "deployment/api in prod has restartedAt {restarted_at} (was unset)",
    "k8s.rollout_undo": "deployment/api in prod template changed (generation 2 → 3, revision 3)",
    "k8s.scale": "deployment/api in prod has 6 replicas (was 3)",
    "k8s.delete_pod": "pod/api-7d9f-x2 in prod no longer exists",
    "k8s.cordon": "node/node-1 is unschedulable",
    "k8s.uncordon": "node/node-2 is not unschedulable",
}
NOT_HAPPENED = {
    "k8s.rollout_restart": "deployment/api in prod still has restartedAt unset",
    "k8s.rollout_undo": "deployment/api in prod template unchanged (revision 2, generation 2)",
    "k8s.scale": "deployment/api in prod has 3 replicas, not 6",
    "k8s.delete_pod": "pod/api-7d9f-x2 in prod still exists with the same uid",
    "k8s.cordon": "node/node-1 is not unschedulable",
    "k8s.uncordon": "node/node-2 is unschedulable",
}


@pytest.mark.parametrize("action", sorted(reconcile.RECONCILABLE))
async def test_verdict_says_an_action_that_ran_happened(action: str, kube: KubernetesClient) -> None:
    before = await reconcile.observe(kube, action, params(action))
    await run(kube, action)
    after = await reconcile.observe(kube, action, params(action))
    assert before["exists"] is True and after != before
    assert reconcile.verdict(action, params(action), before, after) == (True, HAPPENED[action].format(**after))


@pytest.mark.parametrize("action", sorted(reconcile.RECONCILABLE))
async def test_verdict_says_an_action_that_did_not_run_did_not_happen(action: str, kube: KubernetesClient) -> None:
    before = await reconcile.observe(kube, action, params(action))
    await run(kube, action, dry_run=True)  # what the approval message shows: validated, persisted nowhere
    after = await reconcile.observe(kube, action, params(action))
    assert reconcile.verdict(action, params(action), before, after) == (False, NOT_HAPPENED[action])


@pytest.mark.parametrize("action", sorted(reconcile.RECONCILABLE))
async def test_verdict_when_the_object_is_gone(action: str, kube: KubernetesClient, cluster: FakeKubernetes) -> None:
    before = await reconcile.observe(kube, action, params(action))
    cluster.remove(*TARGET[action])  # deleted by someone else meanwhile (or, for a pod, by the action)
    after = await reconcile.observe(kube, action, params(action))
    assert after == {"exists": False}
    happened, what = reconcile.verdict(action, params(action), before, after)
    kind, namespace, name = TARGET[action]
    assert what == f"{kind[:-1]}/{name}" + (f" in {namespace}" if namespace else "") + " no longer exists"
    # A pod that is gone was deleted; a deployment or node that is gone cannot show the change.
    assert happened is (action == "k8s.delete_pod")


async def test_a_pod_recreated_under_its_name_was_deleted(kube: KubernetesClient, cluster: FakeKubernetes) -> None:
    action = "k8s.delete_pod"
    before = await reconcile.observe(kube, action, params(action))
    await run(kube, action)
    cluster.add_pod("prod", "api-7d9f-x2", labels={"app": "api-debug"})  # as a StatefulSet recreates it
    after = await reconcile.observe(kube, action, params(action))
    happened, what = reconcile.verdict(action, params(action), before, after)
    assert happened is True and after["uid"] != before["uid"]
    assert what == f"pod/api-7d9f-x2 in prod was deleted (uid {before['uid']} → {after['uid']})"


async def test_a_scale_meanwhile_is_not_taken_for_an_undo(kube: KubernetesClient, cluster: FakeKubernetes) -> None:
    """An autoscaler (or a person) scaling the deployment changes its generation too; only the
    undo changes its revision."""
    action = "k8s.rollout_undo"
    before = await reconcile.observe(kube, action, params(action))
    await run(kube, "k8s.scale")  # not the undo: its call never reached the cluster
    after = await reconcile.observe(kube, action, params(action))
    assert after["generation"] != before["generation"] and image_of(cluster).endswith(":2.0")
    happened, what = reconcile.verdict(action, params(action), before, after)
    assert happened is False and what.startswith("deployment/api in prod template unchanged")

    await run(kube, action)  # the undo, with a scale meanwhile: still seen
    after = await reconcile.observe(kube, action, params(action))
    assert image_of(cluster).endswith(":1.0")
    assert reconcile.verdict(action, params(action), before, after)[0] is True


async def test_an_undo_is_seen_before_the_controller_has_caught_up(kube: KubernetesClient) -> None:
    """Right after the write, a real API server has stored the new template (generation + 1) while
    the deployment controller may not have moved the revision annotation yet. The fake's
    controller catches up whenever the deployment is read, so that moment is written by hand."""
    action = "k8s.rollout_undo"
    before = await reconcile.observe(kube, action, params(action))
    after = {**before, "generation": before["generation"] + 1}
    assert reconcile.verdict(action, params(action), before, after) == (
        True, "deployment/api in prod template changed (generation 2 → 3, revision 2)")


# -- end to end: the call's answer lost, or the call refused -------------------------------------

@dataclass(frozen=True)
class Drill:
    step: str                       # the step of DRILL_RUNBOOK
    node: str                       # the alert's node label (cordon, uncordon)
    write: tuple[str, str]          # the one real write the action makes: method, path
    done: str                       # what is true after it ran
    not_done: str                   # what is true when it did not
    applied: Callable[[FakeKubernetes], bool]


def _unschedulable(node: str) -> Callable[[FakeKubernetes], bool]:
    return lambda cluster: cluster.get("nodes", "", node)["spec"].get("unschedulable") is True


DRILLS = {
    "scale": Drill("scale", "node-1", ("PATCH", SCALE), "deployment/api in prod has 6 replicas (was 3)",
                   "deployment/api in prod has 3 replicas, not 6",
                   lambda cluster: cluster.get("deployments", "prod", "api")["spec"]["replicas"] == 6),
    "rollout_undo": Drill("rollback", "node-1", ("PATCH", DEPLOYMENT),
                          "deployment/api in prod template changed (generation 2 → 3, revision 3)",
                          "deployment/api in prod template unchanged (revision 2, generation 2)",
                          lambda cluster: image_of(cluster).endswith(":1.0")),
    "rollout_restart": Drill("restart", "node-1", ("PATCH", DEPLOYMENT), "deployment/api in prod has restartedAt ",
                             "deployment/api in prod still has restartedAt unset",
                             lambda cluster: RESTARTED_AT in (cluster.get("deployments", "prod", "api")["spec"]
                                                              ["template"]["metadata"].get("annotations") or {})),
    "cordon": Drill("cordon", "node-1", ("PATCH", "/api/v1/nodes/node-1"), "node/node-1 is unschedulable",
                    "node/node-1 is not unschedulable", _unschedulable("node-1")),
    "uncordon": Drill("uncordon", "node-2", ("PATCH", "/api/v1/nodes/node-2"), "node/node-2 is not unschedulable",
                      "node/node-2 is unschedulable", lambda cluster: not _unschedulable("node-2")(cluster)),
}


def drill_runbooks(tmp_path: Path) -> Path:
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir(exist_ok=True)
    (runbooks / "reconcile-drill.yaml").write_text(DRILL_RUNBOOK)
    return runbooks


@pytest.fixture
def drill_bot(database_url: str, slack: FakeSlack, cluster: FakeKubernetes, tmp_path: Path,
              clock: FakeClock) -> Iterator[RunningBot]:
    settings = runbook_settings(database_url, slack, cluster.kubeconfig(tmp_path / "kubeconfig"),
                                runbooks={"namespaces": ["prod"], "nodes": ["node-*"]},
                                remediations={"experts": ["S0SRE"]})  # U0BOB approves, cordon (high) too
    bot = start_bot(settings.model_copy(update={"runbooks_path": str(drill_runbooks(tmp_path))}), clock=clock)
    try:
        yield bot
    finally:
        bot.stop()
        bot.services.db.dispose()


def open_drill(bot: RunningBot, slack: FakeSlack, node: str) -> Incident:
    payload = group(alert("ReconcileDrill", labels={"deployment": "api", "node": node}),
                    group_key=f'{{}}:{{alertname="ReconcileDrill",node="{node}"}}')
    incident = open_with_card(bot, payload)
    slack.channels[incident.channel_id or ""].members.add("U0BOB")
    return incident


def results(slack: FakeSlack, incident: Incident, thread_ts: str | None, words: str) -> list[Message]:
    return [m for m in thread(slack, incident.channel_id, thread_ts) if words in m.text]


def approval_events(bot: RunningBot) -> list[str]:
    """The approval flow's audit entries in order (a followed rollout's come after them)."""
    return [e for e in audit_events(bot) if e != "diagnostic_run"]


def settle(bot: RunningBot, slack: FakeSlack, incident: Incident, message: Message, state: str) -> None:
    """Until the approval message is redrawn with the outcome, which comes after the thread's line."""
    wait_for(lambda: f"approved by <@U0BOB>, {state}" in json.dumps(current(slack, incident, message).blocks),
             what=f"the approval message redrawn as {state}")


@pytest.mark.parametrize("action", list(DRILLS))
def test_a_call_whose_answer_was_lost_is_reconciled_as_done_and_never_run_again(
        action: str, drill_bot: RunningBot, slack: FakeSlack, cluster: FakeKubernetes) -> None:
    drill = DRILLS[action]
    incident = open_drill(drill_bot, slack, drill.node)
    step, message = request(drill_bot, slack, incident, drill.step)
    assert real(cluster, *drill.write) == [] and not drill.applied(cluster)  # only the dry run so far
    # The write takes effect in the cluster, its answer never comes back (504): the first attempt
    # cannot know whether it happened, so the job is retried and reads the cluster instead.
    cluster.lose_answer(*drill.write)
    assert decide(drill_bot, slack, incident, message, "U0BOB").status_code == 200
    wait_for(lambda: rows(drill_bot)[0].status == "succeeded", what="the reconciled result")
    settle(drill_bot, slack, incident, message, "executed")
    [row] = rows(drill_bot)
    assert [r.status for r in real(cluster, *drill.write)] == [504]  # one real write, the lost one
    assert drill.applied(cluster)
    assert row.started_at is not None and (row.before or {}).get("exists") is True
    result = row.result or ""
    assert result.startswith(f"done before the restart: {drill.done}") and "not run again" in result
    assert approval_events(drill_bot)[:5] == ["requested", "approved", "executed", "result", "reconciled"]
    assert approval_events(drill_bot).count("reconciled") == 1
    assert len(results(slack, incident, step.message_ts, "done before the restart")) == 1
    assert len(timeline(drill_bot, incident.id or 0, "remediation")) == 1
    assert [r.status for r in real(cluster, *drill.write)] == [504]


@pytest.mark.parametrize("action", list(DRILLS))
def test_a_call_refused_before_it_was_applied_is_reconciled_as_not_done_and_never_run_again(
        action: str, drill_bot: RunningBot, slack: FakeSlack, cluster: FakeKubernetes) -> None:
    drill = DRILLS[action]
    incident = open_drill(drill_bot, slack, drill.node)
    step, message = request(drill_bot, slack, incident, drill.step)
    # The API server sheds the write (503) before storing it: to the bot, the same as a lost answer.
    cluster.refuse(*drill.write)
    assert decide(drill_bot, slack, incident, message, "U0BOB").status_code == 200
    wait_for(lambda: rows(drill_bot)[0].status == "failed", what="the reconciled result")
    settle(drill_bot, slack, incident, message, "failed")
    [row] = rows(drill_bot)
    assert [r.status for r in real(cluster, *drill.write)] == [503]  # the one real write, refused
    assert not drill.applied(cluster)
    assert row.result == f"did not happen: {drill.not_done}; not run again; run it again by a new request"
    assert approval_events(drill_bot) == ["requested", "approved", "executed", "result", "reconciled"]
    [said] = results(slack, incident, step.message_ts, "did not happen")
    assert drill.not_done in said.text and "not run again" in said.text
    assert [r.status for r in real(cluster, *drill.write)] == [503]  # and no second attempt


# -- SIGKILL: the bot killed while the call is in flight, then restarted -------------------------

@dataclass(frozen=True)
class KillPoint:
    request: tuple[str, str]        # the Kubernetes request held while the bot is killed
    when: str                       # held after the fake applied it, or before
    status: str                     # the request's end after the restart
    says: str                       # the result in the thread
    writes: int                     # real PATCHes of the scale that reached the cluster
    replicas: int


KILL_POINTS = {
    # The PATCH reached the cluster and was applied; its answer waits while the bot dies.
    "mid-call": KillPoint(("PATCH", SCALE), "after", "succeeded",
                          f"done before the restart: {DRILLS['scale'].done}", 1, 6),
    # The started mark is committed and the action's first request (it reads the scale) is in
    # flight: nothing was written when the bot died.
    "after-the-mark": KillPoint(("GET", SCALE), "before", "failed",
                                f"did not happen: {DRILLS['scale'].not_done}", 0, 3),
}


@pytest.fixture
def drill_processes(database_url: str, slack: FakeSlack, cluster: FakeKubernetes,
                    tmp_path: Path) -> Iterator[Callable[[], BotProcess]]:
    env = {"KUBECONFIG": str(cluster.kubeconfig(tmp_path / "kubeconfig")),
           "RUNBOOKS_PATH": str(drill_runbooks(tmp_path))}
    started: list[BotProcess] = []

    def start() -> BotProcess:
        started.append(start_process(database_url, slack, tmp_path, len(started), extra_env=env))
        return started[-1]

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """The bot processes' database, read from the test."""
    db = Database(database_url)
    yield db
    db.dispose()


def requests_in(db: Database) -> list[ApprovalRequest]:
    with db.read() as session:
        return list(session.scalars(select(ApprovalRequest).order_by(ApprovalRequest.id)))


def click_on(bot: BotProcess, slack: FakeSlack, channel: str, message: Message, action_id: str, value: str,
             user: str) -> int:
    """A signed click on a button of `message`, as Slack sends it."""
    body = block_actions(action_id, value, user=user, channel=channel, response_url=slack.response_url(),
                         message={"type": "message", "ts": message.ts, "text": "", "blocks": []})
    return post_to_slack_events(bot.url, body).status_code


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_while_an_approved_remediation_runs_it_is_reconciled_after_the_restart_never_run_again(
        point: str, drill_processes: Callable[[], BotProcess], slack: FakeSlack, cluster: FakeKubernetes,
        database: Database) -> None:
    kill = KILL_POINTS[point]
    first = drill_processes()
    payload = group(alert("ReconcileDrill", labels={"deployment": "api", "node": "node-1"}),
                    group_key='{}:{alertname="ReconcileDrill",node="node-1"}')
    assert first.post_alerts(payload).status_code == 200
    channel, runbook = wait_for(lambda: next(iter(slack.tagged("runbook")), None), timeout=20,
                                what="the runbook posted")
    scale = button(runbook, SCALE_STEP)
    assert click_on(first, slack, channel, runbook, f"runbook_step:{SCALE_STEP}", scale["value"], "U0ALICE") == 200
    approval = wait_for(lambda: next((m for m in thread(slack, channel, runbook.ts) if "requested approval" in m.text),
                                     None), timeout=20, what="the approval message")
    wait_for(lambda: [r for r in requests_in(database) if r.message_ts == approval.ts], what="it to be recorded")
    approve = next(e["value"] for b in approval.blocks if b.get("type") == "actions" for e in b["elements"]
                   if e["action_id"] == "approval_approve")
    assert real(cluster, "PATCH", SCALE) == []  # the dry run only

    hold = cluster.hold(*kill.request, when=kill.when)
    try:
        assert click_on(first, slack, channel, approval, "approval_approve", approve, "U0BOB") == 200
        assert hold.reached.wait(timeout=20), f"the bot never sent {kill.request}"
        first.kill()
    finally:
        hold.release()  # the answer goes nowhere: the bot that asked is dead
    [row] = requests_in(database)
    assert row.status == "executing" and row.started_at is not None and row.result is None  # the mark, no result

    drill_processes()
    said = wait_for(lambda: [m for m in thread(slack, channel, runbook.ts) if kill.says in m.text], timeout=30,
                    what="the reconciled result in the thread")
    wait_for(lambda: kill.status.replace("succeeded", "executed") in json.dumps(
        next(m for m in slack.messages(channel) if m.ts == approval.ts).blocks), what="the approval message redrawn")
    [row] = requests_in(database)
    assert row.status == kill.status and (row.result or "").startswith(kill.says)
    assert len(real(cluster, "PATCH", SCALE)) == kill.writes  # never run again
    assert cluster.get("deployments", "prod", "api")["spec"]["replicas"] == kill.replicas
    assert len(said) == 1 and len(slack.tagged("approval_result")) == 1  # one result in the thread
    with database.read() as session:
        assert audit.verify(session) == []  # the chain is whole across the two processes
        events = [e.event for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert events[:5] == ["requested", "approved", "executed", "result", "reconciled"]
    assert events.count("executed") == 1 and events.count("reconciled") == 1
