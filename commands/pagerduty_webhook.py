"""POST /pagerduty: PagerDuty webhooks v3 applied to our incidents.

The signature (`X-PagerDuty-Signature`, HMAC-SHA256 under PAGERDUTY_WEBHOOK_SECRET) is checked
on the raw body before anything is parsed; unsigned or badly signed requests get a 401 and
change nothing. What PagerDuty tells us is applied without echoing it back to PagerDuty, once
and in order (bot.escalation.apply_pagerduty_event): a redelivered event id is a "duplicate", an
event older than the incident's current episode or its last applied event is "stale"; both are
answered 200 (a 4xx would only make PagerDuty retry or disable the subscription) and change nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col
from starlette.requests import Request
from starlette.responses import JSONResponse

from bot import escalation
from bot.config import OncallConfig, Settings
from bot.db import Database
from bot.models import Incident, Paging, utcnow
from commands.http_body import BodyError, read_body
from integrations.pagerduty import WebhookEvent, verify_webhook_signature

__all__ = ["PagerDutyWebhook"]

log = logging.getLogger(__name__)


class PagerDutyWebhook:
    def __init__(self, settings: Settings, db: Database, config: OncallConfig, *, on_commit: Callable[[], None],
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.secret, self.limit = settings.pagerduty_webhook_secret, settings.max_webhook_bytes
        self.db, self.config, self.on_commit, self.clock = db, config, on_commit, clock

    async def handle(self, request: Request) -> JSONResponse:
        try:
            body = await read_body(request, self.limit)
        except BodyError as exc:
            return JSONResponse({"error": exc.error}, status_code=exc.status)
        if not self.secret:
            return JSONResponse({"error": "PAGERDUTY_WEBHOOK_SECRET is not set: set it to the webhook "
                                          "subscription's signing secret"}, status_code=401)
        if not verify_webhook_signature(self.secret, body, request.headers.get("x-pagerduty-signature")):
            log.warning("PagerDuty webhook with a missing or wrong signature refused")
            return JSONResponse({"error": "missing or wrong X-PagerDuty-Signature"}, status_code=401)
        try:
            event = WebhookEvent.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])[:200]
            return JSONResponse({"error": f"not a PagerDuty v3 webhook: {where + ': ' if where else ''}{first['msg']}"},
                                status_code=400)
        if not event.is_incident_event or event.incident is None:
            return JSONResponse({"outcome": "ignored", "event_type": event.event_type})
        try:
            outcome, why = await asyncio.to_thread(self._apply, event)
        except SQLAlchemyError as exc:  # PagerDuty retries a 5xx
            log.error("PagerDuty webhook not applied; PagerDuty will retry", extra={"error": repr(exc)})
            return JSONResponse({"error": "could not store the change; retry later"}, status_code=503)
        self.on_commit()
        log.info("PagerDuty webhook applied", extra={"event_type": event.event_type, "event_id": event.id,
                                                     "outcome": outcome, "why": why or None})
        return JSONResponse({"outcome": outcome, "event_type": event.event_type, **({"why": why} if why else {})})

    def _apply(self, event: WebhookEvent) -> tuple[str, str]:
        pd = event.incident
        assert pd is not None
        with self.db.session() as session:
            found = session.scalars(select(col(Paging.incident_id)).where(or_(
                col(Paging.dedup_key) == (pd.incident_key or ""), col(Paging.pd_incident_id) == pd.id))).first()
            incident = session.get(Incident, found, with_for_update=True) if found is not None else None
            if incident is None:
                return "not ours", ""

            def apply(paging: Paging) -> str:
                paging.pd_incident_id = pd.id  # only a current event may name the PagerDuty incident
                return self._dispatch(session, incident, event)

            return escalation.apply_pagerduty_event(session, incident, event.id, event.event_type,
                                                    event.occurred_at, self.clock(), apply)

    def _dispatch(self, session: Session, incident: Incident, event: WebhookEvent) -> str:
        pd, now = event.incident, self.clock()
        assert pd is not None
        who = (event.agent.summary if event.agent else None) or "PagerDuty"
        if event.event_type == "incident.acknowledged":
            changed = escalation.acknowledge(session, incident, who, now, "pagerduty")
        elif event.event_type == "incident.resolved":
            changed = escalation.resolve(session, incident, who, now, "pagerduty",
                                         reason=f"resolved in PagerDuty by {who}")
        elif event.event_type in ("incident.escalated", "incident.reassigned"):
            assignees = [(a.id, a.summary or a.id) for a in pd.assignees]
            changed = escalation.apply_pagerduty_assignment(session, incident, event.event_type, assignees, now)
        else:
            return "recorded"
        return "applied" if changed else "unchanged"
