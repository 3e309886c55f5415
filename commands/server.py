"""The one server: Bolt's AsyncApp mounted in Starlette, plus the webhook and health routes.

Everything is built once, in `build()`; nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot import metrics
from bot.config import Settings
from bot.db import Database
from bot.models import Job, JobStatus, utcnow
from bot.outbox import Handler, Outbox
from bot.actions import ActionContext
from bot.config import ConfigError
from bot.runbooks import RunbookError, RunbookSet, load_runbooks, paths_from_env
from commands import paging, runbook_flow, slash
from commands.alertmanager import WebhookEndpoint
from commands.slack_sync import SETUP_WAIT, SlackSync
from integrations.slack import REQUIRED_SCOPES, SlackClient, SlackError, make_web_client

__all__ = ["Services", "build", "create_app"]

log = logging.getLogger(__name__)

PENDING_JOBS = Gauge("oncall_jobs_pending", "Outbox jobs waiting to run", registry=metrics.REGISTRY)
FAILED_JOBS = Gauge("oncall_jobs_failed", "Outbox jobs that failed permanently", registry=metrics.REGISTRY)


@dataclass
class Services:
    settings: Settings
    db: Database
    slack: SlackClient
    bolt: AsyncApp
    sync: SlackSync
    outbox: Outbox
    clock: Callable[[], datetime]
    handlers: dict[str, Handler] = field(default_factory=dict)
    paging: "paging.PagingService | None" = None  # PagerDuty, timers, the card's Ack/Resolve/Escalate
    runbooks: "runbook_flow.RunbookFlow | None" = None  # runbook messages, step clicks, /runbook


def build(settings: Settings, *, clock: Callable[[], datetime] = utcnow, migrate: bool = True) -> Services:
    db = Database(settings.database_url)
    if migrate:
        db.migrate()
    web = make_web_client(settings.slack_bot_token, settings.slack_api_url)
    slack = SlackClient(web, on_call=lambda method, outcome: metrics.SLACK_CALLS.labels(method, outcome).inc())
    sync = SlackSync(db, settings.config, slack, clock=clock)
    handlers: dict[str, Handler] = dict(sync.handlers)
    outbox = Outbox(db, handlers, clock=clock, lease_seconds=settings.job_lease_seconds)
    bolt = AsyncApp(signing_secret=settings.slack_signing_secret, client=web,
                    raise_error_for_unhandled_request=False)
    services = Services(settings=settings, db=db, slack=slack, bolt=bolt, sync=sync, outbox=outbox, clock=clock,
                        handlers=handlers)
    slash.register(bolt, services)
    services.paging = paging.register(services)
    services.runbooks = runbook_flow.register(services, _runbooks(settings), action_clients(settings))
    return services


def _runbooks(settings: Settings) -> RunbookSet:
    try:
        runbooks = load_runbooks(paths_from_env(settings.runbooks_path))
    except RunbookError as exc:
        raise ConfigError(f"RUNBOOKS_PATH: the runbooks do not pass lint:\n{exc}\n"
                          "Fix them (`oncall-bot runbook lint PATH` shows the same list)") from exc
    for warning in runbooks.warnings:
        log.warning("runbook lint: %s", warning)
    return runbooks


def action_clients(settings: Settings) -> ActionContext:
    """The systems runbook actions reach; an unconfigured one is None and its steps say so."""
    from integrations.kubernetes import KubernetesClient, KubernetesError

    kubernetes = prometheus = alertmanager = None
    if settings.kubeconfig or os.environ.get("KUBERNETES_SERVICE_HOST") or \
            os.path.exists(os.path.expanduser("~/.kube/config")):
        try:
            kubernetes = KubernetesClient.from_environment(settings.kubeconfig)
        except KubernetesError as exc:
            raise ConfigError(f"KUBECONFIG: {exc}; fix the file or unset KUBECONFIG") from exc
    if settings.prometheus_url:
        from integrations.prometheus import PrometheusClient

        prometheus = PrometheusClient(settings.prometheus_url)
    if settings.alertmanager_url:
        from integrations.alertmanager import AlertmanagerClient

        alertmanager = AlertmanagerClient(settings.alertmanager_url)
    return ActionContext(kubernetes=kubernetes, prometheus=prometheus, alertmanager=alertmanager)


def create_app(services: Services, *, run_worker: bool = True) -> Starlette:
    slack_handler = AsyncSlackRequestHandler(services.bolt)
    slack_check = SlackSetupCheck(services.slack, services.settings.config.channels.announce)
    webhook = WebhookEndpoint(services.settings, services.db, services.outbox.kick, clock=services.clock)

    async def slack_events(request: Request) -> Response:
        return await slack_handler.handle(request)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        # problems: the bot cannot do its work (503); warnings: some of it waits for a person.
        problems = await _readiness_problems(services)
        slack_problems, slack_warnings = await slack_check.problems()
        problems += slack_problems
        warnings = slack_warnings + await asyncio.to_thread(_job_warnings, services.db)
        status = "not ready" if problems else "degraded" if warnings else "ready"
        return JSONResponse({"status": status, "problems": problems, "warnings": warnings},
                            status_code=503 if problems else 200)

    async def metrics_endpoint(_: Request) -> Response:
        pending, failed = await asyncio.to_thread(_job_counts, services.db)
        PENDING_JOBS.set(pending)
        FAILED_JOBS.set(failed)
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Database calls run in threads; the default pool (cores + 4) is too small for a
        # webhook burst and the worker's jobs at once.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="db"))
        # One connection pool for every Slack call instead of a new session per call.
        services.slack.web.session = aiohttp.ClientSession()
        await slack_check.log_at_start()
        worker = asyncio.create_task(services.outbox.run()) if run_worker else None
        timers = asyncio.create_task(services.paging.run()) if run_worker and services.paging else None
        try:
            yield
        finally:
            services.outbox.stop()
            if timers and services.paging:
                services.paging.stop()
                await timers
            if worker:
                await worker
            await services.slack.web.session.close()

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/alertmanager", webhook.handle, methods=["POST"]),
            *([Route("/pagerduty", services.paging.webhook.handle, methods=["POST"])] if services.paging else []),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


async def _readiness_problems(services: Services) -> list[str]:
    problems: list[str] = []
    try:
        await asyncio.to_thread(services.db.ping)
    except Exception as exc:  # any driver error means "not ready"
        problems.append(f"database unreachable: {exc.__class__.__name__}: {str(exc)[:200]}")
    if services.settings.redis_url:
        import redis.asyncio as redis

        client = redis.from_url(services.settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
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
        failed = session.scalar(select(func.count()).where(Job.status == JobStatus.FAILED))  # type: ignore[arg-type]
        waiting = session.scalar(select(func.count()).where(  # type: ignore[arg-type]
            Job.status == JobStatus.PENDING, Job.attempts > 0, Job.last_error.like(f"{SETUP_WAIT}%")))  # type: ignore[union-attr]
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
        rows = dict(session.execute(
            select(Job.status, func.count()).where(  # type: ignore[call-overload]
                Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED])  # type: ignore[attr-defined]
            ).group_by(Job.status)
        ).all())
    return rows.get("pending", 0) + rows.get("running", 0), rows.get("failed", 0)
