"""The composition root: every part built once, here, and combined.

Each feature returns what it contributes (a `Feature`: job handlers, Bolt listeners with
their middleware, routes, background loops); `build()` combines them and `create_app()`
serves the result: Bolt's AsyncApp mounted in Starlette beside the webhooks and health
routes. Nothing is built at import time, and no feature imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import aiohttp
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.routing import Route

from bot import metrics
from bot.actions import ActionContext
from bot.config import ConfigError, Settings
from bot.db import Database
from bot.models import utcnow
from bot.outbox import Handler, Outbox
from bot.paging import PagingService, effective_config, pagerduty_clients
from bot.policy import Policy
from bot.runbooks import RunbookError, RunbookSet, load_runbooks, paths_from_env
from bot.timers import TimerRunner
from commands.alertmanager import WebhookEndpoint
from commands.approvals import Approvals
from commands.card_buttons import card_buttons
from commands.declare import DeclareFlow
from commands.feature import Feature, Loop
from commands.health import SlackSetupCheck, health_routes
from commands.heartbeat import HeartbeatJobs
from commands.home import AppHome
from commands.incident_command import IncidentCommand
from commands.middleware import act_once, log_request
from commands.pagerduty_webhook import PagerDutyWebhook
from commands.postmortem import PostmortemJobs
from commands.runbook_flow import RunbookFlow
from commands.silence_command import SilenceCommand
from commands.silences import Silences
from commands.slack_events import SlackEvents
from commands.slack_sync import SlackSync
from commands.slash import OnCallCommand, mention_feature
from commands.timeline_capture import TimelineCapture
from integrations.redis_store import RedisStore
from integrations.slack import SlackClient, make_web_client
from integrations.slack_rate import SlackRateLimiter

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

__all__ = ["Bot", "action_clients", "build", "create_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bot:
    """Everything built for one process; tests and benchmarks reach the parts through it."""

    settings: Settings
    db: Database
    slack: SlackClient
    bolt: AsyncApp
    outbox: Outbox
    timers: TimerRunner
    features: tuple[Feature, ...]
    clock: Callable[[], datetime]
    redis: RedisStore | None = None  # REDIS_URL: dedup and Slack rate limits shared by the replicas


def build(settings: Settings, *, clock: Callable[[], datetime] = utcnow, migrate: bool = True) -> Bot:
    db = Database(settings.database_url)
    if migrate:
        db.migrate()
    metrics.STORAGE.bind(db, clock)  # /metrics reads incidents and the outbox queue from this database
    web = make_web_client(settings.slack_bot_token, settings.slack_api_url, timeout=settings.slack_timeout_seconds,
                          on_ratelimited=metrics.record_slack_ratelimited)
    # Slack's limits kept before each call: by all replicas together through Redis, else by this
    # process alone (integrations.slack_rate); a 429 still honours Retry-After.
    redis = RedisStore(settings.redis_url, prefix=settings.redis_key_prefix) if settings.redis_url else None
    limiter = SlackRateLimiter(redis.take if redis is not None else None) if settings.slack_rate_limit else None
    slack = SlackClient(web, on_call=metrics.record_slack_call, limiter=limiter)
    config = effective_config(settings)

    def kick() -> None:  # new work was committed: run it now (bound once the outbox exists)
        outbox.kick()

    events, rest = pagerduty_clients(settings, on_call=metrics.record_pagerduty_call)
    paging = PagingService(db, events, rest, clock=clock, on_commit=kick)
    timers = TimerRunner(db, config, clock=clock, on_fired=kick)
    policy = Policy()
    alertmanager = WebhookEndpoint(settings, db, kick, clock=clock)
    pagerduty = PagerDutyWebhook(settings, db, config, on_commit=kick, clock=clock)
    runbooks, actions = _runbooks(settings), action_clients(settings)
    approvals = Approvals(db, slack, config, runbooks, actions, clock=clock, on_commit=kick)
    declare = DeclareFlow(db, config, slack, clock=clock, on_commit=kick, policy=policy)
    oncall = OnCallCommand(db, config, slack, paging)
    features = (
        SlackSync(db, config, slack, paging, clock=clock).feature(),
        Feature(handlers=paging.handlers, on_close=[paging.close]),
        card_buttons(db, config, slack, policy, clock=clock, on_commit=kick),
        RunbookFlow(db, slack, config, runbooks, actions, policy,
                    clock=clock, on_commit=kick, approvals=approvals).feature(),
        approvals.feature(),
        Silences(db, slack, policy, actions.alertmanager, clock=clock, on_commit=kick,
                 locale=config.runbooks.locale).feature(),
        declare.feature(),
        IncidentCommand(db, config, slack, policy, clock=clock, on_commit=kick, new=declare.from_command).feature(),
        PostmortemJobs(db, config, slack, clock=clock).feature(),
        oncall.feature(),
        SilenceCommand(db, config, slack, policy, approvals, actions.alertmanager,
                       clock=clock, on_commit=kick).feature(),
        AppHome(db, config, slack, policy, oncall, clock=clock, on_commit=kick).feature(),
        mention_feature(),
        TimelineCapture(db, slack, config.channels.announce, clock=clock, on_commit=kick).feature(),
        HeartbeatJobs(db, config, slack, events, clock=clock).feature(),
        Feature(routes=[Route("/alertmanager", alertmanager.handle, methods=["POST"]),
                        Route("/pagerduty", pagerduty.handle, methods=["POST"])],
                loops=[Loop(timers.run, timers.stop)]),
    )
    outbox = Outbox(db, _handlers(features), clock=clock, lease_seconds=settings.job_lease_seconds)
    bolt = _bolt(settings, web, features, db, clock, redis)
    return Bot(settings=settings, db=db, slack=slack, bolt=bolt, outbox=outbox, timers=timers, features=features,
               clock=clock, redis=redis)


def _handlers(features: Sequence[Feature]) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    for feature in features:
        for kind, handler in feature.handlers.items():
            if kind in handlers:
                raise RuntimeError(f"two features handle the job kind {kind!r}")
            handlers[kind] = handler
    return handlers


def _bolt(settings: Settings, web: AsyncWebClient, features: Sequence[Feature], db: Database,
          clock: Callable[[], datetime], redis: RedisStore | None) -> AsyncApp:
    bolt = AsyncApp(signing_secret=settings.slack_signing_secret, client=web,
                    raise_error_for_unhandled_request=False)
    bolt.use(log_request)
    bolt.use(act_once(db, clock, redis))
    for feature in features:
        for action in feature.actions:
            bolt.action(action.action_id, middleware=list(action.middleware))(action.listener)
        for command, listener in feature.commands.items():
            bolt.command(command)(listener)
        for event, listener in feature.events.items():
            bolt.event(event)(listener)
        for callback_id, listener in feature.views.items():
            bolt.view(callback_id)(listener)
        for callback_id, listener in feature.shortcuts.items():
            bolt.shortcut(callback_id)(listener)
    return bolt


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


def create_app(bot: Bot, *, run_worker: bool = True) -> Starlette:
    slack_events = SlackEvents(bot.bolt, bot.settings.slack_signing_secret)
    slack_check = SlackSetupCheck(bot.slack, bot.settings.config.channels.announce)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Database calls run in threads; the default pool (cores + 4) is too small for a
        # webhook burst and the worker's jobs at once.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32, thread_name_prefix="db"))
        # One connection pool for every Slack call instead of a new session per call. A session
        # of our own brings its own timeout (aiohttp's default is 5 minutes): the client's.
        bot.slack.web.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=bot.settings.slack_timeout_seconds))
        await slack_check.log_at_start()
        loops = [Loop(bot.outbox.run, bot.outbox.stop), *(loop for f in bot.features for loop in f.loops)]
        tasks = [asyncio.create_task(loop.run()) for loop in loops] if run_worker else []
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            for feature in bot.features:
                for close in feature.on_close:
                    await asyncio.to_thread(close)
            await bot.slack.web.session.close()
            if bot.redis is not None:
                await bot.redis.aclose()

    routes = [Route("/slack/events", slack_events.handle, methods=["POST"]),
              *(route for feature in bot.features for route in feature.routes),
              *health_routes(bot.settings, bot.db, slack_check, clock=bot.clock, redis=bot.redis)]
    return Starlette(routes=routes, lifespan=lifespan)
