"""PagerDuty and the incident card's Ack / Resolve / Escalate buttons.

* Outbox handlers for the `pagerduty.*` jobs that bot.escalation writes: Events API v2 events,
  REST escalations, and inviting whoever is on call into the incident channel. A PagerDuty
  failure that may pass (429, 5xx, no answer) is retried later, never dropped.
* A card decorator: the buttons, and what paging did ("page pending" / "delivered", held by a
  maintenance window, acknowledged in PagerDuty).
* The Bolt listeners for the buttons: ack within 3 s, then one domain call.
* The timer runner, started with the server (bot.timers).

`POST /pagerduty` (webhooks from PagerDuty) lives in commands.pagerduty_webhook.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp
from sqlalchemy import select
from sqlmodel import Session

from bot import escalation
from bot.config import OncallConfig, Settings
from bot.escalation import JOB_PD_ESCALATE, JOB_PD_EVENT, JOB_PD_INVITE, Paging, Timer, TimerStatus
from bot.incidents import JOB_CARD
from bot.models import Incident, Job
from bot.outbox import PermanentError, RetryLater, backoff, enqueue
from bot.timers import TimerRunner
from commands.blockkit import button
from commands.cards import CardView
from commands.pagerduty_webhook import PagerDutyWebhook
from commands.slack_sync import incident_thread, message_tag, post_once, slack_failure
from integrations.pagerduty import PagerDutyError, PagerDutyEvent, PagerDutyEvents, PagerDutyRest
from integrations.slack import SlackError

if TYPE_CHECKING:
    from commands.server import Services

__all__ = ["ACK", "ESCALATE", "RESOLVE", "PagingService", "register"]

log = logging.getLogger(__name__)

ACK, RESOLVE, ESCALATE = "incident_ack", "incident_resolve", "incident_escalate"
NOT_FOUND_RETRY = 5.0  # seconds: PagerDuty opens the incident for a trigger shortly after the 202


def effective_config(settings: Settings) -> OncallConfig:
    """The YAML policy with PAGERDUTY_ROUTING_KEY as the default routing key."""
    pd = settings.config.pagerduty
    if pd.routing_key or not settings.pagerduty_routing_key:
        return settings.config
    return settings.config.model_copy(update={"pagerduty": pd.model_copy(
        update={"routing_key": settings.pagerduty_routing_key})})


def _retry(exc: PagerDutyError, job: Job) -> Exception:
    """PagerDuty's failure in the outbox's terms: later (honouring Retry-After), or never."""
    if exc.retryable:
        return RetryLater(str(exc), exc.retry_after if exc.retry_after is not None else backoff(job.attempts))
    return PermanentError(str(exc))


class PagingService:
    def __init__(self, services: "Services") -> None:
        settings = services.settings
        self.db, self.slack, self.clock, self.kick = services.db, services.slack, services.clock, services.outbox.kick
        self.config = effective_config(settings)
        self.dedicated_for = set(settings.config.channels.dedicated_for)
        self.announce_channel = settings.config.channels.announce
        verify: Any = settings.pagerduty_ca_file or True
        self.events = PagerDutyEvents(base_url=settings.pagerduty_events_url, verify=verify)
        self.rest = PagerDutyRest(settings.pagerduty_api_token, default_from=settings.pagerduty_from_email,
                                  base_url=settings.pagerduty_api_url, verify=verify) \
            if settings.pagerduty_api_token else None
        self.runner = TimerRunner(self.db, self.config, clock=self.clock, on_fired=self.kick)
        self.webhook = PagerDutyWebhook(settings, self.db, self.config, on_commit=self.kick, clock=self.clock)

    @property
    def handlers(self) -> dict[str, Callable[[Job], Awaitable[None]]]:
        return {JOB_PD_EVENT: self.send_event, JOB_PD_ESCALATE: self.escalate, JOB_PD_INVITE: self.invite_oncall}

    async def run(self) -> None:
        """The timer runner, for the server's lifespan."""
        try:
            await self.runner.run()
        finally:
            await asyncio.to_thread(self.close)

    def stop(self) -> None:
        self.runner.stop()

    def close(self) -> None:
        self.events.close()
        if self.rest is not None:
            self.rest.close()

    # -- outbox handlers ---------------------------------------------------------------------

    async def send_event(self, job: Job) -> None:
        try:
            event = PagerDutyEvent.model_validate({k: v for k, v in job.payload.items() if v is not None})
        except ValidationError as exc:
            raise PermanentError(f"not a valid PagerDuty event: {exc}") from exc
        try:
            await asyncio.to_thread(self.events.send, event)
        except PagerDutyError as exc:
            await asyncio.to_thread(self._delivery, job, str(exc), not exc.retryable)
            raise _retry(exc, job) from exc
        await asyncio.to_thread(self._delivery, job, None)

    async def escalate(self, job: Job) -> None:
        if self.rest is None:
            raise PermanentError("PAGERDUTY_API_TOKEN is not set: the bot cannot escalate in PagerDuty")
        rest, key = self.rest, str(job.payload["dedup_key"])
        try:
            pd_id = await asyncio.to_thread(self._pd_incident_id, job)
            if pd_id is None:
                found = await asyncio.to_thread(rest.find_incident, key)
                if found is None:
                    raise RetryLater(f"PagerDuty has no incident for {key} yet", NOT_FOUND_RETRY)
                pd_id = found.id
            result = await asyncio.to_thread(rest.escalate, pd_id, int(job.payload["pagerduty_level"]))
        except PagerDutyError as exc:
            if exc.code == 1001:  # already resolved there: nothing left to escalate
                await asyncio.to_thread(self._delivery, job, None)
                return
            await asyncio.to_thread(self._delivery, job, str(exc), not exc.retryable)
            raise _retry(exc, job) from exc
        await asyncio.to_thread(self._delivery, job, None, False, result.id, list(result.assignee_ids))

    def _pd_incident_id(self, job: Job) -> str | None:
        with self.db.read() as session:
            paging = session.get(Paging, escalation.incident_of_lane(job.incident_id))
            return paging.pd_incident_id if paging else None

    def _delivery(self, job: Job, error: str | None, final: bool = False, pd_id: str | None = None,
                  assignees: list[str] | None = None) -> None:
        """Record how the newest page fared; the card shows it (refreshed on change only)."""
        with self.db.session() as session:
            paging = session.get(Paging, escalation.incident_of_lane(job.incident_id), with_for_update=True)
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
                enqueue(session, JOB_CARD, now=self.clock(), incident_id=paging.incident_id, coalesce=True)
        self.kick()

    async def invite_oncall(self, job: Job) -> None:
        """Whoever PagerDuty has on call (or was assigned) joins the incident channel."""
        incident = await asyncio.to_thread(self._incident, job.payload.get("incident"))
        if incident is None or not incident.is_open:
            return
        if incident.card_ts is None or (incident.severity in self.dedicated_for and not incident.channel_ready):
            raise RetryLater("the incident's channel is not ready yet", backoff(job.attempts))
        try:
            text = await self._invite(incident, job.payload)
        except PagerDutyError as exc:
            raise _retry(exc, job) from exc
        except SlackError as exc:
            raise slack_failure(exc, self.announce_channel) from exc
        await self._post(incident, text, job)

    async def _invite(self, incident: Incident, payload: dict[str, Any]) -> str:
        name, policy = payload.get("level_name", "on-call"), payload.get("policy")
        if self.rest is None or not policy:
            missing = "PAGERDUTY_API_TOKEN is not set" if self.rest is None else "no escalation policy is configured"
            return f":pager: {name}: {missing}, so the bot cannot tell who is on call."
        level = None if payload.get("user_ids") else payload.get("pagerduty_level")
        users = await asyncio.to_thread(self.rest.oncall_users, policy, escalation_level=level)
        found: list[str] = []
        unknown: list[str] = []
        if payload.get("user_ids"):
            on_call = {u.id for u in users}
            unknown += [f"{name} (not on call in PagerDuty: invite them by hand)"
                        for user_id, name in payload.get("names", {}).items() if user_id not in on_call]
            users = [u for u in users if u.id in payload["user_ids"]]
        for user in users:
            slack_id = await self.slack.user_id_by_email(user.email) if user.email else None
            (found.append(slack_id) if slack_id else unknown.append(f"{user.name} (no Slack user for {user.email})"))
        found = list(dict.fromkeys(found))
        if found and incident.channel_id:
            refused = await self.slack.invite(incident.channel_id, found)
            unknown += [f"<@{user}> ({error})" for user, error in refused]
        people = ", ".join(f"<@{u}>" for u in found) or "nobody found on call"
        verb = " invited" if found and incident.channel_id else ""
        return f":pager: {name}: {people}{verb}." + (f" Could not invite: {', '.join(unknown)}." if unknown else "")

    async def _post(self, incident: Incident, text: str, job: Job) -> None:
        where = incident_thread(incident)
        if where is None:
            return
        try:
            await post_once(self.slack, where[0], text, thread_ts=where[1], retry=job.attempts > 1,
                            tag=message_tag(incident, "notice", job=job.id))
        except SlackError as exc:
            raise slack_failure(exc, self.announce_channel) from exc

    def _incident(self, incident_id: int | None) -> Incident | None:
        with self.db.read() as session:
            return session.get(Incident, incident_id)

    # -- the card ----------------------------------------------------------------------------

    def decorate(self, incident: Incident, view: CardView) -> None:
        """Runs in a worker thread while the card is built (SlackSync.decorators)."""
        with self.db.read() as session:
            paging = session.get(Paging, incident.id)
            page_at = session.scalar(select(Timer.due_at).where(
                Timer.incident_id == incident.id, Timer.kind == escalation.PAGE,
                Timer.status == TimerStatus.PENDING).order_by(Timer.due_at))  # type: ignore[arg-type]
            window = escalation.active_maintenance(session, self.config, incident.labels, self.clock())
        pages = self.config.escalation.for_severity(incident.severity).page_minutes is not None
        unconfigured = pages and self.config.pagerduty.route(incident.labels)[0] is None
        view.notes += _paging_notes(incident, paging, page_at, window, unconfigured)
        if incident.is_open:
            view.actions += _buttons(incident, paging)

    # -- buttons -----------------------------------------------------------------------------

    def register(self, app: AsyncApp) -> None:
        app.action(ACK)(self._listener(_ack))
        app.action(RESOLVE)(self._listener(_resolve))
        app.action(ESCALATE)(self._listener(self._escalate))

    def _escalate(self, session: Session, incident: Incident, user: str, now: datetime) -> str:
        if escalation.escalate_now(session, incident, user, now, "slack", self.config):
            return ""
        return "Nothing to escalate: the top level is already paged, or the incident is resolved."

    def _listener(self, apply: Callable[[Session, Incident, str, datetime], str]) -> Any:
        async def listener(ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any) -> None:
            await ack()  # within Slack's 3 s; the work below is a short transaction
            user = body["user"]["id"]
            reply = await asyncio.to_thread(self._apply, str(action.get("value", "")), user, apply)
            self.kick()
            if reply:
                # response_url, not chat.postEphemeral: the clicker may not be in the channel.
                try:
                    await respond(text=reply, response_type="ephemeral", replace_original=False)
                except Exception as exc:  # noqa: BLE001 - a courtesy note; the click was handled
                    log.warning("could not tell %s: %s (%r)", user, reply, exc)

        return listener

    def _apply(self, value: str, user: str, apply: Callable[[Session, Incident, str, datetime], str]) -> str:
        if not value.isdigit():
            return "This button does not belong to an incident."
        with self.db.session() as session:
            incident = session.get(Incident, int(value), with_for_update=True)
            if incident is None:
                return "This incident no longer exists."
            return apply(session, incident, user, self.clock())


# What a click does: one domain call; the text is the ephemeral answer when nothing changed.

def _ack(session: Session, incident: Incident, user: str, now: datetime) -> str:
    if escalation.acknowledge(session, incident, user, now, "slack"):
        return ""
    if not incident.is_open:
        return "This incident is already resolved."
    return f"Already acknowledged{f' by <@{incident.acknowledged_by}>' if incident.acknowledged_by else ''}."


def _resolve(session: Session, incident: Incident, user: str, now: datetime) -> str:
    return "" if escalation.resolve(session, incident, user, now, "slack") else "This incident is already resolved."


def _buttons(incident: Incident, paging: Paging | None) -> list[dict[str, Any]]:
    value = str(incident.id)
    paged = paging is not None and paging.level > 0
    buttons = [] if incident.acknowledged_at else [button("Ack", ACK, value, style="primary")]
    buttons.append(button("Escalate now" if paged else "Page now", ESCALATE, value))
    buttons.append(button("Resolve", RESOLVE, value, style="danger", confirm={
        "title": {"type": "plain_text", "text": "Resolve the incident?"},
        "text": {"type": "plain_text", "text": "Timers stop and PagerDuty is resolved too."},
        "confirm": {"type": "plain_text", "text": "Resolve"}, "deny": {"type": "plain_text", "text": "Cancel"}}))
    return buttons


NOT_CONFIGURED = (":warning: Nobody will be paged: PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY, "
                  "or a pagerduty route matching this incident's labels)")


def _paging_notes(incident: Incident, paging: Paging | None, page_at: datetime | None,
                  window: tuple[str, datetime] | None, unconfigured: bool) -> list[str]:
    notes: list[str] = []
    if paging is None:
        return notes
    if incident.is_open and paging.level == 0 and unconfigured:
        return [NOT_CONFIGURED]  # from the start, not only once the page comes due and fails
    if paging.acked_in_pagerduty_by:
        notes.append(f":white_check_mark: Acknowledged in PagerDuty by {_plain(paging.acked_in_pagerduty_by)}")
    if incident.is_open and window and paging.level == 0:
        notes.append(f":construction: Maintenance window *{_plain(window[0])}* until "
                     f"{window[1]:%Y-%m-%d %H:%M} UTC: nobody is paged")
    elif incident.is_open and paging.held:
        notes.append(f":construction: {paging.held}")
    if paging.level > 0:
        state = {"pending": ":hourglass_flowing_sand: page pending", "failed": ":x: page failed",
                 "delivered": ":pager: page delivered"}.get(paging.delivery, paging.delivery)
        when = f" at {paging.delivered_at:%H:%M} UTC" if paging.delivery == "delivered" and paging.delivered_at else ""
        error = f" (retrying: {_plain(paging.last_error[:150])})" if paging.delivery == "pending" and \
            paging.last_error else f" ({_plain(paging.last_error[:150])})" if paging.delivery == "failed" and \
            paging.last_error else ""
        notes.append(f"{state}{when} · PagerDuty level {paging.level}{error}")
    elif incident.is_open and page_at and not incident.acknowledged_at and not window:
        notes.append(f":alarm_clock: Pages on-call at {page_at:%Y-%m-%d %H:%M} UTC unless acknowledged")
    return notes


def _plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def register(services: "Services") -> PagingService:
    """Handlers into the outbox, the decorator onto the card, the buttons onto Bolt."""
    service = PagingService(services)
    services.handlers.update(service.handlers)
    services.sync.decorators.append(service.decorate)
    service.register(services.bolt)
    return service
