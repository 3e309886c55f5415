"""Benchmark: timer lateness, and deadline → page delivered against the PagerDuty fake.

    .venv/bin/python -m bench.timers [--database sqlite|postgres|both] [--pending 10000] [--due 1000]
                                     [--pages 100]

(a) Lateness: `--pending` timers in the table, of which `--due` come due spread over the next
    20 s (the rest hours away); the runner (production settings: poll ≤ 1 s, batches of 100)
    fires them. Two figures per timer, both measured: the lateness the runner records when it
    claims the timer (timer.lateness_seconds, what the oncall_timer_lateness_seconds histogram
    shows), and due time → the wall clock right after the transaction that applied the effect
    committed (when the page/reminder job exists for the outbox). Then a burst: `--due` timers
    all overdue at once, as after downtime; there what matters is the catch-up, from the
    runner's start to each timer's commit. Reminder timers, whose effect writes a Slack job and
    the next reminder, so the table stays at its size.
(b) Deadline → page delivered: the whole bot with the PagerDuty and Slack fakes (outbox and
    runner at their production poll intervals), P1 paging one minute after opening, with
    `--pending` far-off timers in the table as well; `--pages` incidents opened 5 a second, so
    deadlines spread over time. From each page timer's due time to (1) the PagerDuty fake
    accepting the trigger (stamped by the fake as the request arrives) and (2) the bot
    recording the 202 (paging.delivered_at). Real clock: this part takes a little over a minute.

Prints p50/p99/max (nearest rank) and n. Not part of the test suite: the figures go in notes.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from bot.config import OncallConfig
from bot.db import Database
from bot.models import Incident, Paging, Timer, TimerStatus, utcnow
from bot.outbox import Outbox
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
    if not values:
        return "no values (n=0)"
    ms = [v * 1000 for v in values]
    return (f"p50 {percentile(ms, 50):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms   max {max(ms):7.1f} ms"
            f"   (n={len(ms)})")


@contextmanager
def database_url(kind: str) -> Iterator[str]:
    if kind == "postgres":
        yield from _postgres_database()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"


# -- (a) lateness -----------------------------------------------------------------------------

class TimedRunner(TimerRunner):
    """The production runner, plus a note of when each fired timer's transaction committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fired: list[tuple[datetime, float, datetime]] = []  # (due, lateness at claim, committed at)
        self._batch: list[tuple[datetime, float]] = []

    def _fire_one(self, session: Any, timer: Timer) -> None:
        super()._fire_one(session, timer)
        if timer.status == TimerStatus.FIRED:
            self._batch.append((timer.due_at, timer.lateness_seconds or 0.0))

    def fire_due(self) -> int:
        self._batch = []  # a batch whose transaction failed is forgotten with it
        fired = super().fire_due()
        committed = utcnow()
        self.fired += [(due, late, committed) for due, late in self._batch]
        return fired


def seed(db: Database, pending: int, due: int, incidents: int = 1000, *, burst: bool = False) -> list[int]:
    """`pending` reminder timers; the first `due` come due over 20 s from now (or are 5 s overdue)."""
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
        timers.append({"incident_id": ids[n % incidents], "kind": "reminder", "due_at": when,
                       "payload": {"minutes": 15}, "status": TimerStatus.PENDING, "attempts": 0, "created_at": now})
    with db.session() as session:
        for start in range(0, len(timers), 1000):
            session.execute(insert(Timer), timers[start:start + 1000])
    return ids


async def run_runner(db: Database, due: int) -> tuple[TimedRunner, datetime]:
    """Run the production runner loop until `due` timers fired (or two minutes passed)."""
    runner = TimedRunner(db, OncallConfig())
    started = utcnow()
    task = asyncio.create_task(runner.run())
    deadline = time.monotonic() + 120
    while len(runner.fired) < due and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.05)
    runner.stop()
    await task
    if len(runner.fired) < due:
        print(f"  only {len(runner.fired)} of {due} timers fired within 120 s", file=sys.stderr)
    return runner, started


def lateness(kind: str, pending: int, due: int) -> None:
    for burst in (False, True):
        with database_url(kind) as url:
            db = Database(url)
            db.migrate()
            seed(db, pending, due, burst=burst)
            with db.read() as session:
                count = session.scalar(select(func.count()).select_from(Timer)
                                       .where(Timer.status == TimerStatus.PENDING))
                ready = session.scalar(select(func.count()).select_from(Timer).where(
                    Timer.status == TimerStatus.PENDING, Timer.due_at <= utcnow()))
            runner, started = asyncio.run(run_runner(db, due))
            with db.read() as session:
                fired_rows = session.scalar(select(func.count()).select_from(Timer)
                                            .where(Timer.status == TimerStatus.FIRED))
            db.dispose()
        assert fired_rows == len(runner.fired), (fired_rows, len(runner.fired))
        if burst:
            catch_up = [(committed - started).total_seconds() for _, _, committed in runner.fired]
            print(f"  {kind:8} {count} pending, {due} overdue at once: runner start → committed  {summary(catch_up)}")
        else:
            if ready:
                print(f"  ({ready} timers were already due when the runner started: seeding was slow)",
                      file=sys.stderr)
            print(f"  {kind:8} {count} pending, {due} due over 20 s: lateness at claim      "
                  f"{summary([late for _, late, _ in runner.fired])}")
            print(f"  {kind:8} {count} pending, {due} due over 20 s: due → effect committed "
                  f"{summary([(committed - due_at).total_seconds() for due_at, _, committed in runner.fired])}")


# -- (b) deadline → page delivered ------------------------------------------------------------

class TimedPagerDuty(FakePagerDuty):
    """The PagerDuty fake, stamping when each dedup key's first accepted trigger arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.triggered_at: dict[str, datetime] = {}

    def _enqueue(self, raw: bytes) -> tuple[int, dict[str, str], Any]:
        arrived = utcnow()
        status, headers, body = super()._enqueue(raw)
        event = self.events[-1] if status == 202 and self.events else None
        if event is not None and event.action == "trigger":
            self.triggered_at.setdefault(event.dedup_key, arrived)
        return status, headers, body


def pages(kind: str, count: int, pending: int) -> None:
    with ExitStack() as stack:
        url = stack.enter_context(database_url(kind))
        pagerduty = stack.enter_context(TimedPagerDuty())
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
        stack.callback(bot.services.db.dispose)
        stack.callback(bot.stop)
        # start_bot polls the outbox every 50 ms, as tests do; the bench uses the production interval
        bot.services.outbox.poll_seconds = inspect.signature(Outbox).parameters["poll_seconds"].default
        assert bot.services.timers.poll_seconds == 1.0
        seed(bot.services.db, pending, 0)  # the table is not empty in production either
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
            if len(delivered) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        with bot.services.db.read() as session:
            due = {t.incident_id: t.due_at for t in session.scalars(select(Timer).where(
                Timer.kind == "page", Timer.status == TimerStatus.FIRED))}
        with pagerduty.lock:
            arrived = dict(pagerduty.triggered_at)
        if len(delivered) < count:
            print(f"  only {len(delivered)} of {count} pages delivered within the wait", file=sys.stderr)
        at_fake = [(arrived[p.dedup_key] - due[p.incident_id]).total_seconds() for p in delivered]
        recorded = [(p.delivered_at - due[p.incident_id]).total_seconds() for p in delivered]  # type: ignore[operator]
        print(f"  {kind:8} deadline → trigger accepted by the PagerDuty fake  {summary(at_fake)}")
        print(f"  {kind:8} deadline → delivery recorded by the bot         {summary(recorded)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=100)
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    print("timer lateness:")
    for kind in kinds:
        lateness(kind, args.pending, args.due)
    print("deadline → page delivered:")
    for kind in kinds:
        pages(kind, args.pages, args.pending)


if __name__ == "__main__":
    main()
