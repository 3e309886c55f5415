"""The timer runner: fires due timers exactly once, across restarts and replicas.

Timers are rows (bot.models.Timer), so they survive restarts; a runner that starts after
downtime finds the overdue ones and fires each once, recording how late it was. Replicas
share the table: on PostgreSQL a batch of due timers is claimed with `FOR UPDATE SKIP
LOCKED`, and each timer's effect is written in the same transaction that marks it fired,
so two replicas never fire one timer and a crash mid-batch fires nothing twice. On SQLite
the writer transaction (BEGIN IMMEDIATE) serialises runners instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from prometheus_client import Counter, Histogram
from sqlalchemy import func, select
from sqlmodel import Session, col

from bot import escalation, heartbeat, metrics
from bot.config import OncallConfig
from bot.db import Database
from bot.logs import incident_context
from bot.models import Timer, TimerStatus, utcnow
from bot.outbox import WorkerLoop

__all__ = ["TimerRunner", "LATENESS"]

log = logging.getLogger(__name__)

LATENESS = Histogram(
    "oncall_timer_lateness_seconds", "How late timers fired after their due time",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600), registry=metrics.REGISTRY,
)
FIRED = Counter("oncall_timers_total", "Timers that came due, by kind and outcome", ["kind", "status"],
                registry=metrics.REGISTRY)

MAX_ATTEMPTS = 5  # a timer whose effect keeps raising is parked as failed, not retried forever


class TimerRunner(WorkerLoop):
    def __init__(self, db: Database, config: OncallConfig, *, clock: Callable[[], datetime] = utcnow,
                 on_fired: Callable[[], None] = lambda: None, batch: int = 100, poll_seconds: float = 1.0) -> None:
        self.db, self.config, self.clock, self.on_fired = db, config, clock, on_fired
        self.batch, self.poll_seconds = batch, poll_seconds
        super().__init__()

    def next_due(self) -> datetime | None:
        """The earliest pending due time (a read: on SQLite it takes no write lock)."""
        with self.db.read() as session:
            return session.scalar(select(func.min(col(Timer.due_at))).where(col(Timer.status) == TimerStatus.PENDING))

    def fire_due(self) -> int:
        """Claim up to `batch` due timers and fire them in one transaction; returns how many."""
        done: list[tuple[str, str, float]] = []
        with self.db.session() as session:
            query = (select(Timer)
                     .where(Timer.status == TimerStatus.PENDING, Timer.due_at <= self.clock())  # type: ignore[arg-type]
                     .order_by(Timer.due_at, Timer.id)  # type: ignore[arg-type]
                     .limit(self.batch).with_for_update(skip_locked=True))
            for timer in session.scalars(query).all():
                self._fire_one(session, timer)
                if timer.status != TimerStatus.PENDING:
                    done.append((timer.kind, str(timer.status.value), timer.lateness_seconds or 0.0))
        for kind, status, lateness in done:
            FIRED.labels(kind=kind, status=status).inc()
            LATENESS.observe(lateness)
        if done:
            self.on_fired()
        return len(done)

    def _fire_one(self, session: Session, timer: Timer) -> None:
        with incident_context(timer.incident_id):  # every line its effect logs names the incident
            self._fire_effect(session, timer)

    def _fire_effect(self, session: Session, timer: Timer) -> None:
        now = self.clock()
        try:
            with session.begin_nested():  # one failing effect must not undo the batch
                fire = heartbeat.fire if timer.kind == heartbeat.MISSING else escalation.fire
                fire(session, timer, self.config, now)
        except Exception as exc:
            log.exception("timer %s (%s) failed", timer.id, timer.kind, extra={"timer": timer.id})
            timer.attempts += 1
            timer.outcome = repr(exc)[:2000]
            if timer.attempts >= MAX_ATTEMPTS:
                timer.status, timer.fired_at = TimerStatus.FAILED, now
            else:
                timer.due_at = now + timedelta(seconds=2 ** timer.attempts)
            return
        if timer.lateness_seconds and timer.lateness_seconds > 60:
            log.warning("timer %s (%s) fired %.0fs late", timer.id, timer.kind, timer.lateness_seconds,
                        extra={"timer": timer.id, "lateness": timer.lateness_seconds})

    async def run(self) -> None:
        """Fire timers as they come due: sleep until the next due time, but never longer than
        `poll_seconds`, because other replicas (and tests' clocks) add and move timers."""
        log.info("timer runner started")
        while not self._stopping:
            try:
                fired = await asyncio.to_thread(self.fire_due)
                wait = 0.0 if fired >= self.batch else await asyncio.to_thread(self._wait_seconds)
            except Exception:  # the database may be briefly away; keep the runner alive
                log.exception("timer runner pass failed; retrying")
                wait = self.poll_seconds
            if wait > 0:
                await self._sleep(wait)
        log.info("timer runner stopped")

    def _wait_seconds(self) -> float:
        due = self.next_due()
        if due is None:
            return self.poll_seconds
        # at least a moment: a due timer that another replica holds must not make us spin
        return min(self.poll_seconds, max(0.02, (due - self.clock()).total_seconds()))

    async def run_due(self) -> int:
        """Fire everything due now (tests, benchmarks); returns how many fired."""
        total = 0
        while (fired := await asyncio.to_thread(self.fire_due)) > 0:
            total += fired
        return total
