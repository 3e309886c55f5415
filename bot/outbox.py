"""The durable outbox: side effects (Slack, PagerDuty) written as jobs in the same
transaction as the change that needs them, and run after the HTTP response.

A job that fails with a transient error is rescheduled with backoff, never dropped.
Jobs of one lane (bot.jobs: an incident's Slack work, its PagerDuty events) run one at a time,
in order; jobs of different lanes run concurrently. On PostgreSQL several replicas share the
table safely: a job is claimed with `FOR UPDATE SKIP LOCKED` and held by a short lease that the
running worker renews, so a crashed replica's job is picked up again within seconds, and a slow
call is never mistaken for a crash. A job can therefore run again after a crash mid-call:
handlers find their own earlier result before acting (see commands.slack_sync.post_once). A
handler speaks `RetryLater` / `PermanentError`, or lets an integration's `IntegrationError`
through: its `retry_after` and `retryable` decide the retry here, in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from bot import metrics
from bot.db import Database
from bot.logs import incident_context
from bot.models import Job, JobStatus, utcnow
from integrations.errors import IntegrationError

__all__ = ["MAX_BACKOFF_SECONDS", "Handler", "Outbox", "PermanentError", "RetryLater", "WorkerLoop", "backoff",
           "enqueue"]

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[None]]
Clock = Callable[[], datetime]

# Short enough that a backlog drains within seconds of Slack or PagerDuty coming back after an
# outage; a permanent refusal is a PermanentError, not a long backoff.
MAX_BACKOFF_SECONDS = 10.0


class RetryLater(Exception):
    """Run the job again after `after` seconds (e.g. Slack's Retry-After)."""

    def __init__(self, reason: str, after: float) -> None:
        super().__init__(reason)
        self.after = after


class PermanentError(Exception):
    """Retrying cannot help (a bug, or the channel was deleted): keep the job as failed."""


def enqueue(
    session: Session,
    kind: str,
    *,
    now: datetime,
    incident_id: int | None = None,
    lane: str | None = None,
    payload: dict[str, Any] | None = None,
    coalesce: bool = False,
    run_at: datetime | None = None,
) -> Job | None:
    """Add a job to the caller's transaction, due at `run_at` (default `now`, the caller's
    clock: a wall-clock stamp would make a job written under a test clock due years away).
    Jobs of one `lane` run one at a time, in order (bot.jobs names them). With `coalesce`, a
    job of the same kind for the same incident that has not started yet already covers this one."""
    if coalesce:
        pending = session.exec(
            select(Job.id).where(  # type: ignore[call-overload]
                Job.kind == kind, Job.incident_id == incident_id, Job.status == JobStatus.PENDING
            )
        ).first()
        if pending is not None:
            return None
    job = Job(kind=kind, incident_id=incident_id, lane=lane, payload=payload or {}, run_at=run_at or now,
              created_at=now)
    session.add(job)
    return job


def backoff(attempts: int) -> float:
    """Seconds before the next try of a job that failed `attempts` times: 1, 2, 4, 8, 10, 10..., jittered."""
    return min(MAX_BACKOFF_SECONDS, 2.0 ** min(max(attempts - 1, 0), 10)) * random.uniform(0.5, 1.0)


def _still_mine(job: Job) -> tuple[Any, ...]:
    return (Job.id == job.id, Job.attempts == job.attempts)


class WorkerLoop:
    """A background loop that sleeps until it is kicked (new work), stopped, or a timeout passes."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False

    def kick(self) -> None:
        """New work was committed: run it now instead of at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()


class Outbox(WorkerLoop):
    def __init__(
        self,
        db: Database,
        handlers: dict[str, Handler],
        *,
        clock: Clock = utcnow,
        lease_seconds: float = 15.0,
        poll_seconds: float = 0.5,
        concurrency: int = 16,
    ) -> None:
        self.db = db
        self.handlers = handlers
        self.clock = clock
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_seconds = poll_seconds
        self.concurrency = concurrency
        super().__init__()

    async def run(self) -> None:
        """Claim due jobs whenever there is room and new work, without waiting for the
        jobs already running: a slow Slack call never holds up an unrelated incident."""
        log.info("outbox worker started")
        running: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            running.discard(task)
            self._wake.set()

        while not self._stopping:
            room = self.concurrency - len(running)
            try:
                jobs = await asyncio.to_thread(self._claim, room) if room > 0 else []
            except Exception:  # the database may be briefly away; keep the worker alive
                log.exception("outbox claim failed; retrying")
                jobs = []
            for job in jobs:
                task = asyncio.create_task(self._run(job))
                running.add(task)
                task.add_done_callback(finished)
            if not jobs:
                await self._sleep(self.poll_seconds)
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        log.info("outbox worker stopped")

    async def run_due(self) -> int:
        """Claim every job that is due now and run it to the end; returns how many ran."""
        jobs = await asyncio.to_thread(self._claim, self.concurrency)
        await asyncio.gather(*(self._run(job) for job in jobs))
        return len(jobs)

    def _claim(self, limit: int) -> list[Job]:
        now = self.clock()
        earlier = aliased(Job)
        blocked = exists().where(
            col(earlier.lane) == col(Job.lane),
            col(earlier.id) < col(Job.id),
            col(earlier.status).in_([JobStatus.PENDING, JobStatus.RUNNING]),
        )
        due = or_(
            and_(col(Job.status) == JobStatus.PENDING, col(Job.run_at) <= now),
            and_(col(Job.status) == JobStatus.RUNNING, col(Job.lease_until) < now),
        )
        query = (
            select(Job)
            .where(due, or_(col(Job.lane).is_(None), ~blocked))
            .order_by(col(Job.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if self.db.is_sqlite and not self._any_due(due):
            return []  # SQLite writes one at a time: a claim that finds nothing must not take a turn
        with self.db.session() as session:
            jobs = list(session.scalars(query))
            for job in jobs:
                job.status = JobStatus.RUNNING
                job.lease_until = now + self.lease
                job.attempts += 1
            return jobs

    def _any_due(self, due: Any) -> bool:
        """Whether a job is due, from a snapshot: a read waits for no writer (WAL)."""
        with self.db.read() as session:
            return session.scalars(select(col(Job.id)).where(due).limit(1)).first() is not None

    async def _run(self, job: Job) -> None:
        with incident_context(job.incident_id):  # every line the handler logs names the incident
            heartbeat = asyncio.create_task(self._renew_lease(job))
            try:
                status, error, retry_in = await self._attempt(job)
            finally:
                heartbeat.cancel()
            await asyncio.to_thread(self._finish, job, status, error, retry_in)

    async def _renew_lease(self, job: Job) -> None:
        """Keep the job's lease while it runs, so only a dead worker's job is taken over."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                await asyncio.to_thread(self._extend, job)
            except Exception:  # the database may be briefly away; the next beat tries again
                log.warning("could not renew the lease of job %s", job.id, extra={"job": job.id})

    def _extend(self, job: Job) -> None:
        with self.db.session() as session:
            session.execute(update(Job).where(*_still_mine(job), Job.status == JobStatus.RUNNING)  # type: ignore[arg-type]
                            .values(lease_until=self.clock() + self.lease))

    async def _attempt(self, job: Job) -> tuple[JobStatus, str | None, float]:
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise PermanentError(f"no handler for job kind {job.kind!r}")
            await handler(job)
        except RetryLater as exc:
            return JobStatus.PENDING, str(exc), exc.after
        except IntegrationError as exc:  # the one place an outside system's failure becomes a retry
            if exc.retry_after is not None:
                return JobStatus.PENDING, str(exc), exc.retry_after
            if not exc.retryable:
                log.error("job %s (%s) failed permanently: %s", job.id, job.kind, exc,
                          extra={"job": job.id, "kind": job.kind, "error": str(exc)})
                return JobStatus.FAILED, str(exc), 0.0
            return self._backing_off(job, exc)
        except PermanentError as exc:
            log.error("job %s (%s) failed permanently: %s", job.id, job.kind, exc,
                      extra={"job": job.id, "kind": job.kind, "error": str(exc)})
            return JobStatus.FAILED, str(exc), 0.0
        except Exception as exc:  # transient by default: retried with backoff
            return self._backing_off(job, exc)
        return JobStatus.DONE, None, 0.0

    @staticmethod
    def _backing_off(job: Job, exc: Exception) -> tuple[JobStatus, str | None, float]:
        delay = backoff(job.attempts)
        log.warning(
            "job %s (%s) failed; retry in %.1fs: %r", job.id, job.kind, delay, exc,
            extra={"job": job.id, "kind": job.kind, "error": repr(exc), "retry_in": round(delay, 1)},
        )
        return JobStatus.PENDING, repr(exc), delay

    def _finish(self, job: Job, status: JobStatus, error: str | None, retry_in: float = 0.0) -> None:
        now = self.clock()
        values: dict[str, Any] = {"status": status, "last_error": error, "lease_until": None}
        if status == JobStatus.PENDING:
            values["run_at"] = now + timedelta(seconds=retry_in)
        else:
            values["finished_at"] = now
        with self.db.session() as session:
            # A run whose lease lapsed (the database away longer than the lease) and whose job was
            # claimed again must not overwrite the new run's state: the claim count fences it.
            session.execute(update(Job).where(*_still_mine(job)).values(**values))
        metrics.JOBS.labels(kind=job.kind, outcome=status.value).inc()
