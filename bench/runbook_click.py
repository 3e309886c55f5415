"""Benchmark: a click on a runbook's `k8s.logs` step, against the Slack and Kubernetes fakes.

    .venv/bin/python -m bench.runbook_click [--clicks 100] [--database sqlite|postgres] [--lines 200]

Opens one PodRestartLoop incident, waits for its runbook, then clicks "Logs of the crashed
container" `--clicks` times, one after the other, as a signed `block_actions` request. Prints
p50/p99 of (a) click → HTTP response (the ack Slack needs within 3 s) and (b) click → the
output message in the step's thread (Bolt, database, outbox, Kubernetes API, chat.postMessage).
The ack includes Bolt's own wait: its async runner polls for the ack every 10 ms.
Not part of the test suite: figures go in notes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from sqlalchemy import select

from bench import wait_until
from bench.webhook_to_card import _contextmanager, percentile
from bot.config import OncallConfig
from bot.models import RunbookStep
from tests.alerts import alert, group
from tests.conftest import _postgres_database, make_settings, start_bot
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack
from tests.slack_requests import block_actions, signed_headers

POD = "api-7d9f-x2"




def run(clicks: int, database: str, lines: int) -> dict[str, float]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(_contextmanager(_postgres_database())) if database == "postgres" \
            else f"sqlite:///{tmp / 'bench.db'}"
        slack = stack.enter_context(FakeSlack())
        slack.add_user("U0ALICE", "alice@example.com", "alice")
        kube = stack.enter_context(FakeKubernetes())
        kube.add_pod("prod", POD, restarts=5, logs="ok\n",
                     previous_logs="".join(f"line {n} before the crash\n" for n in range(lines)))
        config = OncallConfig.model_validate({
            "channels": {"announce": "C0INCIDENTS"}, "runbooks": {"namespaces": ["prod"]},
            "responders": [{"match": {}, "invite": ["U0ALICE"]}]})
        bot = start_bot(make_settings(url, slack, config, kubeconfig=str(kube.kubeconfig(tmp / "kubeconfig"))))
        stack.callback(bot.services.db.dispose)  # after the bot stops (callbacks run last first)
        stack.callback(bot.stop)

        bot.post_alerts(group(alert("PodRestartLoop", labels={"pod": POD, "deployment": "api"})))
        step = wait_until(lambda: _step(bot, "previous-logs"), "the runbook to be posted")
        channel = slack.channels[step.message_channel]
        ack_ms: list[float] = []
        output_ms: list[float] = []
        # One connection, as Slack keeps them: a new httpx client per click would add its own
        # ~20 ms of TLS-context setup to every figure.
        http = stack.enter_context(httpx.Client(base_url=bot.url, timeout=10))
        for n in range(clicks):
            before = len(channel.messages)
            body = block_actions("runbook_step:0", step.token, user="U0ALICE", channel=channel.id,
                                 message={"type": "message", "ts": step.message_ts, "text": "", "blocks": []},
                                 response_url=slack.response_url())
            started = time.perf_counter()
            reply = http.post("/slack/events", content=body, headers=signed_headers(body))
            ack_ms.append((time.perf_counter() - started) * 1000)
            assert reply.status_code == 200, reply.text
            wait_until(lambda before=before: any(m.thread_ts == step.message_ts and "crash" in json.dumps(m.blocks)
                                            for m in channel.messages[before:]), "the output")
            output_ms.append((time.perf_counter() - started) * 1000)
            if n % 25 == 24:
                print(f"  {n + 1}/{clicks} clicks", file=sys.stderr)
        return {"ack_p50_ms": percentile(ack_ms, 50), "ack_p99_ms": percentile(ack_ms, 99),
                "output_p50_ms": percentile(output_ms, 50), "output_p99_ms": percentile(output_ms, 99)}


def _step(bot, step_id: str) -> RunbookStep | None:  # type: ignore[no-untyped-def]
    with bot.services.db.read() as session:
        row = session.scalars(select(RunbookStep).where(RunbookStep.step_id == step_id)).first()
        return row if row and row.message_ts else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clicks", type=int, default=100)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--lines", type=int, default=200, help="log lines the pod's previous container left")
    args = parser.parse_args()
    figures = run(args.clicks, args.database, args.lines)
    print(f"runbook click, k8s.logs ({args.clicks} clicks, {args.database}, {args.lines} log lines):")
    for name, value in figures.items():
        print(f"  {name:15s} {value:8.1f}")


if __name__ == "__main__":
    main()
