"""PagerDuty delivery: the outbox handlers for the `pagerduty.*` jobs that bot.escalation writes.

bot.escalation decides *that* PagerDuty must hear something (trigger, acknowledge, resolve,
escalate to a level) and records it as a job in the incident's PagerDuty lane; this module
turns each job into the PagerDuty call, built from the incident as it is when the call is
made, and records how the newest page fared (the card shows it). A failure that may pass
(429, 5xx, no answer) leaves as the integration's error and the outbox retries it; the
clients are injected, so tests and the benchmark point them at a fake PagerDuty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from bot.config import OncallConfig, Settings
from bot.db import Database
from bot.jobs import JOB_CARD, JOB_PD_ESCALATE, JOB_PD_EVENT, enqueue
from bot.models import Incident, Job, Paging
from bot.outbox import PermanentError, RetryLater
from integrations.pagerduty import (
    OnCallHook,
    OnCallUser,
    PagerDutyError,
    PagerDutyEvent,
    PagerDutyEvents,
    PagerDutyRest,
)

__all__ = ["LOOKAHEAD", "LevelRota", "OnCall", "PagingService", "Rota", "Shift", "effective_config",
           "now_and_next", "pagerduty_clients"]

log = logging.getLogger(__name__)

NOT_FOUND_RETRY = 5.0  # seconds: PagerDuty opens the incident for a trigger shortly after the 202
LOOKAHEAD = timedelta(days=30)  # how far ahead `/oncall` looks for who is on call next
ALREADY_RESOLVED = 1001  # REST error code: the incident is resolved there, nothing to escalate
BOT = "oncall-bot"
PD_SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}


def effective_config(settings: Settings) -> OncallConfig:
    """The YAML policy with PAGERDUTY_ROUTING_KEY as the default routing key."""
    pd = settings.config.pagerduty
    if pd.routing_key or not settings.pagerduty_routing_key:
        return settings.config
    return settings.config.model_copy(update={"pagerduty": pd.model_copy(
        update={"routing_key": settings.pagerduty_routing_key})})


def pagerduty_clients(settings: Settings, *, on_call: OnCallHook | None = None,
                      ) -> tuple[PagerDutyEvents, PagerDutyRest | None]:
    """The Events API client (always: it needs no token) and the REST client (with a token);
    `on_call` is told of every call (metrics)."""
    verify: Any = settings.pagerduty_ca_file or True
    events = PagerDutyEvents(base_url=settings.pagerduty_events_url, verify=verify, on_call=on_call)
    rest = PagerDutyRest(settings.pagerduty_api_token, default_from=settings.pagerduty_from_email,
                         base_url=settings.pagerduty_api_url, verify=verify,
                         on_call=on_call) if settings.pagerduty_api_token else None
    return events, rest


@dataclass(frozen=True)
class OnCall:
    """Who PagerDuty has on call for a page: people to invite (name, e-mail), and what kept
    the bot from knowing more (`missing`) or from inviting someone (`not_on_call`)."""

    people: list[tuple[str, str | None]] = field(default_factory=list)
    not_on_call: list[str] = field(default_factory=list)
    missing: str | None = None


@dataclass(frozen=True)
class Shift:
    """One person on call at a level, from `start` to `end` (None: always, a direct target)."""

    name: str
    email: str | None
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True)
class LevelRota:
    """Who is on call at one level now, and who takes over next (nobody known: empty)."""

    level: int
    now: list[Shift] = field(default_factory=list)
    next: list[Shift] = field(default_factory=list)

    @property
    def always(self) -> bool:
        """Everyone on call now is so for good (the policy targets them directly): no next."""
        return bool(self.now) and all(s.end is None for s in self.now)


@dataclass(frozen=True)
class Rota:
    """Who PagerDuty has on call for a policy, per level, as of `at` (looking LOOKAHEAD ahead), or
    what kept the bot from asking (`missing`)."""

    at: datetime
    levels: dict[int, LevelRota] = field(default_factory=dict)
    missing: str | None = None


def now_and_next(shifts: list[OnCallUser], at: datetime) -> dict[int, LevelRota]:
    """Per level: who is on call at `at` (their period covers it) and who is next: those whose
    shift starts when the first current one ends (the handover), else, when nobody hands over
    (nobody on call now, or a gap), the earliest shift starting after `at`."""
    levels: dict[int, LevelRota] = {}
    for level in sorted({s.escalation_level for s in shifts}):
        mine = [s for s in shifts if s.escalation_level == level]
        now = [s for s in mine if (s.start is None or s.start <= at) and (s.end is None or s.end > at)]
        later = [s for s in mine if s.start is not None and s.start > at]
        ends = [s.end for s in now if s.end is not None]
        handover = min(ends) if ends else None
        upcoming = [s for s in later if s.start == handover]
        # no exact handover (a gap, or nobody on call now): the first to start; those on call for
        # good (no end) hand over to nobody
        if not upcoming and later and (handover is not None or not now):
            first = min(s.start for s in later if s.start is not None)
            upcoming = [s for s in later if s.start == first]
        levels[level] = LevelRota(level, [_shift(s) for s in now], [_shift(s) for s in upcoming])
    return levels


def _shift(user: OnCallUser) -> Shift:
    return Shift(name=user.name, email=user.email or None, start=user.start, end=user.end)


def trigger_event(incident: Incident, paging: Paging) -> PagerDutyEvent:
    labels = {k[:100]: v[:200] for k, v in list(sorted(incident.labels.items()))[:50]}
    return PagerDutyEvent.model_validate({
        "action": "trigger", "routing_key": paging.routing_key, "dedup_key": paging.dedup_key,
        "summary": f"[{incident.severity}] {incident.title}"[:1024],
        # PagerDuty refuses a blank source (400, for good): a label of spaces must not lose the page
        "source": next((v.strip() for v in (incident.service, incident.alertname) if v and v.strip()), BOT)[:255],
        "severity": PD_SEVERITY.get(incident.severity, "critical"),
        "timestamp": incident.created_at, "component": incident.service, "group": incident.namespace,
        "class": incident.alertname, "custom_details": {"incident": incident.id, "labels": labels,
                                                        "slack_channel": incident.channel_name},
    })


class PagingService:
    def __init__(self, db: Database, events: PagerDutyEvents, rest: PagerDutyRest | None, *,
                 clock: Callable[[], datetime], on_commit: Callable[[], None]) -> None:
        self.db, self.events, self.rest, self.clock, self.on_commit = db, events, rest, clock, on_commit

    @property
    def handlers(self) -> dict[str, Callable[[Job], Awaitable[None]]]:
        return {JOB_PD_EVENT: self.send_event, JOB_PD_ESCALATE: self.escalate}

    def close(self) -> None:
        self.events.close()
        if self.rest is not None:
            self.rest.close()

    # -- outbox handlers ---------------------------------------------------------------------

    async def send_event(self, job: Job) -> None:
        event = await asyncio.to_thread(self._event, job)
        try:
            await asyncio.to_thread(self.events.send, event)
        except PagerDutyError as exc:
            await asyncio.to_thread(self._delivery, job, str(exc), not exc.retryable)
            raise  # the outbox retries what may pass (retryable, Retry-After)
        await asyncio.to_thread(self._delivery, job, None)

    def _event(self, job: Job) -> PagerDutyEvent:
        action = str(job.payload.get("action", ""))
        try:
            if "routing_key" in job.payload:  # written before 0006: the whole event is in the job
                return PagerDutyEvent.model_validate({k: v for k, v in job.payload.items() if v is not None})
            with self.db.read() as session:
                incident, paging = session.get(Incident, job.incident_id), session.get(Paging, job.incident_id)
            if incident is None or paging is None:
                raise PermanentError(f"incident {job.incident_id} or its paging row does not exist")
            if action == "trigger":
                return trigger_event(incident, paging)
            return PagerDutyEvent.model_validate({"action": action, "routing_key": paging.routing_key,
                                                  "dedup_key": paging.dedup_key})
        except ValidationError as exc:
            raise PermanentError(f"not a valid PagerDuty event: {exc}") from exc

    async def escalate(self, job: Job) -> None:
        if self.rest is None:
            raise PermanentError("PAGERDUTY_API_TOKEN is not set: the bot cannot escalate in PagerDuty")
        rest = self.rest
        try:
            paging = await asyncio.to_thread(self._paging, job.incident_id)
            pd_id = paging.pd_incident_id
            if pd_id is None:
                found = await asyncio.to_thread(rest.find_incident, paging.dedup_key)
                if found is None:
                    raise RetryLater(f"PagerDuty has no incident for {paging.dedup_key} yet", NOT_FOUND_RETRY)
                pd_id = found.id
            result = await asyncio.to_thread(rest.escalate, pd_id, int(job.payload["pagerduty_level"]))
        except PagerDutyError as exc:
            if exc.code == ALREADY_RESOLVED:
                await asyncio.to_thread(self._delivery, job, None)
                return
            await asyncio.to_thread(self._delivery, job, str(exc), not exc.retryable)
            raise
        await asyncio.to_thread(self._delivery, job, None, False, result.id, list(result.assignee_ids))

    def _paging(self, incident_id: int | None) -> Paging:
        with self.db.read() as session:
            paging = session.get(Paging, incident_id)
        if paging is None:
            raise PermanentError(f"incident {incident_id} has no paging row")
        return paging

    def _delivery(self, job: Job, error: str | None, final: bool = False, pd_id: str | None = None,
                  assignees: list[str] | None = None) -> None:
        """Record how the newest page fared; the card shows it (refreshed on change only)."""
        with self.db.session() as session:
            paging = session.get(Paging, job.incident_id, with_for_update=True)
            if paging is None:
                return
            if pd_id:
                paging.pd_incident_id = pd_id
            if assignees:
                paging.assignees = sorted(assignees)  # a webhook echoing our own escalation is then a no-op
            if paging.page_job_id != job.id:
                return
            before = (paging.delivery, paging.last_error is None)
            if error is None:
                paging.delivery, paging.delivered_at, paging.last_error = "delivered", self.clock(), None
            else:
                paging.delivery, paging.last_error = ("failed" if final else "pending"), error[:500]
            if (paging.delivery, paging.last_error is None) != before:
                enqueue(session, JOB_CARD, paging.incident_id, now=self.clock(), coalesce=True)
        self.on_commit()

    # -- who is on call ----------------------------------------------------------------------

    async def rota(self, policy: str | None) -> Rota:
        """Who is on call now and next at every level of `policy`, in one PagerDuty request (the
        shifts from now to LOOKAHEAD ahead). Raises PagerDutyError when PagerDuty cannot say."""
        at = self.clock()
        if self.rest is None or not policy:
            return Rota(at, missing="PAGERDUTY_API_TOKEN is not set" if self.rest is None
                        else "no escalation policy is configured")
        shifts = await asyncio.to_thread(self.rest.oncall_shifts, [policy], since=at, until=at + LOOKAHEAD)
        return Rota(at, now_and_next([s for s in shifts if s.escalation_policy_id in (None, policy)], at))

    async def on_call(self, payload: dict[str, Any]) -> OnCall:
        """Who to invite for a page (`pagerduty_level` of `policy`) or a PagerDuty reassignment
        (`user_ids`, with their `names`). Raises PagerDutyError when PagerDuty cannot say."""
        policy = payload.get("policy")
        if self.rest is None or not policy:
            missing = "PAGERDUTY_API_TOKEN is not set" if self.rest is None else "no escalation policy is configured"
            return OnCall(missing=missing)
        level = None if payload.get("user_ids") else payload.get("pagerduty_level")
        users = await asyncio.to_thread(self.rest.oncall_users, policy, escalation_level=level)
        not_on_call: list[str] = []
        if payload.get("user_ids"):
            on_call = {u.id for u in users}
            not_on_call = [name for user_id, name in payload.get("names", {}).items() if user_id not in on_call]
            users = [u for u in users if u.id in payload["user_ids"]]
        return OnCall(people=[(u.name, u.email) for u in users], not_on_call=not_on_call)
