"""`/healthz`, `/readyz` and `/metrics`: is the bot alive, can it do its work, how is it doing."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from sqlalchemy import func, select
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import heartbeat, metrics
from bot.config import HeartbeatPolicy, Settings
from bot.db import Database
from bot.models import Job, JobStatus, utcnow
from commands.slack_sync import SETUP_WAIT
from integrations.redis_store import RedisStore
from integrations.slack import REQUIRED_SCOPES, SlackClient, SlackError

__all__ = ["REDIS_DOWN", "SlackSetupCheck", "health_routes"]

log = logging.getLogger(__name__)

PENDING_JOBS = Gauge("oncall_jobs_pending", "Outbox jobs waiting to run", registry=metrics.REGISTRY)
FAILED_JOBS = Gauge("oncall_jobs_failed", "Outbox jobs that failed permanently", registry=metrics.REGISTRY)
HEARTBEAT_AGE = Gauge("oncall_heartbeat_age_seconds", "Seconds since the heartbeat alert (heartbeat.alertname) last "
                      "arrived; NaN before the first", registry=metrics.REGISTRY)
HEARTBEAT_LOST = Gauge("oncall_heartbeat_lost", "1 while the bot says alerts are not reaching it (the heartbeat "
                       "stopped), else 0", registry=metrics.REGISTRY)


def health_routes(settings: Settings, db: Database, slack_check: SlackSetupCheck, *,
                  clock: Callable[[], datetime] = utcnow, redis: RedisStore | None = None) -> list[Route]:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        # problems: the bot cannot do its work (503); warnings: some of it waits for a person, or
        # for Slack or Redis to answer. Slack or Redis away is not "not ready": webhooks still go
        # into the durable outbox, and a replica without Redis coordinates through the database.
        # Anyone who can reach the port reads this: it says what is wrong in words and names the
        # setting to check; hosts, ports and drivers' messages go to the log only.
        problems = await _readiness_problems(db)
        slack_problems, slack_warnings = await slack_check.problems()
        redis_shown, redis_warnings = await _redis_state(redis)
        warnings = slack_warnings + redis_warnings
        beat: dict[str, Any] | None = None
        if not problems:  # the database answers: are jobs failed or waiting? Does the heartbeat arrive?
            try:
                warnings = warnings + await asyncio.to_thread(_job_warnings, db)
                beat, beat_warnings = await asyncio.to_thread(_heartbeat, db, settings.config.heartbeat, clock)
                warnings += beat_warnings  # never a problem: the bot can still do its work
            except Exception as exc:  # a missing table, a dropped connection: not ready, never a 500
                problems.append(_logged("database cannot be read: check that the bot's migrations ran "
                                        "(the log has the details)", "database", exc))
        problems += slack_problems
        status = "not ready" if problems else "degraded" if warnings else "ready"
        shown = {"status": status, "problems": problems, "warnings": warnings, "heartbeat": beat}
        return JSONResponse(shown | ({"redis": redis_shown} if redis is not None else {}),
                            status_code=503 if problems else 200)

    async def metrics_endpoint(_: Request) -> Response:
        pending, failed = await asyncio.to_thread(_job_counts, db)
        PENDING_JOBS.set(pending)
        FAILED_JOBS.set(failed)
        beat, _warnings = await asyncio.to_thread(_heartbeat, db, settings.config.heartbeat, clock)
        HEARTBEAT_AGE.set(float("nan") if beat["age_seconds"] is None else beat["age_seconds"])
        HEARTBEAT_LOST.set(1 if beat["status"] == "lost" else 0)
        # In a thread: the registry's collectors read the database (bot.metrics).
        exposition = await asyncio.to_thread(generate_latest, metrics.REGISTRY)
        return Response(exposition, media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"])]


async def _readiness_problems(db: Database) -> list[str]:
    problems: list[str] = []
    try:
        await asyncio.to_thread(db.ping)
    except Exception as exc:  # any driver error means "not ready"
        problems.append(_logged("database unreachable: check DATABASE_URL and that the database is up "
                                "(the log has the details)", "database", exc))
    return problems


REDIS_DOWN = "unreachable: database-only coordination"


async def _redis_state(redis: RedisStore | None) -> tuple[str | None, list[str]]:
    """What /readyz says of Redis: "ok", or REDIS_DOWN and a warning (the store logs the cause)."""
    if redis is None:
        return None, []
    if await redis.check():
        return "ok", []
    return REDIS_DOWN, ["redis unreachable: check REDIS_URL and that Redis is up (the log has the details); "
                        "until it answers, replicas coordinate through the database and Slack rate limits "
                        "are per replica"]


def _logged(problem: str, what: str, exc: BaseException) -> str:
    """`problem` for /readyz; the details (which may name hosts, ports, users) for the log only."""
    log.error("readiness: %s: %s: %s", what, exc.__class__.__name__, str(exc)[:500],
              extra={"problem": problem, "error": f"{exc.__class__.__name__}: {str(exc)[:500]}"})
    return problem


def _slack_words(exc: SlackError) -> str:
    """A failed Slack call in words fit for /readyz: Slack's error code, never SLACK_API_URL's host
    or a network library's message (those are logged)."""
    if exc.status is None:  # never reached Slack: the error text names the URL and the library's exception
        return _logged(f"Slack unreachable ({exc.method}): check SLACK_API_URL and the network "
                       "(the log has the details)", "slack", exc)
    if re.fullmatch(r"[a-z0-9_]{1,64}", exc.error):
        return f"Slack {exc.method} failed: {exc.error} (HTTP {exc.status})"
    return _logged(f"Slack {exc.method} failed (HTTP {exc.status}; the log has the details)", "slack", exc)


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
            if exc.app_setup:  # only a person can fix it: not ready
                return [f"Slack refused the bot token ({exc.error}): {exc.fix}"], []
            return [], [f"{_slack_words(exc)}; incidents wait in the outbox until it answers"]
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
            if exc.status is None or not re.fullmatch(r"[a-z0-9_]{1,64}", exc.error):
                return [f"{where}: cannot be checked: {_slack_words(exc)}"]
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


def _heartbeat(db: Database, policy: HeartbeatPolicy,
               clock: Callable[[], datetime]) -> tuple[dict[str, Any], list[str]]:
    """The heartbeat's state for /readyz and /metrics, and a warning while it is lost."""
    with db.read() as session:
        found = heartbeat.state(session, policy)
    now = clock()
    age = found.age_seconds(now)
    shown = {"status": found.status, "alertname": found.alertname, "age_seconds": None if age is None else round(age),
             "last_seen_at": found.last_seen_at.isoformat() if found.last_seen_at else None}
    if found.status != "lost":
        return shown, []
    since = f"since {found.last_seen_at:%Y-%m-%d %H:%M} UTC" if found.last_seen_at else "has ever arrived"
    return shown, [f"alerts are not reaching the bot: no {found.alertname} heartbeat {since}; check Alertmanager "
                   "and its route to the bot (heartbeat in ONCALL_CONFIG)"]
