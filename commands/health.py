"""`/healthz`, `/readyz` and `/metrics`: is the bot alive, can it do its work, how is it doing."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import metrics
from bot.config import Settings
from bot.db import Database
from bot.models import Job, JobStatus
from commands.slack_sync import SETUP_WAIT
from integrations.slack import REQUIRED_SCOPES, SlackClient, SlackError

__all__ = ["SlackSetupCheck", "health_routes"]

log = logging.getLogger(__name__)

PENDING_JOBS = Gauge("oncall_jobs_pending", "Outbox jobs waiting to run", registry=metrics.REGISTRY)
FAILED_JOBS = Gauge("oncall_jobs_failed", "Outbox jobs that failed permanently", registry=metrics.REGISTRY)


def health_routes(settings: Settings, db: Database, slack_check: SlackSetupCheck) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        # problems: the bot cannot do its work (503); warnings: some of it waits for a person.
        problems = await _readiness_problems(settings, db)
        slack_problems, slack_warnings = await slack_check.problems()
        problems += slack_problems
        warnings = slack_warnings + await asyncio.to_thread(_job_warnings, db)
        status = "not ready" if problems else "degraded" if warnings else "ready"
        return JSONResponse({"status": status, "problems": problems, "warnings": warnings},
                            status_code=503 if problems else 200)

    async def metrics_endpoint(_: Request) -> Response:
        pending, failed = await asyncio.to_thread(_job_counts, db)
        PENDING_JOBS.set(pending)
        FAILED_JOBS.set(failed)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"])]


async def _readiness_problems(settings: Settings, db: Database) -> list[str]:
    problems: list[str] = []
    try:
        await asyncio.to_thread(db.ping)
    except Exception as exc:  # any driver error means "not ready"
        problems.append(f"database unreachable: {exc.__class__.__name__}: {str(exc)[:200]}")
    if settings.redis_url:
        import redis.asyncio as redis

        client = redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            await client.ping()
        except Exception as exc:
            problems.append(f"redis unreachable: {exc.__class__.__name__}: {str(exc)[:200]}")
        finally:
            await client.aclose()
    return problems


class SlackSetupCheck:
    """Is the token valid, does it have the scopes the bot uses, can the bot post in the announce
    channel? Asked at start (logged) and by /readyz (cached: Slack rate-limits these calls)."""

    TTL = 30.0

    def __init__(self, slack: SlackClient, announce: str) -> None:
        self.slack, self.announce = slack, announce
        self._cached: tuple[float, tuple[list[str], list[str]]] | None = None

    async def log_at_start(self) -> None:
        problems, warnings = await self.problems()
        for line in problems + warnings:
            log.error("Slack setup: %s", line, extra={"problem": line})

    async def problems(self) -> tuple[list[str], list[str]]:
        now = asyncio.get_running_loop().time()
        if self._cached is None or now - self._cached[0] > self.TTL:
            self._cached = (now, await self._check())
        return self._cached[1]

    async def _check(self) -> tuple[list[str], list[str]]:
        try:
            identity = await self.slack.identity()
        except SlackError as exc:
            return [f"Slack refused the bot token ({exc.error}): {exc.fix}" if exc.app_setup else str(exc)], []
        problems = []
        missing = sorted(REQUIRED_SCOPES - identity.scopes) if identity.scopes else []
        if missing:
            problems.append(f"the bot token lacks the scopes {', '.join(missing)}: add them to the Slack app "
                            "(manifest.yml lists them) and reinstall it")
        return problems, await self._announce_warnings()

    async def _announce_warnings(self) -> list[str]:
        where = f"announce channel {self.announce!r} (channels.announce)"
        try:
            channel = await self._announce_channel()
        except SlackError as exc:
            return [f"{where}: cannot be checked ({exc.error}): {exc.fix}"]
        if channel is None:
            return [f"{where} does not exist: create it or fix channels.announce in ONCALL_CONFIG; until then "
                    "every incident gets its own channel and announcements wait"]
        if channel.is_archived:
            return [f"{where} is archived: unarchive it or fix channels.announce"]
        if not channel.is_member:
            return [f"{where}: the bot is not a member: /invite @oncall-bot in #{channel.name}"]
        return []

    async def _announce_channel(self) -> Any:
        ref = self.announce.lstrip("#")
        if re.fullmatch(r"[CG][A-Z0-9]{2,}", ref):
            try:
                return await self.slack.channel_info(ref)
            except SlackError as exc:
                if exc.error == "channel_not_found":
                    return None
                raise
        return await self.slack.find_channel_by_name(ref)


def _job_warnings(db: Database) -> list[str]:
    """Jobs a person must look at: failed ones, and ones waiting for Slack to be set up."""
    with db.read() as session:
        failed = session.scalar(select(func.count()).where(col(Job.status) == JobStatus.FAILED))
        waiting = session.scalar(select(func.count()).where(
            col(Job.status) == JobStatus.PENDING, col(Job.attempts) > 0, col(Job.last_error).like(f"{SETUP_WAIT}%")))
    warnings = []
    if failed:
        warnings.append(f"{failed} job(s) failed permanently: see `oncall-bot jobs list --failed`, fix the cause, "
                        "then `oncall-bot jobs retry --all-failed`")
    if waiting:
        warnings.append(f"{waiting} job(s) wait for the Slack app or a channel to be fixed: see "
                        "`oncall-bot jobs list`; they resume by themselves once it is")
    return warnings


def _job_counts(db: Database) -> tuple[int, int]:
    with db.read() as session:
        rows: dict[str, int] = dict(session.execute(  # status column is String(16): plain str keys
            select(Job.status, func.count()).where(  # type: ignore[call-overload]
                Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED])  # type: ignore[attr-defined]
            ).group_by(Job.status)
        ).all())
    return rows.get("pending", 0) + rows.get("running", 0), rows.get("failed", 0)
