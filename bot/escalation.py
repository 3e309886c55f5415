"""Escalation: timers in the database, pages through the outbox, Slack and PagerDuty in step.

Every effect is written in the caller's transaction: a timer's effect commits together with
the timer marked fired (bot.timers claims it), an acknowledgement together with the
PagerDuty event it owes. Nothing here talks to PagerDuty or Slack; jobs do (commands.paging).

Conditions are checked when a timer fires, under the incident's row lock, so a timer whose
condition no longer holds (acknowledged, resolved, already paged) is skipped even if its
cancellation lost a race. Lock order everywhere: timer, then incident, then paging; code that
holds an incident never waits for a timer row (cancellation skips locked timers).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, Index, String, Text, select
from sqlmodel import Field, Session, SQLModel

from bot import metrics
from bot.config import OncallConfig
from bot.escalation_policy import EscalationLevel, SeverityEscalation, labels_match
from bot.incidents import JOB_CARD, JOB_NOTIFY, TRANSITIONS, add_timeline, transition
from bot.models import Incident, IncidentStatus, UTCDateTime, utcnow
from bot.outbox import enqueue

__all__ = [
    "JOB_PD_EVENT", "JOB_PD_ESCALATE", "JOB_PD_INVITE", "MaintenanceWindow", "Paging", "PagerDutyWebhookEvent", "Timer",
    "TimerStatus", "acknowledge", "active_maintenance", "add_maintenance", "apply_pagerduty_assignment",
    "apply_pagerduty_event", "cancel_maintenance", "dedup_key",
    "escalate_now", "fire", "incident_of_lane", "on_incident_opened", "on_incident_reopened", "on_incident_resolved",
    "on_severity_raised", "pd_lane", "resolve", "status_update_posted",
]

JOB_PD_EVENT = "pagerduty.event"
JOB_PD_ESCALATE = "pagerduty.escalate"
JOB_PD_INVITE = "pagerduty.invite_oncall"  # a Slack job: on-call e-mail → Slack user → channel

PAGE, ESCALATE, ACK_OVERDUE, REMINDER = "page", "escalate", "ack_overdue", "reminder"
BOT = "oncall-bot"
PD_SEVERITY = {"P1": "critical", "P2": "error", "P3": "warning", "P4": "info"}
S = IncidentStatus


class TimerStatus(str, Enum):
    PENDING = "pending"
    FIRED = "fired"          # its effect was applied
    SKIPPED = "skipped"      # due, but its condition no longer held
    CANCELLED = "cancelled"  # called off before it was due (ack, resolve)
    FAILED = "failed"        # its effect kept raising; kept for the operator


class Timer(SQLModel, table=True):
    __tablename__ = "timer"
    __table_args__ = (Index("ix_timer_due", "status", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    kind: str = Field(max_length=32)
    due_at: datetime = Field(sa_type=UTCDateTime)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: TimerStatus = Field(default=TimerStatus.PENDING, sa_type=String(16))
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    fired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lateness_seconds: float | None = None
    outcome: str | None = Field(default=None, sa_type=Text)


class Paging(SQLModel, table=True):
    """The PagerDuty side of one incident: its dedup key, how far it was paged, delivery."""

    __tablename__ = "paging"

    incident_id: int = Field(primary_key=True, foreign_key="incident.id", sa_column_kwargs={"autoincrement": False})
    dedup_key: str = Field(max_length=255, unique=True)
    routing_key: str | None = Field(default=None, max_length=64)
    escalation_policy: str | None = Field(default=None, max_length=64)
    level: int = 0  # levels paged so far (0: nobody paged)
    paged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # the timetable's anchor
    page_job_id: int | None = None  # the newest page/escalation job; the card shows its delivery
    delivery: str = Field(default="", max_length=16)  # pending | delivered | failed
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=Text)
    pd_incident_id: str | None = Field(default=None, max_length=64)
    held: str | None = Field(default=None, sa_type=Text)  # why nobody was paged (mrkdwn we composed)
    acked_in_pagerduty_by: str | None = Field(default=None, max_length=128)
    assignees: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When the current episode began (opened, or last reopened): PagerDuty events that occurred
    # before it belong to an earlier episode. None on rows from before 0004: incident.created_at.
    episode_started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_event_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # newest applied webhook event


class PagerDutyWebhookEvent(SQLModel, table=True):
    """A webhook event PagerDuty sent about one of our incidents. PagerDuty redelivers (retries,
    replays), so an event id is looked at once; the row keeps what was made of it."""

    __tablename__ = "pagerduty_event"

    event_id: str = Field(primary_key=True, sa_type=Text)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    event_type: str = Field(sa_type=Text)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = Field(sa_type=UTCDateTime)
    outcome: str = Field(sa_type=Text)


class MaintenanceWindow(SQLModel, table=True):
    """A window declared by command (config windows live in escalation.maintenance)."""

    __tablename__ = "maintenance_window"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    match: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    starts_at: datetime = Field(sa_type=UTCDateTime)
    ends_at: datetime = Field(sa_type=UTCDateTime, index=True)
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


# -- keys and lanes ----------------------------------------------------------------------------

def dedup_key(incident: Incident) -> str:
    """Stable for the incident's life (reopen included) and unique across database resets."""
    return f"oncall-bot-{incident.id}-{int(incident.created_at.timestamp())}"


def pd_lane(incident_id: int) -> int:
    # The outbox runs one incident's jobs in order, keyed by incident_id. PagerDuty jobs use a
    # lane of their own (the negated id) so a Slack outage never holds up a page, while
    # trigger → acknowledge → resolve still reach PagerDuty in order.
    return -incident_id


def incident_of_lane(lane: int | None) -> int:
    assert lane is not None and lane < 0, "not a PagerDuty lane"
    return -lane


# -- small helpers -----------------------------------------------------------------------------

def _paging(session: Session, incident: Incident) -> Paging:
    assert incident.id is not None
    paging = session.get(Paging, incident.id, with_for_update=True, populate_existing=True)
    if paging is None:
        paging = Paging(incident_id=incident.id, dedup_key=dedup_key(incident))
        session.add(paging)
        session.flush()
    return paging


def _say(session: Session, incident: Incident, text: str, now: datetime) -> None:
    enqueue(session, JOB_NOTIFY, now=now, incident_id=incident.id, payload={"text": text})


def _card(session: Session, incident: Incident, now: datetime) -> None:
    enqueue(session, JOB_CARD, now=now, incident_id=incident.id, coalesce=True)


def _who(incident: Incident) -> str:
    person = incident.commander or incident.acknowledged_by
    return f"<@{person}>" if person else "nobody has taken command yet (press *Ack* on the card)"


def schedule(session: Session, incident: Incident, kind: str, due: datetime,
             payload: dict[str, Any] | None = None) -> Timer:
    assert incident.id is not None
    timer = Timer(incident_id=incident.id, kind=kind, due_at=due, payload=payload or {})
    session.add(timer)
    return timer


def cancel(session: Session, incident_id: int, keep: Callable[[Timer], bool] = lambda t: False) -> int:
    """Call off the incident's pending timers (except those `keep` names). A timer being fired
    right now is locked and skipped here; it re-checks its condition and skips itself."""
    query = (select(Timer).where(Timer.incident_id == incident_id, Timer.status == TimerStatus.PENDING)
             .with_for_update(skip_locked=True))
    count = 0
    for timer in session.scalars(query):
        if not keep(timer):
            timer.status = TimerStatus.CANCELLED
            count += 1
    return count


# -- arming ------------------------------------------------------------------------------------

def _arm(session: Session, incident: Incident, config: OncallConfig, anchor: datetime) -> None:
    rule = config.escalation.for_severity(incident.severity)
    page = rule.page_minutes
    if page is not None:
        due = anchor + timedelta(minutes=page)
        why = f"not acknowledged within {page} min" if page == rule.ack_minutes else (
            f"{incident.severity} pages at once" if page == 0 else f"not acknowledged {page} min after opening")
        if rule.business_hours_only:
            opens = config.escalation.business_hours.next_open(due)
            why += "" if opens == due else ", held for business hours"
            due = opens
        schedule(session, incident, PAGE, due, {"why": why})
    if rule.ack_minutes is not None and rule.ack_minutes != page:
        schedule(session, incident, ACK_OVERDUE, anchor + timedelta(minutes=rule.ack_minutes),
                 {"minutes": rule.ack_minutes})
    if rule.update_minutes:
        schedule(session, incident, REMINDER, anchor + timedelta(minutes=rule.update_minutes),
                 {"minutes": rule.update_minutes})


def on_incident_opened(session: Session, incident: Incident, config: OncallConfig, now: datetime) -> None:
    """Called by bot.incidents when an incident opens: its paging row and its timers."""
    _paging(session, incident).episode_started_at = now
    _arm(session, incident, config, now)


def on_incident_reopened(session: Session, incident: Incident, config: OncallConfig, now: datetime) -> None:
    """The group fired again: whoever acknowledged the old episode does not own this one."""
    cancel(session, incident.id or 0)
    incident.acknowledged_at, incident.acknowledged_by = None, None
    paging = _paging(session, incident)
    paging.level, paging.paged_at, paging.page_job_id, paging.delivery = 0, None, None, ""
    paging.delivered_at = paging.last_error = paging.pd_incident_id = paging.held = None
    paging.acked_in_pagerduty_by, paging.assignees, paging.updated_at = None, [], now
    paging.episode_started_at = now
    _arm(session, incident, config, now)


def on_severity_raised(session: Session, incident: Incident, config: OncallConfig, now: datetime) -> None:
    """A P3 that became a P1 keeps the P1 timetable, counted from when it opened."""
    paging = _paging(session, incident)
    if incident.acknowledged_at is None and paging.level == 0:
        cancel(session, incident.id or 0, keep=lambda t: t.kind == ESCALATE)
        _arm(session, incident, config, incident.created_at)
    else:
        status_update_posted(session, incident, config, now)


def on_incident_resolved(session: Session, incident: Incident, now: datetime, *, source: str) -> None:
    """Resolved anywhere: no more timers, and PagerDuty resolves too unless it told us."""
    cancel(session, incident.id or 0)
    paging = _paging(session, incident)
    if source != "pagerduty":
        _pd_event(session, incident, paging, "resolve", now)
    paging.updated_at = now


def status_update_posted(session: Session, incident: Incident, config: OncallConfig, now: datetime) -> None:
    """Someone posted a status update: the next reminder is one cadence from now."""
    cancel(session, incident.id or 0, keep=lambda t: t.kind != REMINDER)
    minutes = config.escalation.for_severity(incident.severity).update_minutes
    if minutes and incident.is_open:
        schedule(session, incident, REMINDER, now + timedelta(minutes=minutes), {"minutes": minutes})


# -- PagerDuty jobs ----------------------------------------------------------------------------

def _pd_event(session: Session, incident: Incident, paging: Paging, action: str, now: datetime) -> None:
    """Acknowledge/resolve what we triggered (PagerDuty drops them for keys it never saw)."""
    if paging.level >= 1 and paging.routing_key:
        enqueue(session, JOB_PD_EVENT, now=now, incident_id=pd_lane(paging.incident_id),
                payload={"action": action, "routing_key": paging.routing_key, "dedup_key": paging.dedup_key})


def _trigger_payload(incident: Incident, paging: Paging) -> dict[str, Any]:
    labels = {k[:100]: v[:200] for k, v in list(sorted(incident.labels.items()))[:50]}
    return {
        "action": "trigger", "routing_key": paging.routing_key, "dedup_key": paging.dedup_key,
        "summary": f"[{incident.severity}] {incident.title}"[:1024],
        "source": (incident.service or incident.alertname or BOT)[:255],
        "severity": PD_SEVERITY.get(incident.severity, "critical"),
        "timestamp": incident.created_at.isoformat(), "component": incident.service, "group": incident.namespace,
        "class": incident.alertname, "custom_details": {"incident": incident.id, "labels": labels,
                                                        "slack_channel": incident.channel_name},
    }


def _page_job(session: Session, paging: Paging, kind: str, payload: dict[str, Any], now: datetime) -> None:
    job = enqueue(session, kind, now=now, incident_id=pd_lane(paging.incident_id), payload=payload)
    session.flush()
    assert job is not None
    paging.page_job_id, paging.delivery, paging.delivered_at, paging.last_error = job.id, "pending", None, None


def _invite(session: Session, incident: Incident, payload: dict[str, Any], now: datetime) -> None:
    # In no incident's lane: it needs both PagerDuty (who is on call) and Slack (the channel),
    # and an outage of either must hold up neither the card nor the PagerDuty events.
    enqueue(session, JOB_PD_INVITE, now=now, payload={"incident": incident.id, **payload})


def _invite_level(session: Session, incident: Incident, paging: Paging, level: EscalationLevel,
                  now: datetime) -> None:
    _invite(session, incident, {"policy": paging.escalation_policy, "pagerduty_level": level.pagerduty_level,
                                "level_name": level.name}, now)


# -- paging and escalating ---------------------------------------------------------------------

def _levels(rule: SeverityEscalation) -> list[EscalationLevel]:
    return rule.levels or [EscalationLevel(name="on-call", after_minutes=0, pagerduty_level=1)]


def _schedule_levels(session: Session, incident: Incident, rule: SeverityEscalation, current: int,
                     anchor: datetime) -> None:
    """Each level above `current` on a timer of its own, counted from `anchor` (when `current`
    was paged): a level that climbs while unresolved comes even after an ack called off the
    levels before it (P1: L3 while unacknowledged, L4 while unresolved)."""
    levels = _levels(rule)
    base = levels[current - 1].after_minutes
    for n, level in enumerate(levels[current:], start=current + 1):
        schedule(session, incident, ESCALATE, anchor + timedelta(minutes=level.after_minutes - base),
                 {"level": n, "while": level.condition(rule)})


def _page(session: Session, incident: Incident, paging: Paging, config: OncallConfig, *, now: datetime,
          anchor: datetime, why: str, actor: str) -> str:
    rule = config.escalation.for_severity(incident.severity)
    level = _levels(rule)[0]
    paging.routing_key, paging.escalation_policy = config.pagerduty.route(incident.labels)
    paging.updated_at = now
    if paging.routing_key is None:
        paging.held = "PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY): nobody was paged"
        add_timeline(session, incident, actor, "page", "not paged: PagerDuty is not configured", at=now)
        _say(session, incident, f":warning: Should page *{level.name}* ({why}), but {paging.held}.", now)
        _card(session, incident, now)
        return "not configured"
    paging.level, paging.paged_at, paging.held = 1, anchor, None
    _page_job(session, paging, JOB_PD_EVENT, _trigger_payload(incident, paging), now)
    _say(session, incident, f":rotating_light: Paging *{level.name}* through PagerDuty: {why}.", now)
    _invite_level(session, incident, paging, level, now)
    add_timeline(session, incident, actor, "page", f"paged {level.name}: {why}", at=now,
                 data={"level": 1, "dedup_key": paging.dedup_key})
    _schedule_levels(session, incident, rule, 1, anchor)
    _card(session, incident, now)
    metrics.INCIDENTS.labels(event="paged").inc()
    return f"paged {level.name}"


def _escalate_to(session: Session, incident: Incident, paging: Paging, rule: SeverityEscalation, n: int, *,
                 now: datetime, why: str, actor: str) -> str:
    level = _levels(rule)[n - 1]
    paging.level, paging.updated_at = n, now
    _page_job(session, paging, JOB_PD_ESCALATE, {"dedup_key": paging.dedup_key, "pagerduty_level": level.pagerduty_level}, now)
    _say(session, incident, f":arrow_double_up: Escalating to *{level.name}*: {why}.", now)
    _invite_level(session, incident, paging, level, now)
    add_timeline(session, incident, actor, "escalate", f"escalated to {level.name}: {why}", at=now, data={"level": n})
    if incident.status != S.ESCALATED and S.ESCALATED in TRANSITIONS[S(incident.status)]:
        transition(session, incident, S.ESCALATED, actor=actor, now=now, reason=f"{level.name} paged")
    _card(session, incident, now)
    metrics.INCIDENTS.labels(event="escalated").inc()
    return f"escalated to {level.name}"


def _hold(session: Session, incident: Incident, paging: Paging, config: OncallConfig, timer: Timer,
          now: datetime) -> str | None:
    """In a maintenance window nobody is paged: say so, and look again when it ends."""
    window = active_maintenance(session, config, incident.labels, now)
    if window is None:
        return None
    name, ends = window
    name = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # `held` is shown as mrkdwn
    reason = f"maintenance window *{name}* until {ends:%Y-%m-%d %H:%M} UTC: nobody is paged"
    if paging.held != reason:
        paging.held = reason
        add_timeline(session, incident, BOT, "page", f"page held: maintenance window {name}", at=now)
        _say(session, incident, f":construction: Not paging: {reason}.", now)
        _card(session, incident, now)
    schedule(session, incident, timer.kind, ends, timer.payload)
    return f"held until {ends.isoformat()} ({name})"


# -- firing ------------------------------------------------------------------------------------

def fire(session: Session, timer: Timer, config: OncallConfig, now: datetime) -> None:
    """Apply a due timer's effect (or skip it) and mark it, in the caller's transaction."""
    incident = session.get(Incident, timer.incident_id, with_for_update=True, populate_existing=True)
    if incident is None:
        done, outcome = False, "incident gone"
    else:
        done, outcome = _EFFECTS[timer.kind](session, timer, incident, _paging(session, incident), config, now)
    timer.status = TimerStatus.FIRED if done else TimerStatus.SKIPPED
    timer.fired_at, timer.outcome = now, outcome
    timer.lateness_seconds = max(0.0, (now - timer.due_at).total_seconds())


Effect = Callable[[Session, Timer, Incident, Paging, OncallConfig, datetime], tuple[bool, str]]


def _fire_page(session: Session, timer: Timer, incident: Incident, paging: Paging, config: OncallConfig,
               now: datetime) -> tuple[bool, str]:
    if not incident.is_open or incident.acknowledged_at or paging.level >= 1:
        return False, "resolved" if not incident.is_open else "acknowledged" if incident.acknowledged_at else "paged"
    held = _hold(session, incident, paging, config, timer, now)
    if held:
        return True, held
    return True, _page(session, incident, paging, config, now=now, anchor=timer.due_at,
                       why=str(timer.payload.get("why", "not acknowledged")), actor=BOT)


def _fire_escalate(session: Session, timer: Timer, incident: Incident, paging: Paging, config: OncallConfig,
                   now: datetime) -> tuple[bool, str]:
    rule = config.escalation.for_severity(incident.severity)
    n = int(timer.payload["level"])
    if not incident.is_open:
        return False, "resolved"
    if paging.level >= n or n > len(_levels(rule)):
        return False, f"already at level {paging.level}"
    level = _levels(rule)[n - 1]
    if level.condition(rule) == "unacknowledged" and incident.acknowledged_at:
        return False, "acknowledged"
    held = _hold(session, incident, paging, config, timer, now)
    if held:
        return True, held
    state = "not acknowledged" if level.condition(rule) == "unacknowledged" else "unresolved"
    return True, _escalate_to(session, incident, paging, rule, n, now=now,
                              why=f"{state} {level.after_minutes} min after the page", actor=BOT)


def _fire_ack_overdue(session: Session, timer: Timer, incident: Incident, paging: Paging, config: OncallConfig,
                      now: datetime) -> tuple[bool, str]:
    if not incident.is_open or incident.acknowledged_at:
        return False, "resolved" if not incident.is_open else "acknowledged"
    _say(session, incident, f":alarm_clock: Not acknowledged within {timer.payload.get('minutes')} min. "
                            "Whoever is on it: press *Ack* on the card.", now)
    return True, "reminded"


def _fire_reminder(session: Session, timer: Timer, incident: Incident, paging: Paging, config: OncallConfig,
                   now: datetime) -> tuple[bool, str]:
    if not incident.is_open:
        return False, "resolved"
    minutes = config.escalation.for_severity(incident.severity).update_minutes
    if minutes:
        following = timer.due_at + timedelta(minutes=minutes)
        while following <= now:  # after downtime: one late reminder, not one per missed slot
            following += timedelta(minutes=minutes)
        schedule(session, incident, REMINDER, following, {"minutes": minutes})
    _say(session, incident, f":memo: Status update due (every {timer.payload.get('minutes')} min): "
                            f"{_who(incident)}, please post where things stand.", now)
    return True, "reminded"


_EFFECTS: dict[str, Effect] = {PAGE: _fire_page, ESCALATE: _fire_escalate, ACK_OVERDUE: _fire_ack_overdue,
                               REMINDER: _fire_reminder}


# -- what people do (Slack buttons, PagerDuty webhooks, slash commands) -------------------------

def acknowledge(session: Session, incident: Incident, actor: str, now: datetime, source: str) -> bool:
    """Someone owns it. `actor`: a Slack user id, or a PagerDuty user's name when source is
    "pagerduty" (then nothing is echoed back to PagerDuty). False when there was nothing to do."""
    if not incident.is_open or incident.acknowledged_at is not None:
        return False
    paging = _paging(session, incident)
    incident.acknowledged_at = incident.updated_at = now
    if source == "pagerduty":
        paging.acked_in_pagerduty_by = actor[:128]
        text, said = f"acknowledged in PagerDuty by {actor}", f"Acknowledged in PagerDuty by {actor}"
    else:
        incident.acknowledged_by = actor
        incident.commander = incident.commander or actor
        text, said = f"acknowledged in {source}", f"<@{actor}> acknowledged"
        _pd_event(session, incident, paging, "acknowledge", now)
    cancel(session, incident.id or 0, keep=lambda t: t.kind == REMINDER or (
        t.kind == ESCALATE and t.payload.get("while") == "unresolved"))
    add_timeline(session, incident, _actor(actor, source), "ack", text, at=now, data={"source": source})
    _say(session, incident, f":eyes: {said}; escalation stopped.", now)
    _card(session, incident, now)
    return True


def resolve(session: Session, incident: Incident, actor: str, now: datetime, source: str, reason: str = "") -> bool:
    if not incident.is_open:
        return False
    transition(session, incident, S.RESOLVED, actor=_actor(actor, source), now=now,
               reason=reason or f"resolved in {source}")
    on_incident_resolved(session, incident, now, source=source)
    who = f"in PagerDuty by {actor}" if source == "pagerduty" else f"by <@{actor}>"
    _say(session, incident, f":white_check_mark: Resolved {who}.", now)
    metrics.INCIDENTS.labels(event="resolved").inc()
    return True


def escalate_now(session: Session, incident: Incident, actor: str, now: datetime, source: str,
                 config: OncallConfig) -> str | None:
    """Page at once if nobody was paged, else the next level; the timetable restarts from now.
    A person asking overrides a maintenance window. None when there is no higher level."""
    if not incident.is_open:
        return None
    paging = _paging(session, incident)
    rule = config.escalation.for_severity(incident.severity)
    who = f"<@{actor}> escalated by hand"
    if paging.level == 0:
        cancel(session, incident.id or 0, keep=lambda t: t.kind not in (PAGE, ACK_OVERDUE))
        return _page(session, incident, paging, config, now=now, anchor=now, why=who, actor=_actor(actor, source))
    if paging.level >= len(_levels(rule)):
        return None
    cancel(session, incident.id or 0, keep=lambda t: t.kind != ESCALATE)
    n = paging.level + 1
    outcome = _escalate_to(session, incident, paging, rule, n, now=now, why=who, actor=_actor(actor, source))
    _schedule_levels(session, incident, rule, n, now)
    return outcome


def apply_pagerduty_assignment(session: Session, incident: Incident, event_type: str,
                               assignees: list[tuple[str, str]], now: datetime) -> bool:
    """PagerDuty escalated or reassigned it: say so and invite the new assignees."""
    paging = _paging(session, incident)
    ids = sorted({user_id for user_id, _ in assignees})
    if not ids or ids == sorted(paging.assignees or []) or not incident.is_open:
        return False
    paging.assignees, paging.updated_at = ids, now
    names = ", ".join(name for _, name in assignees)
    verb = "escalated" if event_type == "incident.escalated" else "reassigned"
    add_timeline(session, incident, "pagerduty", verb, f"{verb} in PagerDuty to {names}", at=now,
                 data={"assignees": ids})
    _say(session, incident, f":arrows_counterclockwise: {verb.capitalize()} in PagerDuty: now with {names}.", now)
    _invite(session, incident, {"policy": paging.escalation_policy, "user_ids": ids, "names": dict(assignees),
                                "level_name": f"{verb} in PagerDuty"}, now)
    _card(session, incident, now)
    return True


def apply_pagerduty_event(session: Session, incident: Incident, event_id: str, event_type: str,
                          occurred_at: datetime, now: datetime, apply: Callable[[Paging], str]) -> tuple[str, str]:
    """A PagerDuty webhook event, applied once and in order: PagerDuty redelivers and does not
    order its deliveries, and the dedup key outlives a reopen, so an old `resolved` must not end
    the new episode. `apply` makes the change and returns "applied" when something changed.
    Returns (outcome, why); a repeated id is "duplicate", an event older than the current episode
    or than the last applied event is "stale"; neither calls `apply`."""
    paging = _paging(session, incident)
    if session.get(PagerDutyWebhookEvent, event_id) is not None:
        return "duplicate", f"event {event_id} was already received"
    outcome, why = _staleness(incident, paging, occurred_at)
    if not outcome:
        outcome = apply(paging)
        if outcome == "applied":
            paging.last_event_at = occurred_at
    session.add(PagerDutyWebhookEvent(event_id=event_id, incident_id=incident.id, event_type=event_type,
                                      occurred_at=occurred_at, received_at=now, outcome=outcome))
    return outcome, why


def _staleness(incident: Incident, paging: Paging, occurred_at: datetime) -> tuple[str, str]:
    episode = paging.episode_started_at or incident.created_at
    if occurred_at < episode:
        return "stale", f"occurred at {occurred_at.isoformat()}, before the current episode began ({episode.isoformat()})"
    if paging.last_event_at is not None and occurred_at < paging.last_event_at:
        return "stale", f"occurred at {occurred_at.isoformat()}, before the last applied event " \
                        f"({paging.last_event_at.isoformat()})"
    return "", ""


def _actor(actor: str, source: str) -> str:
    return (f"pagerduty:{actor}" if source == "pagerduty" else actor)[:128]


# -- maintenance windows -----------------------------------------------------------------------

def add_maintenance(session: Session, name: str, match: dict[str, str], start: datetime, end: datetime,
                    created_by: str, *, now: datetime) -> MaintenanceWindow:
    """Declare a window; the cards of the open incidents it covers say so at once."""
    if end <= start:
        raise ValueError("a maintenance window must end after it starts")
    window = MaintenanceWindow(name=name[:128], match=match, starts_at=start, ends_at=end, created_by=created_by,
                               created_at=now)
    session.add(window)
    _refresh_cards(session, match, now)
    return window


def cancel_maintenance(session: Session, window: MaintenanceWindow, now: datetime) -> int:
    """End a window now. Pages it held were rescheduled for its end: bring them forward to now
    (each re-checks every window when it fires). Returns how many were released."""
    window.cancelled_at = now
    held = session.scalars(select(Timer).where(
        Timer.status == TimerStatus.PENDING, Timer.kind.in_([PAGE, ESCALATE]),  # type: ignore[attr-defined]
        Timer.due_at == window.ends_at).with_for_update(skip_locked=True))
    released = 0
    for timer in held:
        timer.due_at = now
        released += 1
    _refresh_cards(session, window.match, now)
    return released


def _refresh_cards(session: Session, match: dict[str, str], now: datetime) -> None:
    # A card says whether a window holds its pages; without this it would say so until the
    # incident's next change.
    open_incidents = session.scalars(select(Incident).where(
        Incident.status.not_in([S.RESOLVED, S.POSTMORTEM])))  # type: ignore[attr-defined]
    for incident in open_incidents:
        if labels_match(match, incident.labels):
            _card(session, incident, now)


def active_maintenance(session: Session, config: OncallConfig, labels: dict[str, str],
                       now: datetime) -> tuple[str, datetime] | None:
    """The matching window in force now that ends last, as (name, end)."""
    found = [(w.name, w.end) for w in config.escalation.maintenance
             if w.start <= now < w.end and labels_match(w.match, labels)]
    stored = session.scalars(select(MaintenanceWindow).where(
        MaintenanceWindow.starts_at <= now, MaintenanceWindow.ends_at > now,  # type: ignore[arg-type]
        MaintenanceWindow.cancelled_at.is_(None)))  # type: ignore[union-attr]
    found += [(w.name, w.ends_at) for w in stored if labels_match(w.match, labels)]
    return max(found, key=lambda item: item[1]) if found else None
