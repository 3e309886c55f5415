"""Issue 11, item 8 (last bullet): alert label values crafted to escape never reach the Kubernetes API.

Each case is end to end over real HTTP: a hostile value as the namespace, deployment, pod or node
label of an Alertmanager webhook → an incident and its channel → the runbook posted (a test
runbook loaded through RUNBOOKS_PATH whose diagnostic and remediation steps put each of the four
labels where Kubernetes reads it: a path segment, a field selector, a label selector) → every
step using the value shown disabled, the reason escaped → a signed click on each of those steps
anyway (a forged request can replay a token) refused, with no approval request and no dry run →
the steps that do not use the value clicked for real, so the Kubernetes fake's request log is
not empty, and that log holds no part of the hostile value (percent-encoding decoded first).

Only SQLite: what is checked is validation before any I/O, the same for both databases, so one
bot (and one Slack and Kubernetes fake) serves the whole module to keep it fast.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.models import ApprovalRequest, Incident, RunbookStep, TimelineEntry
from commands.blockkit import escape
from tests.alerts import alert, group
from tests.conftest import RunningBot, make_settings, open_with_card, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes, RecordedRequest
from tests.fakes.slack import FakeSlack, Message
from tests.slack_requests import block_actions, post_to_slack_events

RUNBOOK = """\
id: hostile-inputs
title: {en: Hostile inputs, ja: 悪意のある入力}
description: {en: Every kind of step over the alert's labels., ja: アラートのラベルを使うすべての種類の手順。}
match:
  alertname: HostileInput
expects: [namespace, pod, deployment, node]
scale: {min: 1, max: 5}
steps:
  - id: pod-logs
    title: {en: Pod logs, ja: Pod のログ}
    text: {en: Logs., ja: ログ。}
    action: {type: k8s.logs, params: {namespace: "{{ labels.namespace }}", pod: "{{ labels.pod }}"}}
  - id: pod-events
    title: {en: Pod events, ja: Pod のイベント}
    text: {en: Events., ja: イベント。}
    action: {type: k8s.events, params: {namespace: "{{ labels.namespace }}", kind: Pod, name: "{{ labels.pod }}"}}
  - id: deployment-pods
    title: {en: Pods of the deployment, ja: Deployment の Pod}
    text: {en: Pods., ja: Pod。}
    action: {type: k8s.pods, params: {namespace: "{{ labels.namespace }}", selector: "app={{ labels.deployment }}"}}
  - id: deployment-status
    title: {en: Deployment status, ja: Deployment の状態}
    text: {en: Status., ja: 状態。}
    action: {type: k8s.deployment, params: {namespace: "{{ labels.namespace }}", deployment: "{{ labels.deployment }}"}}
  - id: delete-pod
    title: {en: Delete the pod, ja: Pod の削除}
    text: {en: Delete., ja: 削除。}
    action: {type: k8s.delete_pod, params: {namespace: "{{ labels.namespace }}", pod: "{{ labels.pod }}"}}
  - id: restart
    title: {en: Restart, ja: 再起動}
    text: {en: Restart., ja: 再起動。}
    action:
      type: k8s.rollout_restart
      params: {namespace: "{{ labels.namespace }}", deployment: "{{ labels.deployment }}"}
  - id: rollback
    title: {en: Roll back, ja: ロールバック}
    text: {en: Roll back., ja: ロールバック。}
    action:
      type: k8s.rollout_undo
      params: {namespace: "{{ labels.namespace }}", deployment: "{{ labels.deployment }}"}
  - id: scale
    title: {en: Scale, ja: スケール}
    text: {en: Scale., ja: スケール。}
    action:
      type: k8s.scale
      params: {namespace: "{{ labels.namespace }}", deployment: "{{ labels.deployment }}", replicas: 2}
  - id: cordon
    title: {en: Cordon the node, ja: ノードの cordon}
    text: {en: Cordon., ja: cordon。}
    action: {type: k8s.cordon, params: {node: "{{ labels.node }}"}}
  - id: uncordon
    title: {en: Uncordon the node, ja: ノードの uncordon}
    text: {en: Uncordon., ja: uncordon。}
    action: {type: k8s.uncordon, params: {node: "{{ labels.node }}"}}
"""

BENIGN = {"namespace": "prod", "deployment": "api", "pod": "api-7d9f-x2", "node": "worker-1"}
USES = {  # step id -> the labels its parameters template
    "pod-logs": {"namespace", "pod"}, "pod-events": {"namespace", "pod"},
    "deployment-pods": {"namespace", "deployment"}, "deployment-status": {"namespace", "deployment"},
    "delete-pod": {"namespace", "pod"}, "restart": {"namespace", "deployment"},
    "rollback": {"namespace", "deployment"}, "scale": {"namespace", "deployment"},
    "cordon": {"node"}, "uncordon": {"node"},
}

HOSTILE = [
    "; rm -rf /", "../", "$(id)", "`id`", "%2e%2e/", "prod\nkube-system",
    "\u0430pi",  # CYRILLIC SMALL LETTER A, then "pi"
    "\uff50\uff52\uff4f\uff44",  # FULLWIDTH "prod"
    "a" * 300, "", "*",
    "<!channel>", "api\n", "worker-1\n",  # Slack markup; a trailing newline (a `$` regex lets it through)
]
# `kube-system` is refused where an allow-list applies (the namespace, the node); as a pod or a
# deployment it is a valid name inside the allow-listed namespace, which is by design.
CASES = [(label, value) for label in BENIGN for value in HOSTILE] + [("namespace", "kube-system"),
                                                                      ("node", "kube-system")]

_keys = itertools.count()


# -- one bot for the module -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    fake.start()
    fake.add_user("U0ALICE", "alice@example.com", "alice")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def kubernetes() -> Iterator[FakeKubernetes]:
    with FakeKubernetes() as fake:
        fake.add_deployment("prod", "api", labels={"app": "api"})
        fake.add_pod("prod", "api-7d9f-x2", labels={"app": "api"}, logs="ready\n")
        fake.add_node("worker-1")
        yield fake


class World:
    """The module's bot and fakes, with a short repr (hypothesis prints its arguments)."""

    def __init__(self, bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
        self.bot, self.slack, self.kubernetes = bot, slack, kubernetes

    def __repr__(self) -> str:
        return "World(bot, slack, kubernetes)"


@pytest.fixture(scope="module")
def world(bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> World:
    return World(bot, slack, kubernetes)


@pytest.fixture(scope="module")
def bot(slack: FakeSlack, kubernetes: FakeKubernetes, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[RunningBot]:
    from bot.config import OncallConfig

    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "runbooks").mkdir()
    (tmp / "runbooks" / "hostile-inputs.yaml").write_text(RUNBOOK, encoding="utf-8")
    config = OncallConfig.model_validate({
        "channels": {"announce": "C0INCIDENTS"},
        "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE"]}],
        "runbooks": {"namespaces": ["prod"], "nodes": ["worker-*"]},
        # Hundreds of incidents in a minute: storm mode off, or most would join one storm.
        "storm": {"enabled": False},
    })
    settings = make_settings(f"sqlite:///{tmp / 'oncall.db'}", slack, config,
                             kubeconfig=str(kubernetes.kubeconfig(tmp / "kubeconfig")),
                             runbooks_path=str(tmp / "runbooks"))
    running = start_bot(settings)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


# -- helpers ----------------------------------------------------------------------------------------

def open_incident(bot: RunningBot, labels: dict[str, str]) -> Incident:
    key = next(_keys)
    return open_with_card(bot, group(alert("HostileInput", labels=labels),
                                     group_key=f'{{}}:{{alertname="HostileInput",k="{key}"}}'))


def posted_steps(bot: RunningBot, incident: Incident) -> list[RunbookStep]:
    def rows() -> list[RunbookStep]:
        with bot.services.db.read() as session:
            return list(session.scalars(select(RunbookStep).where(RunbookStep.incident_id == incident.id)
                                        .order_by(RunbookStep.step_index)))

    return wait_for(lambda: (found := rows()) and all(r.message_ts for r in found) and found,
                    what="the runbook to be posted")


def click(bot: RunningBot, slack: FakeSlack, step: RunbookStep) -> str:
    """A signed click on the step's button as U0ALICE; the response_url's path, to find the answer by."""
    url = slack.response_url()
    body = block_actions(f"runbook_step:{step.step_index}", step.token, user="U0ALICE",
                         channel=step.message_channel or "", response_url=url,
                         message={"type": "message", "ts": step.message_ts, "text": "", "blocks": []})
    assert post_to_slack_events(bot.url, body).status_code == 200
    return "/" + url.split("/", 3)[3]


def answer(slack: FakeSlack, path: str) -> str:
    [text] = wait_for(lambda: [m["text"] for p, m in list(slack.responses) if p == path], what="the answer")
    return str(text)


def runbook_blocks(slack: FakeSlack, incident: Incident) -> list[dict[str, Any]]:
    messages: list[Message] = [m for m in slack.messages(incident.channel_id)
                               if "runbook_step_" in json.dumps(m.blocks)]
    return [block for m in messages for block in m.blocks]


def block(blocks: list[dict[str, Any]], block_id: str) -> dict[str, Any]:
    return next(b for b in blocks if b.get("block_id") == block_id)


def approval_rows(bot: RunningBot, incident: Incident) -> list[ApprovalRequest]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(ApprovalRequest).where(ApprovalRequest.incident_id == incident.id)))


def timeline_kinds(bot: RunningBot, incident: Incident) -> list[str]:
    with bot.services.db.read() as session:
        return [e.kind for e in session.scalars(select(TimelineEntry)
                                                .where(TimelineEntry.incident_id == incident.id))]


def request_text(request: RecordedRequest) -> str:
    """What the API server read from a request: path, query and body, percent-decoding undone."""
    body = request.body if isinstance(request.body, str) or request.body is None else \
        json.dumps(request.body, ensure_ascii=False)
    query = "&".join(f"{k}={v}" for k, v in request.query.items())  # parse_qsl decoded the values already
    return unquote(request.path) + "?" + query + "&body=" + unquote(body or "")


_BENIGN_TOKENS = {t.lower() for value in BENIGN.values() for t in re.findall(r"[^\W_]+", value)}


def hostile_parts(value: str) -> set[str]:
    """The pieces of a hostile value that no request may carry: the value itself (as sent, decoded,
    NFKC-folded), each of its words, each non-ASCII character, each sequence that means something
    to a shell, a path or an URL decoder. Words of the benign labels (prod, api) are left out: the
    steps that do not use the hostile value legitimately send those."""
    forms = {value, unquote(value), unicodedata.normalize("NFKC", value)}
    parts = {f for f in forms if f}
    # words of three letters or more (digits alone are in every request: limit=500); where the
    # value itself would land is checked by slot_values
    parts |= {word for form in forms for word in re.findall(r"[^\W_]{3,}", form) if not word.isdigit()}
    parts |= {char for char in value if ord(char) > 127}
    parts |= set(re.findall(r"\.\.|\$\(|`|%[0-9a-fA-F]{2}|[;\n*<>]", value))
    # One URL-structure character alone (the value "/" or "*"'s neighbours) is in every request:
    # where the value would land is checked by slot_values instead.
    return {p for p in parts if p.lower() not in _BENIGN_TOKENS and p not in set("/?&=.-,:_")}


_SLOTS = {  # where each label lands in a request the fake records
    "namespace": [re.compile(r"/namespaces/([^/]+)")],
    "pod": [re.compile(r"/pods/([^/?]+)"), re.compile(r"involvedObject\.name=([^,&]*)")],
    "deployment": [re.compile(r"/deployments/([^/?]+)"), re.compile(r"labelSelector=app=([^,&]*)")],
    "node": [re.compile(r"/nodes/([^/?]+)")],
}


def slot_values(request: RecordedRequest) -> dict[str, set[str]]:
    text = request_text(request)
    return {label: {m[1] for pattern in patterns for m in pattern.finditer(text)}
            for label, patterns in _SLOTS.items()}


def uses_value(step_id: str, label: str) -> bool:
    return label in USES[step_id]


# -- the check, end to end --------------------------------------------------------------------------

def assert_never_reaches_kubernetes(bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes,
                                    label: str, value: str) -> dict[str, str]:
    """The whole journey for one hostile value in one label; the disabled steps' reasons by step id."""
    first_request = len(kubernetes.requests_for())
    incident = open_incident(bot, {**BENIGN, label: value})
    rows = posted_steps(bot, incident)
    assert {r.step_id for r in rows} == set(USES), "the runbook was posted with every step"
    blocks = runbook_blocks(slack, incident)
    shown = json.dumps(blocks, ensure_ascii=False)
    assert "<!channel>" not in shown, "Slack markup from a label reached the runbook message"
    reasons: dict[str, str] = {}

    # Every step that templates the hostile label is disabled, says why, and has no button.
    for row in rows:
        section = block(blocks, f"runbook_step_{row.step_index}")
        context_text = block(blocks, f"runbook_step_{row.step_index}_context")["elements"][0]["text"]
        if not uses_value(row.step_id, label):
            assert row.disabled_reason is None, (row.step_id, row.disabled_reason)
            assert "accessory" in section, f"{row.step_id} (not using {label}) lost its button"
            continue
        assert row.disabled_reason, f"{row.step_id} is enabled with {label}={value!r}: {row.params}"
        assert row.params == {}, "no parameters are stored for a disabled step"
        assert "accessory" not in section, f"{row.step_id} has a button"
        assert f":no_entry_sign: Disabled: {escape(row.disabled_reason)}" in context_text
        # Escaped: no Slack markup from the value survives (<!channel>, <@U…>, &…;).
        assert "<" not in context_text and ">" not in context_text
        assert not re.search(r"&(?!amp;|lt;|gt;)", context_text)
        reasons[row.step_id] = row.disabled_reason

    # A forged click on each disabled step (the token replayed) is refused, and nothing is asked.
    for row in rows:
        if row.step_id in reasons:
            text = answer(slack, click(bot, slack, row))
            assert text == f"This step is disabled: {escape(reasons[row.step_id])}"
    # The steps that do not use the value run, so the request log below is not vacuous.
    clicked = [r for r in rows if r.step_id not in reasons and r.kind == "diagnostic"]
    for row in clicked:
        click(bot, slack, row)
    wait_for(lambda: timeline_kinds(bot, incident).count("diagnostic") == len(clicked), what="the diagnostics")
    time.sleep(0.1)  # anything a refused click had queued would have run by now
    kinds = timeline_kinds(bot, incident)
    assert kinds.count("diagnostic") == len(clicked)
    assert "approval_requested" not in kinds and "remediation" not in kinds
    assert approval_rows(bot, incident) == [], "an approval request was created for a disabled step"

    # The Kubernetes fake: only reads, none of them about the hostile value.
    requests = kubernetes.requests_for()[first_request:]
    assert len(requests) >= len(clicked)
    if not clicked:  # a hostile namespace disables every diagnostic: nothing at all may be asked
        assert requests == [], [f"{r.method} {r.path}" for r in requests]
    assert [r for r in requests if r.method != "GET" or "dryRun" in r.query] == [], "a dry run or a write"
    parts = hostile_parts(value)
    for request in requests:
        text = request_text(request)
        assert not [p for p in parts if p in text], f"{request.method} {text!r} carries part of {value!r}"
        slots = slot_values(request)
        assert not slots[label] or slots[label] == {BENIGN[label]}, f"{label} reached {request.path}"
        assert all(found <= {BENIGN[other]} for other, found in slots.items()), request.path
    return reasons


@pytest.mark.parametrize(("label", "value"), CASES, ids=[f"{label}={value!r}"[:60] for label, value in CASES])
def test_a_hostile_label_value_disables_every_step_using_it_and_reaches_nothing(
        bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes, label: str, value: str) -> None:
    reasons = assert_never_reaches_kubernetes(bot, slack, kubernetes, label, value)
    expected = {step for step, labels in USES.items() if label in labels}
    assert set(reasons) == expected
    for step, reason in reasons.items():
        if value == "":  # an empty label is an absent one (Prometheus), whatever the parameter
            assert f"the alert has no label '{label}'" in reason, reason
        elif label == "node" and value == "kube-system":
            assert "not in the node allow-list" in reason, reason
        elif label == "namespace" and value == "kube-system":
            assert "not in the allow-list" in reason, reason
        elif step == "deployment-pods" and label == "deployment":
            assert "cannot go into a label selector" in reason, reason
        else:
            assert "is not an RFC 1123" in reason, reason


def test_a_valid_value_outside_an_allow_list_is_named_in_the_reason(
        bot: RunningBot, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    reasons = assert_never_reaches_kubernetes(bot, slack, kubernetes, "namespace", "kube-system")
    assert all("'kube-system' is not in the allow-list (allowed: prod)" in r for r in reasons.values())


# -- property: any pod name over a hostile alphabet --------------------------------------------------

_ALPHABET = st.sampled_from([
    "a", "z", "0", "9", "-", ".", "/", "\\", ";", " ", "$", "(", ")", "`", "%", "2e", "2f", "\n", "\r", "\t", "*",
    "?", "&", "|", "<", ">", "'", '"', "{", "}", "=", ",", "#", "~", "A", "\u0430", "\uff50", "\u200b", "\u0131",
    "\u2024", "\u2215", "\ufffd", "..",
])
_NOT_A_NAME = ["/", "\\", ";", " ", "$", "(", "`", "%", "\n", "*", "&", "<", "A", "\u0430", "\uff50", "\u200b",
               "\u2215", "=", ",", "#", ".."]


@given(st.tuples(st.lists(_ALPHABET, max_size=12), st.sampled_from(_NOT_A_NAME), st.lists(_ALPHABET, max_size=12))
       .map(lambda t: "".join(t[0]) + t[1] + "".join(t[2])))
@settings(max_examples=12, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_pod_name_over_a_hostile_alphabet_never_reaches_kubernetes(world: World, pod: str) -> None:
    reasons = assert_never_reaches_kubernetes(world.bot, world.slack, world.kubernetes, "pod", pod)
    assert set(reasons) == {"pod-logs", "pod-events", "delete-pod"}
