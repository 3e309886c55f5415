"""The operator's view of the outbox (`oncall-bot jobs list|retry`): which work is waiting or has
failed, and putting failed work back in the queue once its cause is fixed.

A job fails only on a permanent error (bot.outbox.PermanentError); it is kept, with its error,
for the operator. Retrying it makes it pending and due at once; its attempts are kept so that
the history stays visible. The worker picks it up at its next poll, in its incident's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from bot.models import Job, JobStatus

__all__ = ["NotRetryable", "list_jobs", "retry_all_failed", "retry_job"]

OUTSTANDING = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED)


class NotRetryable(Exception):
    """The job does not exist or has not failed; the message says which and what to do."""


def list_jobs(session: Session, *, failed_only: bool = False, limit: int = 100) -> Sequence[Job]:
    """Failed jobs, or all work not done yet (pending, running, failed), oldest first."""
    statuses = (JobStatus.FAILED,) if failed_only else OUTSTANDING
    query = select(Job).where(Job.status.in_(statuses))  # type: ignore[attr-defined]
    return session.scalars(query.order_by(Job.id).limit(limit)).all()  # type: ignore[arg-type]


def retry_job(session: Session, job_id: int, now: datetime) -> Job:
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise NotRetryable(f"job {job_id} does not exist (see `oncall-bot jobs list`)")
    if job.status != JobStatus.FAILED:
        raise NotRetryable(f"job {job_id} is {JobStatus(job.status).value}, not failed: only failed jobs are retried "
                           "(a pending job is retried by the bot itself)")
    _requeue(job, now)
    return job


def retry_all_failed(session: Session, now: datetime) -> list[int]:
    """The ids of the failed jobs put back in the queue."""
    query = select(Job).where(Job.status == JobStatus.FAILED).order_by(Job.id)  # type: ignore[arg-type]
    jobs = session.scalars(query.with_for_update()).all()
    for job in jobs:
        _requeue(job, now)
    return [job.id for job in jobs if job.id is not None]


def _requeue(job: Job, now: datetime) -> None:
    # last_error stays: it is what the operator fixed, until the next attempt replaces it.
    job.status, job.run_at, job.lease_until, job.finished_at = JobStatus.PENDING, now, None, None
