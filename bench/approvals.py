"""Benchmark: a remediation behind approval, against the Slack and Kubernetes fakes.

    .venv/bin/python -m bench.approvals [--requests 100] [--database sqlite|postgres]

Opens `--requests` PodRestartLoop incidents up front, each for a pod of its own (a remediation
runs once: the pod it deletes is gone), and waits for their runbooks. Then, one request after
the other, alice clicks the "Delete the pod" remediation step of the next incident (a signed
`block_actions` request) and, once the approval message is posted and recorded, bob clicks its
Approve button (the button's value, the request's token). Prints p50/p99/mean in ms of
(a) click → request posted: the click sent → the Slack fake receiving the chat.postMessage of
    the approval request in the step's thread, with the server dry run's outcome (request stored,
    outbox, dry-run DELETE against the Kubernetes fake, the post);
(b) approve → executed: the Approve click sent → the Kubernetes fake receiving the real
    (non-dry-run) DELETE of the pod (Bolt, the approver check against the channel's members, the
    compare-and-set, the outbox, the action);
(c) approve → redrawn: the same click → the Slack fake receiving the chat.update that redraws
    the approval message with the result (after the result is posted in the thread).
Times are the fakes' own stamps of each request's arrival (time.monotonic, the bench's clock).
One incident per request keeps `remediations.budget_per_incident` at its default (3); the
bench's config raises `remediations.budget_per_day` (default 20) to `--requests` when above it.
The outbox polls at its production interval (start_bot sets the tests' 50 ms), woken by each commit.
Not part of the test suite: figures go in notes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlmodel import col

from bench import NO_STORM, wait_until
from bench.webhook_to_card import _contextmanager, percentile
from bot.config import OncallConfig
from bot.models import ApprovalRequest, Incident, RunbookStep
from bot.outbox import Outbox
from tests.alerts import alert, group
from tests.conftest import RunningBot, _postgres_database, make_settings, start_bot
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import Call, FakeSlack
from tests.slack_requests import block_actions, signed_headers

REQUESTER, APPROVER = "U0ALICE", "U0BOB"


@dataclass(frozen=True)
class Arrival:
    at: float  # time.monotonic() when the request reached the fake
    method: str
    path: str
    dry_run: bool


class TimedKubernetes(FakeKubernetes):
    """The Kubernetes fake, stamping when each request arrived (before it is served)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[Arrival] = []
        self._arrivals_lock = threading.Lock()

    def _serve(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               raw: bytes) -> tuple[int, str, bytes]:
        arrived = time.monotonic()
        with self._arrivals_lock:
            self.arrivals.append(Arrival(arrived, method, path, query.get("dryRun") == "All"))
        return super()._serve(method, path, query, headers, raw)

    def arrived(self, method: str, path: str, *, dry_run: bool) -> list[Arrival]:
        with self._arrivals_lock:
            return [a for a in self.arrivals if (a.method, a.path, a.dry_run) == (method, path, dry_run)]




def _pod(n: int) -> str:
    return f"api-7d9f-{n:04d}"


def _calls(slack: FakeSlack, method: str, since: int) -> list[Call]:
    """Calls of `method` the Slack fake answered, from the `since`-th call on."""
    with slack._lock:
        return [c for c in slack.calls[since:] if c.method == method]


def _blocks(call: Call) -> list[dict[str, Any]]:
    raw = call.args.get("blocks") or []
    return json.loads(raw) if isinstance(raw, str) else list(raw)


def _approval_post(slack: FakeSlack, since: int, channel: str, thread_ts: str | None) -> Call | None:
    """The chat.postMessage of an approval request in the step's thread, once Slack answered it."""
    return next((c for c in _calls(slack, "chat.postMessage", since)
                 if c.args.get("channel") == channel and c.args.get("thread_ts") == thread_ts
                 and c.response.get("ok") and "requested approval" in str(c.args.get("text"))), None)


def _redraw(slack: FakeSlack, since: int, ts: str) -> Call | None:
    """The chat.update redrawing the approval message `ts` with the result (executed or failed)."""
    return next((c for c in _calls(slack, "chat.update", since) if c.args.get("ts") == ts
                 and c.response.get("ok") and any(w in json.dumps(_blocks(c)) for w in (", executed", ", failed"))),
                None)


def _approve_value(call: Call) -> str:
    buttons = {e["action_id"]: e["value"] for b in _blocks(call) if b.get("type") == "actions"
               for e in b["elements"]}
    return str(buttons["approval_approve"])


def _open_incidents(bot: RunningBot, requests: int) -> list[tuple[Incident, RunbookStep]]:
    ids = []
    for n in range(requests):
        payload = group(alert("PodRestartLoop", labels={"pod": _pod(n), "deployment": "api"}),
                        group_key=f'{{}}:{{alertname="PodRestartLoop",pod="{_pod(n)}"}}')
        reply = bot.post_alerts(payload)
        assert reply.status_code == 200, reply.text
        ids.append(reply.json()["incident_id"])
    assert len(set(ids)) == requests, "one incident per alert group"

    def posted() -> list[tuple[Incident, RunbookStep]] | None:
        with bot.services.db.read() as session:
            steps = {s.incident_id: s for s in session.scalars(
                select(RunbookStep).where(col(RunbookStep.step_id) == "delete-pod")) if s.message_ts}
            incidents = {i.id: i for i in session.scalars(select(Incident)) if i.channel_id}
        if not all(i in steps and i in incidents for i in ids):
            return None
        return [(incidents[i], steps[i]) for i in ids]

    return wait_until(posted, "the runbooks to be posted", timeout=60 + requests)


def _recorded(bot: RunningBot, token: str) -> ApprovalRequest | None:
    with bot.services.db.read() as session:
        row = session.scalars(select(ApprovalRequest).where(col(ApprovalRequest.token) == token)).first()
        return row if row and row.message_ts else None


def run(requests: int, database: str) -> dict[str, float]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(_contextmanager(_postgres_database())) if database == "postgres" \
            else f"sqlite:///{tmp / 'bench.db'}"
        slack = stack.enter_context(FakeSlack())
        for user in (REQUESTER, APPROVER):
            slack.add_user(user, f"{user[3:].lower()}@example.com", user[3:].lower())
        kube = TimedKubernetes()
        stack.enter_context(kube)
        for n in range(requests):
            kube.add_pod("prod", _pod(n), labels={"app": "api"}, restarts=5, logs="ok\n", previous_logs="crash\n")
        config = OncallConfig.model_validate({
            "channels": {"announce": "C0INCIDENTS"}, "runbooks": {"namespaces": ["prod"]},
            "responders": [{"match": {}, "invite": [REQUESTER, APPROVER]}],
            "remediations": {"budget_per_day": max(requests, 20)}, **NO_STORM})
        bot = start_bot(make_settings(url, slack, config, kubeconfig=str(kube.kubeconfig(tmp / "kubeconfig"))))
        stack.callback(bot.services.db.dispose)
        stack.callback(bot.stop)
        bot.services.outbox.poll_seconds = inspect.signature(Outbox).parameters["poll_seconds"].default

        opened = _open_incidents(bot, requests)
        print(f"  {requests} incidents open, runbooks posted", file=sys.stderr)
        request_ms: list[float] = []
        executed_ms: list[float] = []
        redrawn_ms: list[float] = []
        # One connection, as Slack keeps them (see bench.runbook_click).
        http = stack.enter_context(httpx.Client(base_url=bot.url, timeout=10))
        for n, (incident, step) in enumerate(opened):
            channel = incident.channel_id or ""
            pod = f"/api/v1/namespaces/prod/pods/{_pod(n)}"
            before = len(slack.calls)
            body = block_actions(f"runbook_step:{step.step_index}", step.token, user=REQUESTER, channel=channel,
                                 message={"type": "message", "ts": step.message_ts, "text": "", "blocks": []},
                                 response_url=slack.response_url())
            clicked = time.monotonic()
            reply = http.post("/slack/events", content=body, headers=signed_headers(body))
            assert reply.status_code == 200, reply.text
            posted = wait_until(partial(_approval_post, slack, before, channel, step.message_ts),
                                "the approval message")
            shown = json.dumps(_blocks(posted))
            if "(server dry run)" not in shown or "ok:" not in shown:
                raise SystemExit(f"the approval message does not show a successful dry run: {shown}")
            [dry] = kube.arrived("DELETE", pod, dry_run=True)
            assert clicked < dry.at < posted.at, "the dry run belongs to this request"
            request_ms.append((posted.at - clicked) * 1000)
            ts = str(posted.response["ts"])
            token = _approve_value(posted)
            wait_until(partial(_recorded, bot, token), "the approval message to be recorded")
            assert not kube.arrived("DELETE", pod, dry_run=False), "ran before it was approved"

            before = len(slack.calls)
            body = block_actions("approval_approve", token, user=APPROVER, channel=channel,
                                 message={"type": "message", "ts": ts, "text": "", "blocks": []},
                                 response_url=slack.response_url())
            approved = time.monotonic()
            reply = http.post("/slack/events", content=body, headers=signed_headers(body))
            assert reply.status_code == 200, reply.text
            [real] = wait_until(partial(kube.arrived, "DELETE", pod, dry_run=False), "the real DELETE")
            executed_ms.append((real.at - approved) * 1000)
            redraw = wait_until(partial(_redraw, slack, before, ts), "the redrawn approval message")
            if f"approved by <@{APPROVER}>, executed" not in json.dumps(_blocks(redraw)):
                raise SystemExit(f"the remediation did not succeed: {json.dumps(_blocks(redraw))}")
            redrawn_ms.append((redraw.at - approved) * 1000)
            if n % 25 == 24:
                print(f"  {n + 1}/{requests} requests approved", file=sys.stderr)
        time.sleep(0.3)  # a second execution, if any, would have reached the fake by now
        ran = [len(kube.arrived("DELETE", f"/api/v1/namespaces/prod/pods/{_pod(n)}", dry_run=False))
               for n in range(requests)]
        assert ran == [1] * requests, f"real DELETEs per pod: {ran}"
        figures: dict[str, float] = {}
        for name, values in (("request", request_ms), ("executed", executed_ms), ("redrawn", redrawn_ms)):
            figures |= {f"{name}_p50_ms": percentile(values, 50), f"{name}_p99_ms": percentile(values, 99),
                        f"{name}_mean_ms": statistics.fmean(values)}
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    figures = run(args.requests, args.database)
    print(f"remediation approvals, k8s.delete_pod ({args.requests} requests, {args.database}):")
    print("  request: click → approval message posted; executed: approve → real DELETE; "
          "redrawn: approve → message redrawn")
    for name, value in figures.items():
        print(f"  {name:17s} {value:8.1f}")


if __name__ == "__main__":
    main()
