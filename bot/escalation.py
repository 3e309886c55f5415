"""Escalation: timers in the database, pages through the outbox, Slack and PagerDuty in step.

Every effect is written in the caller's transaction: a timer's effect commits together with
the timer marked fired (bot.timers claims it), an acknowledgement together with the
PagerDuty event it owes. Nothing here talks to PagerDuty or Slack; jobs do (bot.paging).

Conditions are checked when a timer fires, under the incident's row lock, so a timer whose
condition no longer holds (acknowledged, resolved, already paged) is skipped even if its
cancellation lost a race. Lock order everywhere: timer, then incident, then paging; code that
holds an incident never waits for a timer row (cancellation skips locked timers).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from bot import metrics
from bot.config import OncallConfig
from bot.escalation_policy import EscalationLevel, SeverityEscalation, labels_match
from bot.jobs import JOB_CARD, JOB_NOTIFY, JOB_PD_ESCALATE, JOB_PD_EVENT, JOB_PD_INVITE, enqueue
from bot.lifecycle import add_timeline, can_become, transition
from bot.models import Incident, IncidentStatus, MaintenanceWindow, PagerDutyWebhookEvent, Paging, Timer, TimerStatus

__all__ = [
    "ACK_OVERDUE", "ESCALATE", "PAGE", "REMINDER", "AlreadyEscalated", "acknowledge", "active_maintenance",
    "add_maintenance", "apply_pagerduty_assignment", "apply_pagerduty_event", "cancel_maintenance", "dedup_key",
    "escalate_now", "fire", "on_incident_opened", "on_incident_reopened", "on_incident_resolved",
    "on_severity_lowered", "on_severity_raised", "resolve", "status_update_posted",
]

PAGE, ESCALATE, ACK_OVERDUE, REMINDER = "page", "escalate", "ack_overdue", "reminder"
BOT = "oncall-bot"
S = IncidentStatus


# -- keys ----------------------------------------------------------------------------

def dedup_key(incident: Incident) -> str:
    """Stable for the incident's life (reopen included) and unique across database resets."""
    return f"oncall-bot-{incident.id}-{int(incident.created_at.timestamp())}"



# -- small helpers -----------------------------------------------------------------------------

def _paging(session: Session, incident: Incident) -> Paging:
    assert incident.id is not None
    paging = session.get(Paging, incident.id, with_for_update=True, populate_existing=True)
    if paging is None:
        paging = Paging(incident_id=incident.id, dedup_key=dedup_key(incident))
        session.add(paging)
        session.flush()
    return paging


def _say(session: Session, incident: Incident, notice: str, now: datetime, **fields: Any) -> None:
    """A notice in the incident's channel, as data: commands.notices words and escapes it."""
    enqueue(session, JOB_NOTIFY, incident.id, now=now, payload={"notice": notice, **fields})


def _card(session: Session, incident: Incident, now: datetime) -> None:
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)


def schedule(session: Session, incident: Incident, kind: str, due: datetime,
             payload: dict[str, Any] | None = None) -> Timer:
    assert incident.id is not None
    timer = Timer(incident_id=incident.id, kind=kind, due_at=due, payload=payload or {})
    session.add(timer)
    return timer


def cancel(session: Session, incident_id: int, keep: Callable[[Timer], bool] = lambda t: False) -> int:
    """Call off the incident's pending timers (except those `keep` names). A timer being fired
    right now is locked and skipped here; it re-checks its condition and skips itself."""
    query = (select(Timer).where(col(Timer.incident_id) == incident_id, col(Timer.status) == TimerStatus.PENDING)
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


def on_severity_lowered(session: Session, incident: Incident, config: OncallConfig, now: datetime) -> None:
    """A P1 that became a P3 follows the P3 timetable. Nobody paged or acknowledged yet: the
    new timetable from when it opened (a later page, or none for a P4). Already paged: the pages
    made stand, and the levels not yet paged follow the new severity's levels, counted from the
    first page (a level the new severity does not have is never paged)."""
    paging = _paging(session, incident)
    if incident.acknowledged_at is None and paging.level == 0:
        cancel(session, incident.id or 0, keep=lambda t: t.kind == ESCALATE)
        _arm(session, incident, config, incident.created_at)
        return
    cancel(session, incident.id or 0, keep=lambda t: t.kind != ESCALATE)
    rule = config.escalation.for_severity(incident.severity)
    levels = _levels(rule)
    if 1 <= paging.level < len(levels) and paging.paged_at is not None:
        current_paged_at = paging.paged_at + timedelta(minutes=levels[paging.level - 1].after_minutes)
        _schedule_levels(session, incident, rule, paging.level, current_paged_at)
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
        enqueue(session, JOB_PD_EVENT, paging.incident_id, now=now, payload={"action": action})


def _page_job(session: Session, paging: Paging, kind: str, payload: dict[str, Any], now: datetime) -> None:
    job = enqueue(session, kind, paging.incident_id, now=now, payload=payload)
    session.flush()
    assert job is not None
    paging.page_job_id, paging.delivery, paging.delivered_at, paging.last_error = job.id, "pending", None, None


def _invite(session: Session, incident: Incident, payload: dict[str, Any], now: datetime) -> None:
    enqueue(session, JOB_PD_INVITE, incident.id, now=now, payload=payload)  # in no lane (bot.jobs)


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
          anchor: datetime, why: str, actor: str, by: str | None = None) -> str:
    rule = config.escalation.for_severity(incident.severity)
    level = _levels(rule)[0]
    paging.routing_key, paging.escalation_policy = config.pagerduty.route(incident.labels)
    paging.updated_at = now
    if paging.routing_key is None:
        paging.held = "PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY): nobody was paged"
        add_timeline(session, incident, actor, "page", "not paged: PagerDuty is not configured", at=now)
        _say(session, incident, "page_not_configured", now, level=level.name, why=why, by=by)
        _card(session, incident, now)
        return "not configured"
    paging.level, paging.paged_at, paging.held = 1, anchor, None
    _page_job(session, paging, JOB_PD_EVENT, {"action": "trigger"}, now)  # bot.paging builds the event
    _say(session, incident, "paging", now, level=level.name, why=why, by=by)
    _invite_level(session, incident, paging, level, now)
    add_timeline(session, incident, actor, "page", f"paged {level.name}: {why}", at=now,
                 data={"level": 1, "dedup_key": paging.dedup_key})
    _schedule_levels(session, incident, rule, 1, anchor)
    _card(session, incident, now)
    metrics.INCIDENTS.labels(event="paged").inc()
    return f"paged {level.name}"


def _escalate_to(session: Session, incident: Incident, paging: Paging, rule: SeverityEscalation, n: int, *,
                 now: datetime, why: str, actor: str, by: str | None = None) -> str:
    level = _levels(rule)[n - 1]
    paging.level, paging.updated_at = n, now
    _page_job(session, paging, JOB_PD_ESCALATE, {"pagerduty_level": level.pagerduty_level}, now)
    _say(session, incident, "escalating", now, level=level.name, why=why, by=by)
    _invite_level(session, incident, paging, level, now)
    add_timeline(session, incident, actor, "escalate", f"escalated to {level.name}: {why}", at=now, data={"level": n})
    if incident.status != S.ESCALATED and can_become(incident, S.ESCALATED):
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
    reason = f"maintenance window {name} until {ends:%Y-%m-%d %H:%M} UTC: nobody is paged"
    if paging.held != reason:
        paging.held = reason
        add_timeline(session, incident, BOT, "page", f"page held: maintenance window {name}", at=now)
        _say(session, incident, "page_held", now, window=name, until=ends.isoformat())
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
    _say(session, incident, "ack_overdue", now, minutes=timer.payload.get("minutes"))
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
    _say(session, incident, "update_due", now, minutes=timer.payload.get("minutes"),
         owner=incident.commander or incident.acknowledged_by)
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
        text = f"acknowledged in PagerDuty by {actor}"
    else:
        incident.acknowledged_by = actor
        incident.commander = incident.commander or actor
        text = f"acknowledged in {source}"
        _pd_event(session, incident, paging, "acknowledge", now)
    cancel(session, incident.id or 0, keep=lambda t: t.kind == REMINDER or (
        t.kind == ESCALATE and t.payload.get("while") == "unresolved"))
    add_timeline(session, incident, _actor(actor, source), "ack", text, at=now, data={"source": source})
    _say(session, incident, "acknowledged", now, **_by(actor, source))
    _card(session, incident, now)
    return True


def resolve(session: Session, incident: Incident, actor: str, now: datetime, source: str, reason: str = "") -> bool:
    if not incident.is_open:
        return False
    transition(session, incident, S.RESOLVED, actor=_actor(actor, source), now=now,
               reason=reason or f"resolved in {source}")
    on_incident_resolved(session, incident, now, source=source)
    _say(session, incident, "resolved", now, **_by(actor, source))
    metrics.INCIDENTS.labels(event="resolved").inc()
    return True


class AlreadyEscalated(Exception):
    """Someone (or a timer) escalated since the requester looked: asking again must not climb
    a second level. `level` is where paging stands now."""

    def __init__(self, level: int) -> None:
        super().__init__(f"already at level {level}")
        self.level = level


def escalate_now(session: Session, incident: Incident, actor: str, now: datetime, source: str,
                 config: OncallConfig, *, seen_level: int | None = None) -> str | None:
    """Page at once if nobody was paged, else the next level; the timetable restarts from now.
    A person asking overrides a maintenance window. None when there is no higher level.
    `seen_level`: the level the requester saw (on the card); a request made from an older view
    raises AlreadyEscalated, so two clicks, or one delivered twice, climb one level."""
    if not incident.is_open:
        return None
    paging = _paging(session, incident)
    if seen_level is not None and paging.level != seen_level:
        raise AlreadyEscalated(paging.level)
    rule = config.escalation.for_severity(incident.severity)
    why, by = "escalated by hand", actor if source != "pagerduty" else None
    if paging.level == 0:
        cancel(session, incident.id or 0, keep=lambda t: t.kind not in (PAGE, ACK_OVERDUE))
        return _page(session, incident, paging, config, now=now, anchor=now, why=why, actor=_actor(actor, source),
                     by=by)
    if paging.level >= len(_levels(rule)):
        return None
    cancel(session, incident.id or 0, keep=lambda t: t.kind != ESCALATE)
    n = paging.level + 1
    outcome = _escalate_to(session, incident, paging, rule, n, now=now, why=why, actor=_actor(actor, source), by=by)
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
    names = [name for _, name in assignees]
    verb = "escalated" if event_type == "incident.escalated" else "reassigned"
    add_timeline(session, incident, "pagerduty", verb, f"{verb} in PagerDuty to {', '.join(names)}", at=now,
                 data={"assignees": ids})
    _say(session, incident, "pagerduty_assigned", now, verb=verb, names=names)
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
    assert incident.id is not None, "webhook events are applied to stored incidents"
    session.add(PagerDutyWebhookEvent(event_id=event_id, incident_id=incident.id, event_type=event_type,
                                      occurred_at=occurred_at, received_at=now, outcome=outcome))
    return outcome, why


def _staleness(incident: Incident, paging: Paging, occurred_at: datetime) -> tuple[str, str]:
    episode = paging.episode_started_at or incident.created_at
    if occurred_at < episode:
        return "stale", (f"occurred at {occurred_at.isoformat()}, before the current episode began "
                         f"({episode.isoformat()})")
    if paging.last_event_at is not None and occurred_at < paging.last_event_at:
        return "stale", f"occurred at {occurred_at.isoformat()}, before the last applied event " \
                        f"({paging.last_event_at.isoformat()})"
    return "", ""


def _by(actor: str, source: str) -> dict[str, str]:
    """Who did it, for a notice: a Slack user, or a PagerDuty user's (untrusted) name."""
    return {"pagerduty_user": actor} if source == "pagerduty" else {"user": actor}


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
        col(Timer.status) == TimerStatus.PENDING, col(Timer.kind).in_([PAGE, ESCALATE]),
        col(Timer.due_at) == window.ends_at).with_for_update(skip_locked=True))
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
