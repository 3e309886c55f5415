"""Benchmark: slash-command acks, against the Slack fake.

    .venv/bin/python -m bench.slash_commands [--requests 100] [--database sqlite|postgres] [--open 30]

Opens `--open` incidents (the first one's channel is where the incident commands are typed),
then sends each command `--requests` times, one after the other, as a signed slash-command
request, and prints per command p50/p99/mean in ms of the time from the request sent to Slack's
HTTP response (the ack Slack needs within 3 s; an answer ready within 2 s travels in it). The
commands: `/incident status`, `/incident note …` (a write: the timeline and a card refresh),
`/incident timeline`, `/incident list` (over the open incidents), `/oncall` (from config).
Every answer is checked to be the command's own (a help text or an error would fail the bench).
Not part of the test suite: figures go in notes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench import NO_STORM, wait_until
from bench.webhook_to_card import _contextmanager, percentile
from bot.config import OncallConfig
from bot.models import Incident
from tests.alerts import alert, group
from tests.conftest import _postgres_database, make_settings, start_bot
from tests.fakes.slack import FakeSlack
from tests.slack_requests import signed_headers, slash_command

USER = "U0ALICE"
# (command, text, what its answer must contain)
COMMANDS = (
    ("/incident", "status", "state *"),
    ("/incident", "note the bench was here", "added to the timeline"),
    ("/incident", "timeline", "opened"),
    ("/incident", "list", "open incident(s)"),
    ("/oncall", "", "on call"),
)


def _answer(reply: httpx.Response) -> str:
    return reply.text if "json" not in reply.headers.get("content-type", "") else str(reply.json())


def run(requests: int, database: str, opened: int) -> dict[str, dict[str, float]]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        url = stack.enter_context(_contextmanager(_postgres_database())) if database == "postgres" \
            else f"sqlite:///{tmp / 'bench.db'}"
        slack = stack.enter_context(FakeSlack())
        slack.add_user(USER, "alice@example.com", "alice")
        config = OncallConfig.model_validate({
            "channels": {"announce": "C0INCIDENTS", "dedicated_for": ["P1", "P2", "P3", "P4"]},
            "responders": [{"match": {}, "invite": [USER]}], **NO_STORM})
        bot = start_bot(make_settings(url, slack, config))
        stack.callback(bot.services.db.dispose)
        stack.callback(bot.stop)
        for n in range(opened):
            payload = group(alert("HighLatency", labels={"severity": "warning", "instance": f"i{n}"}),
                            group_key=f'{{}}:{{alertname="HighLatency",instance="i{n}"}}')
            assert bot.post_alerts(payload).status_code == 200

        def channel() -> str | None:
            with bot.services.db.read() as session:
                first = session.get(Incident, 1)
                return first.channel_id if first and first.card_ts else None

        where = wait_until(channel, "the first incident's channel and card", timeout=60 + opened)
        print(f"  {opened} incidents open", file=sys.stderr)
        http = stack.enter_context(httpx.Client(base_url=bot.url, timeout=10))  # one connection, as Slack keeps
        figures: dict[str, dict[str, float]] = {}
        for command, text, expected in COMMANDS:
            times: list[float] = []
            for _ in range(requests):
                body = slash_command(command, text, user=USER, channel=where, response_url=slack.response_url())
                started = time.perf_counter()
                reply = http.post("/slack/events", content=body, headers=signed_headers(body))
                times.append((time.perf_counter() - started) * 1000)
                assert reply.status_code == 200, reply.text
                if expected.lower() not in _answer(reply).lower():
                    raise SystemExit(f"{command} {text}: unexpected answer {_answer(reply)[:300]!r}")
            figures[f"{command} {text.split()[0] if text else ''}".strip()] = {
                "p50": percentile(times, 50), "p99": percentile(times, 99), "mean": sum(times) / len(times)}
            print(f"  {command} {text}: done", file=sys.stderr)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--open", type=int, default=30, help="open incidents (what /incident list shows)")
    args = parser.parse_args()
    figures = run(args.requests, args.database, args.open)
    print(f"slash-command acks ({args.requests} requests each, {args.database}, {args.open} open incidents), ms:")
    for name, values in figures.items():
        print(f"  {name:20s} p50 {values['p50']:7.1f}   p99 {values['p99']:7.1f}   mean {values['mean']:7.1f}")


if __name__ == "__main__":
    main()
