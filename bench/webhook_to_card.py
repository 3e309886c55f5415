"""Benchmark: Alertmanager webhook → incident card in Slack, against the Slack fake.

    .venv/bin/python -m bench.webhook_to_card [--groups 100] [--database sqlite|postgres]

`--rate 5` paces the groups (5 a second); without it they go back to back, a burst far
beyond what Slack's own rate limits (conversations.create: ~20/min) would let through.

Prints p50/p99 of (a) the webhook's HTTP response time, the time Alertmanager waits, and
(b) webhook received → card posted (channel created, topic set, responders invited, card
posted), read from the bot's own records. Not part of the test suite: figures go in notes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import select

from bot.models import Incident
from tests.alerts import alert, group
from tests.conftest import _postgres_database, make_settings, start_bot
from tests.fakes.slack import FakeSlack


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def run(groups: int, database: str, rate: float) -> dict[str, float]:
    with ExitStack() as stack:
        if database == "postgres":
            url = stack.enter_context(_contextmanager(_postgres_database()))
        else:
            url = f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'bench.db'}"
        slack = FakeSlack()
        slack.start()
        stack.callback(slack.stop)
        for user, email in (("U0ALICE", "alice@example.com"), ("U0BOB", "bob@example.com")):
            slack.add_user(user, email, user.lower())
        slack.add_usergroup("S0SRE", ["U0BOB"])
        bot = start_bot(make_settings(url, slack))
        stack.callback(bot.stop)

        response_ms: list[float] = []
        with bot.client() as http:
            for i in range(groups):
                payload = group(alert(f"Bench{i}", labels={"instance": f"api-{i}"}),
                                group_key=f'{{}}:{{alertname="Bench{i}"}}')
                started = time.perf_counter()
                reply = http.post("/alertmanager", json=payload,
                                  headers={"Authorization": f"Bearer {bot.services.settings.alertmanager_webhook_token}"})
                response_ms.append((time.perf_counter() - started) * 1000)
                if rate:
                    time.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
                assert reply.status_code == 200, reply.text
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
        to_card_ms = [(r.card_updated_at - r.created_at).total_seconds() * 1000 for r in rows]  # type: ignore[operator]
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
