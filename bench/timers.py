"""Benchmark: timer lateness, and deadline → page delivered against the PagerDuty fake.

    .venv/bin/python -m bench.timers [--database sqlite|postgres|both] [--pending 10000] [--due 1000]
                                     [--pages 100] [--replicas 2]

(a) Lateness: `--pending` timers in the table, of which `--due` come due spread over the next
    20 s (the rest hours away); the runner (production settings: poll ≤ 1 s, batches of 100)
    fires them. Two figures per timer, both measured: the lateness the runner records when it
    claims the timer (timer.lateness_seconds, what the oncall_timer_lateness_seconds histogram
    shows), and due time → the wall clock right after the transaction that applied the effect
    committed (when the page/reminder job exists for the outbox). Then a burst: `--due` timers
    all overdue at once, as after downtime; there what matters is the catch-up, from the
    runner's start to each timer's commit. Reminder timers, whose effect writes a Slack job and
    the next reminder, so the table stays at its size.
(r) Replicas (`run`, what `python -m bench` reports): the same table and spread, fired by
    `--replicas` runners side by side, each a replica of its own (its own thread, asyncio loop,
    Database engine and connection pool) sharing the database, as pods share it: lateness
    (due → effect committed) across them, how many each fired, and that no timer fired twice
    (each timer id is claimed by one runner, once, and the FIRED rows add up).
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
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlmodel import col

from bench import NO_STORM, fresh_database, nearest_rank, progress
from bot.config import OncallConfig
from bot.db import Database
from bot.models import Incident, Paging, Timer, TimerStatus, utcnow
from bot.outbox import Outbox
from bot.timers import TimerRunner
from tests.alerts import alert, group
from tests.conftest import make_settings, start_bot
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack

__all__ = ["TimedRunner", "run", "seed"]

ROUTING_KEY = "BENCHR0UTINGKEY00000000000000000"
database_url = fresh_database  # the name this module's CLI functions use


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    if not values:
        return "no values (n=0)"
    ms = [v * 1000 for v in values]
    return (f"p50 {percentile(ms, 50):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms   max {max(ms):7.1f} ms"
            f"   (n={len(ms)})")


# -- (a) lateness -----------------------------------------------------------------------------

class TimedRunner(TimerRunner):
    """The production runner, plus a note of when each fired timer's transaction committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fired: list[tuple[datetime, float, datetime]] = []  # (due, lateness at claim, committed at)
        self.fired_ids: list[int] = []
        self._batch: list[tuple[datetime, float, int]] = []

    def _fire_one(self, session: Any, timer: Timer) -> None:
        super()._fire_one(session, timer)
        if timer.status == TimerStatus.FIRED:
            self._batch.append((timer.due_at, timer.lateness_seconds or 0.0, timer.id or 0))

    def fire_due(self) -> int:
        self._batch = []  # a batch whose transaction failed is forgotten with it
        fired = super().fire_due()
        committed = utcnow()
        self.fired += [(due, late, committed) for due, late, _ in self._batch]
        self.fired_ids += [timer_id for _, _, timer_id in self._batch]
        return fired


def seed(db: Database, pending: int, due: int, incidents: int = 1000, *, burst: bool = False,
         spread_seconds: float = 18.0) -> list[int]:
    """`pending` reminder timers; the first `due` come due from 2 s from now over `spread_seconds`
    (or are 5 s overdue)."""
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
            when = now - timedelta(seconds=5) if burst else now + timedelta(seconds=2 + spread_seconds * n / due)
        else:
            when = now + timedelta(hours=1 + 23 * random.random())
        timers.append({"incident_id": ids[n % incidents], "kind": "reminder", "due_at": when,
                       "payload": {"minutes": 15}, "status": TimerStatus.PENDING, "attempts": 0, "created_at": now})
    with db.session() as session:
        for start in range(0, len(timers), 1000):
            session.execute(insert(Timer), timers[start:start + 1000])
    return ids


# -- (r) replicas -----------------------------------------------------------------------------

class _Replica:
    """One runner on a thread and asyncio loop of its own, with its own engine on the database."""

    def __init__(self, url: str, name: str) -> None:
        self.db = Database(url)
        self.runner = TimedRunner(self.db, OncallConfig())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self.runner.run()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by stop(), not lost in a thread
            self.error = exc
            self._started.set()

    def start(self) -> None:
        self.thread.start()
        self._started.wait(30)

    def stop(self) -> None:
        # WorkerLoop.stop sets an asyncio.Event: only from the runner's own loop
        if self._loop is not None and self.thread.is_alive():
            self._loop.call_soon_threadsafe(self.runner.stop)
        self.thread.join(timeout=30)
        self.db.dispose()
        if self.error is not None:
            raise SystemExit(f"a timer replica failed: {self.error!r}")


def run(kind: str, *, pending: int = 10_000, due: int = 1000, spread_seconds: float = 18.0,
        replicas: int = 2) -> dict[str, Any]:
    """`pending` timers, `due` of them due over `spread_seconds`, fired by `replicas` runners
    sharing one fresh `kind` database: lateness across them, and whether any timer fired twice."""
    with fresh_database(kind) as url:
        db = Database(url)
        try:
            db.migrate()
            progress(f"timers {kind}: seeding {pending} pending timers, {due} due over {spread_seconds + 2:g} s")
            seed(db, pending, due, spread_seconds=spread_seconds)
            running = [_Replica(url, f"timer-replica-{n}") for n in range(replicas)]
            for replica in running:
                replica.start()
            try:
                _await_fired(running, due, kind, timeout=spread_seconds + 60)
            finally:
                for replica in running:
                    replica.stop()
            with db.read() as session:
                fired_rows = int(session.scalar(select(func.count()).select_from(Timer)
                                                .where(col(Timer.status) == TimerStatus.FIRED)) or 0)
        finally:
            db.dispose()
    fired = [item for r in running for item in r.runner.fired]
    ids = Counter(timer_id for r in running for timer_id in r.runner.fired_ids)
    late = [(committed - due_at).total_seconds() for due_at, _, committed in fired]
    claim = [at_claim for _, at_claim, _ in fired]
    return {"database": kind, "pending": pending, "due": due, "replicas": replicas, "fired": len(fired),
            "fired_rows": fired_rows, "fired_by_replica": [len(r.runner.fired) for r in running],
            "fired_twice": sum(n - 1 for n in ids.values() if n > 1),
            "unaccounted": fired_rows - len(fired),  # FIRED rows no runner recorded (0 expected)
            "lateness_p50_s": nearest_rank(late, 50) if late else None,
            "lateness_p99_s": nearest_rank(late, 99) if late else None,
            "lateness_max_s": max(late) if late else None,
            "claim_lateness_p99_s": nearest_rank(claim, 99) if claim else None}


def _await_fired(running: list[_Replica], due: int, kind: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    reported = 0.0
    while (fired := sum(len(r.runner.fired) for r in running)) < due:
        if time.monotonic() > deadline or any(not r.thread.is_alive() for r in running):
            progress(f"timers {kind}: only {fired} of {due} timers fired within {timeout:g} s")
            return
        if time.monotonic() - reported >= 5:
            reported = time.monotonic()
            progress(f"timers {kind}: {fired}/{due} fired " + "+".join(str(len(r.runner.fired)) for r in running))
        time.sleep(0.05)
    time.sleep(1.5)  # a second firing of any of them, were there one, would be counted by now


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
                                              "escalation": {"P1": {"page_after_minutes": 1}}, **NO_STORM})
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
    parser.add_argument("--replicas", type=int, default=2, help="runners side by side in (r)")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    print(f"timer lateness, {args.replicas} replicas:")
    for kind in kinds:
        r = run(kind, pending=args.pending, due=args.due, replicas=args.replicas)
        print(f"  {kind:8} {r['fired']} fired ({'+'.join(map(str, r['fired_by_replica']))}), "
              f"{r['fired_twice']} twice: due → effect committed p50 {r['lateness_p50_s'] * 1000:.1f} ms, "
              f"p99 {r['lateness_p99_s'] * 1000:.1f} ms, max {r['lateness_max_s'] * 1000:.1f} ms")
    print("timer lateness, one runner:")
    for kind in kinds:
        lateness(kind, args.pending, args.due)
    print("deadline → page delivered:")
    for kind in kinds:
        pages(kind, args.pages, args.pending)


if __name__ == "__main__":
    main()
