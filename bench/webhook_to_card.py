"""Benchmark: Alertmanager webhook → incident card in Slack, against the Slack fake.

    .venv/bin/python -m bench.webhook_to_card [--groups 100] [--database sqlite|postgres]

`--rate 5` paces the groups (5 a second); without it they go back to back, a burst far
beyond what Slack's own rate limits (conversations.create: ~20/min) would let through.

Prints p50/p99 of (a) the webhook's HTTP response time, the time Alertmanager waits, and
(b) webhook sent → card posted (channel created, topic set, responders invited, card posted):
from the moment the bench sends the request to the moment the Slack fake receives the
chat.postMessage that became the incident's card (stamped by the fake). The outbox polls at
its production interval (start_bot sets the tests' 50 ms). Not part of the test suite: figures
go in notes.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench import bench_config
from bot.models import Incident, utcnow
from bot.outbox import Outbox
from tests.alerts import alert, group
from tests.conftest import _postgres_database, make_settings, start_bot
from tests.fakes.slack import FakeSlack


class TimedSlack(FakeSlack):
    """The Slack fake, stamping when each posted message's request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.posted_at: dict[tuple[str, str], datetime] = {}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        arrived = utcnow()
        answer = super()._m_chat_postMessage(args)
        self.posted_at[(answer["channel"], answer["ts"])] = arrived
        return answer


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(groups: int, database: str, rate: float) -> dict[str, float]:
    with ExitStack() as stack:
        if database == "postgres":
            url = stack.enter_context(_contextmanager(_postgres_database()))
        else:
            url = f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'bench.db'}"
        slack = TimedSlack()
        slack.start()
        stack.callback(slack.stop)
        for user, email in (("U0ALICE", "alice@example.com"), ("U0BOB", "bob@example.com")):
            slack.add_user(user, email, user.lower())
        slack.add_usergroup("S0SRE", ["U0BOB"])
        bot = start_bot(make_settings(url, slack, bench_config()))
        stack.callback(bot.services.db.dispose)
        stack.callback(bot.stop)
        bot.services.outbox.poll_seconds = inspect.signature(Outbox).parameters["poll_seconds"].default

        sent_at: dict[int, datetime] = {}

        response_ms: list[float] = []
        with bot.client() as http:
            for i in range(groups):
                payload = group(alert(f"Bench{i}", labels={"instance": f"api-{i}"}),
                                group_key=f'{{}}:{{alertname="Bench{i}"}}')
                sent = utcnow()
                started = time.perf_counter()
                token = bot.services.settings.alertmanager_webhook_token
                reply = http.post("/alertmanager", json=payload, headers={"Authorization": f"Bearer {token}"})
                response_ms.append((time.perf_counter() - started) * 1000)
                if rate:
                    time.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
                assert reply.status_code == 200, reply.text
                sent_at[reply.json()["incident_id"]] = sent
                if i % 25 == 24:
                    print(f"  posted {i + 1}/{groups} groups", file=sys.stderr)
        deadline = time.monotonic() + 120
        while True:
            with bot.services.db.session() as session:
                rows = list(session.scalars(select(Incident)))
            if len(rows) == groups and all(r.card_ts for r in rows):
                break
            if time.monotonic() > deadline:
                raise SystemExit("cards did not all arrive within 120 s")
            time.sleep(0.05)
        assert sorted(sent_at) == sorted(r.id for r in rows), "one incident per group"
        with slack._lock:
            posted_at = dict(slack.posted_at)
        to_card_ms = [(posted_at[(r.card_channel_id, r.card_ts)] - sent_at[r.id]).total_seconds() * 1000  # type: ignore[index]
                      for r in rows]
        return {
            "response_p50_ms": percentile(response_ms, 50), "response_p99_ms": percentile(response_ms, 99),
            "card_p50_ms": percentile(to_card_ms, 50), "card_p99_ms": percentile(to_card_ms, 99),
            "card_mean_ms": statistics.fmean(to_card_ms),
        }


def _contextmanager(generator):  # type: ignore[no-untyped-def]
    from contextlib import contextmanager

    @contextmanager
    def wrapped():  # type: ignore[no-untyped-def]
        yield from generator
    return wrapped()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rate", type=float, default=0, help="groups per second; 0 = one after another")
    args = parser.parse_args()
    figures = run(args.groups, args.database, args.rate)
    pace = f"{args.rate:g}/s" if args.rate else "back to back"
    print(f"webhook→card over {args.groups} groups on {args.database}, {pace}:")
    for name, value in figures.items():
        print(f"  {name:18} {value:8.1f}")


if __name__ == "__main__":
    main()
