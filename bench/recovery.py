"""Benchmark: how fast the bot catches up after Slack comes back, and after a crash.

    .venv/bin/python -m bench.recovery [--groups 50] [--outage 60] [--database sqlite|postgres]

(a) Outage: Slack answers 503 for `--outage` seconds while `--groups` alert groups arrive at its
    start; then it comes back. Prints the time from Slack's return to the last card posted
    (the backlog drained), and p50 over the cards. The outbox polls at its production interval.
(b) Crash: the bot process (`oncall-bot serve`, production lease) is SIGKILLed while the card's
    chat.postMessage is in flight, then started again. Prints the time from the new process
    serving to the card job done (the card found, not posted twice), with the production lease.
Not part of the test suite: figures go in notes.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from sqlalchemy import select

from bench import bench_config
from bench.webhook_to_card import _contextmanager, percentile
from bot.models import Incident, Job, JobStatus
from bot.outbox import Outbox
from tests.alerts import alert, group
from tests.conftest import _postgres_database, make_settings, start_bot
from tests.fakes.slack import FakeSlack


def _database(stack: ExitStack, database: str) -> str:
    if database == "postgres":
        return str(stack.enter_context(_contextmanager(_postgres_database())))
    return f"sqlite:///{Path(stack.enter_context(tempfile.TemporaryDirectory())) / 'bench.db'}"


def _slack(stack: ExitStack) -> FakeSlack:
    slack = FakeSlack()
    slack.start()
    stack.callback(slack.stop)
    slack.add_user("U0ALICE", "alice@example.com", "alice")
    slack.add_usergroup("S0SRE", ["U0ALICE"])
    return slack


def outage(groups: int, seconds: float, database: str) -> dict[str, float]:
    with ExitStack() as stack:
        slack = _slack(stack)
        bot = start_bot(make_settings(_database(stack, database), slack, bench_config()))
        stack.callback(bot.services.db.dispose)
        stack.callback(bot.stop)
        bot.services.outbox.poll_seconds = inspect.signature(Outbox).parameters["poll_seconds"].default
        slack.set_down(True)
        for i in range(groups):
            bot.post_alerts(group(alert(f"Outage{i}"), group_key=f'{{}}:{{alertname="Outage{i}"}}'))
        print(f"  Slack down for {seconds:g} s with {groups} groups waiting", file=sys.stderr)
        time.sleep(seconds)
        slack.set_down(False)
        back = time.monotonic()
        posted: dict[int, float] = {}
        while len(posted) < groups:
            with bot.services.db.read() as session:
                for row in session.scalars(select(Incident).where(Incident.card_ts.is_not(None))):  # type: ignore[union-attr]
                    posted.setdefault(row.id or 0, time.monotonic() - back)
            if time.monotonic() - back > 120:
                raise SystemExit("the backlog did not drain within 120 s")
            time.sleep(0.05)
        drained = sorted(posted.values())
        return {"drained_s": drained[-1], "card_p50_s": percentile(drained, 50)}


def crash(database: str) -> dict[str, float]:
    from tests.test_crash_safety import start_process

    with ExitStack() as stack:
        slack = _slack(stack)
        url = _database(stack, database)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        hold = slack.hold("chat.postMessage", match=lambda args: args.get("channel") != "C0INCIDENTS")
        first = start_process(url, slack, tmp, 0, lease_seconds=None)
        stack.callback(first.stop)
        first.post_alerts(group())
        if not hold.reached.wait(timeout=30):
            raise SystemExit("the card was never posted")
        first.kill()
        hold.release()
        second = start_process(url, slack, tmp, 1, lease_seconds=None)
        stack.callback(second.stop)
        serving = time.monotonic()
        from bot.db import Database

        db = Database(url)
        stack.callback(db.dispose)
        while True:
            with db.read() as session:
                job = session.scalars(select(Job).where(Job.kind == "slack.open_incident")).one()
            if job.status == JobStatus.DONE:
                break
            if time.monotonic() - serving > 120:
                raise SystemExit("the card job did not finish within 120 s")
            time.sleep(0.05)
        cards = len(slack.tagged("card"))
        return {"resumed_s": time.monotonic() - serving, "cards": float(cards)}


def main() -> None:
    logging.getLogger("bot.outbox").setLevel(logging.ERROR)  # one warning per failed attempt: thousands
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds Slack is down")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    print(f"after a {args.outage:g} s Slack outage, {args.groups} groups, {args.database}:")
    for name, value in outage(args.groups, args.outage, args.database).items():
        print(f"  {name:12} {value:8.2f}")
    print(f"after a SIGKILL mid chat.postMessage, production lease, {args.database}:")
    for name, value in crash(args.database).items():
        print(f"  {name:12} {value:8.2f}")


if __name__ == "__main__":
    main()
