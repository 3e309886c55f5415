"""Benchmark: timer lateness, and deadline → page delivered against the PagerDuty fake.

    .venv/bin/python -m bench.timers [--database sqlite|postgres|both] [--pending 10000] [--due 1000]
                                     [--pages 50]

(a) Lateness: `--pending` timers in the table, of which `--due` come due spread over the next
    20 s (the rest hours away); the runner (production settings: poll ≤ 1 s, batches of 100)
    fires them and each records how late it was. Then a burst: `--due` timers all overdue at
    once, as after downtime. Reminder timers, whose effect writes a Slack job and the next
    reminder, so the table stays at its size.
(b) Deadline → page delivered: the whole bot with the PagerDuty and Slack fakes, P1 paging one
    minute after opening; `--pages` incidents opened 5 a second, so deadlines spread over time.
    From each page timer's due time to PagerDuty's 202 for the trigger (paging.delivered_at).
    Real clock, so this part takes a little over a minute.

Prints p50/p99/max. Not part of the test suite: the figures go in notes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import insert, select

from bot.config import OncallConfig
from bot.db import Database
from bot.escalation import Paging, Timer, TimerStatus
from bot.models import Incident, utcnow
from bot.timers import TimerRunner
from tests.alerts import alert, group
from tests.conftest import _postgres_database, make_settings, start_bot
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack

ROUTING_KEY = "BENCHR0UTINGKEY00000000000000000"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {percentile(ms, 50):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)})"


@contextmanager
def database_url(kind: str) -> Iterator[str]:
    if kind == "postgres":
        yield from _postgres_database()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"


# -- (a) lateness -----------------------------------------------------------------------------

def seed(db: Database, pending: int, due: int, incidents: int = 1000, *, burst: bool = False) -> list[int]:
    now = utcnow()
    with db.session() as session:
        rows = [Incident(title=f"bench {i}", alertname="Bench", severity="P1", labels={"service": "api"},
                         created_at=now, updated_at=now) for i in range(incidents)]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    timers: list[dict[str, Any]] = []
    for n in range(pending):
        if n < due:
            when = now - timedelta(seconds=5) if burst else now + timedelta(seconds=2 + 18 * n / due)
        else:
            when = now + timedelta(hours=1 + 23 * random.random())
        timers.append({"incident_id": ids[n % incidents], "kind": "reminder", "due_at": when, "payload": {"minutes": 15},
                       "status": TimerStatus.PENDING, "attempts": 0, "created_at": now})
    with db.session() as session:
        for start in range(0, len(timers), 1000):
            session.execute(insert(Timer), timers[start:start + 1000])
    return ids


async def measure_lateness(db: Database, due: int) -> list[float]:
    runner = TimerRunner(db, OncallConfig())
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 120
    while True:
        await asyncio.sleep(0.5)
        with db.read() as session:
            late = [t.lateness_seconds for t in session.scalars(select(Timer).where(Timer.status == TimerStatus.FIRED))]
        if len(late) >= due or time.monotonic() > deadline:
            break
    runner.stop()
    await task
    return [value or 0.0 for value in late][:due]


def lateness(kind: str, pending: int, due: int) -> None:
    for burst in (False, True):
        with database_url(kind) as url:
            db = Database(url)
            db.migrate()
            seed(db, pending, due, burst=burst)
            with db.read() as session:
                count = len(list(session.scalars(select(Timer.id).where(Timer.status == TimerStatus.PENDING))))
            late = asyncio.run(measure_lateness(db, due))
            db.dispose()
        if burst:  # all were 5 s overdue before the runner started: what matters is the catch-up
            first = min(late)
            print(f"  {kind:8} {count} pending, {due} overdue at once: fired after the first within  "
                  f"{summary([v - first for v in late])}")
        else:
            print(f"  {kind:8} {count} pending, {due} due over 20 s: lateness  {summary(late)}")


# -- (b) deadline → page delivered ------------------------------------------------------------

def pages(kind: str, count: int) -> None:
    with ExitStack() as stack:
        url = stack.enter_context(database_url(kind))
        pagerduty = stack.enter_context(FakePagerDuty())
        pagerduty.add_user("PBOB", "Bob", "bob@example.com")
        pagerduty.add_user("PBOT", "Bot", "bot@example.com")
        pagerduty.add_escalation_policy("PEP1", [["PBOB"]])
        pagerduty.add_service("PSVC1", ROUTING_KEY, "PEP1")
        slack = stack.enter_context(FakeSlack())
        slack.add_user("U0BOB", "bob@example.com", "bob")
        config = OncallConfig.model_validate({"channels": {"announce": "C0INCIDENTS"},
                                              "pagerduty": {"escalation_policy": "PEP1"},
                                              "escalation": {"P1": {"page_after_minutes": 1}}})
        settings = make_settings(url, slack, config, pagerduty_routing_key=ROUTING_KEY,
                                 pagerduty_api_token=pagerduty.api_token, pagerduty_events_url=pagerduty.base_url,
                                 pagerduty_api_url=pagerduty.base_url, pagerduty_ca_file=pagerduty.ca_file,
                                 pagerduty_from_email="bot@example.com")
        bot = start_bot(settings)
        stack.callback(bot.stop)
        for i in range(count):
            started = time.perf_counter()
            payload = group(alert(f"Bench{i}"), group_key=f'{{}}:{{alertname="Bench{i}"}}')
            assert bot.post_alerts(payload).status_code == 200
            time.sleep(max(0.0, 0.2 - (time.perf_counter() - started)))
        print(f"  waiting for {count} deadlines (one minute after opening)…", file=sys.stderr)
        deadline = time.monotonic() + 180
        while True:
            with bot.services.db.read() as session:
                delivered = [p for p in session.scalars(select(Paging)) if p.delivery == "delivered"]
                due = {t.incident_id: t.due_at for t in session.scalars(select(Timer).where(Timer.kind == "page"))}
            if len(delivered) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        figures = [(p.delivered_at - due[p.incident_id]).total_seconds() for p in delivered]  # type: ignore[operator]
        print(f"  {kind:8} deadline → page delivered (PagerDuty 202)  {summary(figures)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=50)
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    print("timer lateness:")
    for kind in kinds:
        lateness(kind, args.pending, args.due)
    print("deadline → page delivered:")
    for kind in kinds:
        pages(kind, args.pages)


if __name__ == "__main__":
    main()
