"""The one server: Bolt's AsyncApp mounted in Starlette, plus the webhook and health routes.

Everything is built once, in `build()`; nothing is built at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

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
from commands.slack_sync import SlackSync
from integrations.slack import SlackClient, make_web_client

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
    outbox = Outbox(db, handlers, clock=clock)
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
    webhook = WebhookEndpoint(services.settings, services.db, services.outbox.kick, clock=services.clock)

    async def slack_events(request: Request) -> Response:
        return await slack_handler.handle(request)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        problems = await _readiness_problems(services)
        return JSONResponse({"status": "not ready" if problems else "ready", "problems": problems},
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


def _job_counts(db: Database) -> tuple[int, int]:
    with db.read() as session:
        rows = dict(session.execute(
            select(Job.status, func.count()).where(  # type: ignore[call-overload]
                Job.status.in_([JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED])  # type: ignore[attr-defined]
            ).group_by(Job.status)
        ).all())
    return rows.get("pending", 0) + rows.get("running", 0), rows.get("failed", 0)
