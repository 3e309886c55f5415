"""What people do to an incident besides the card's buttons (its severity, its state, notes,
reopening it), and what `/incident` and `/oncall` read. Data only: commands.incident_command
and commands.slash word it.

Every change is written in the caller's transaction, with the incident's row locked by the
caller, and records itself on the timeline and refreshes the card (through bot.lifecycle and
bot.escalation, which enqueue the card job).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, col

from bot import escalation, metrics, postmortem_ops
from bot.config import SEVERITIES, OncallConfig
from bot.declare import SLACK
from bot.jobs import JOB_CARD, JOB_OPEN, enqueue
from bot.lifecycle import TRANSITIONS, InvalidTransition, add_timeline, can_become, transition
from bot.models import Alert, Incident, IncidentStatus, TimelineEntry

__all__ = [
    "NOTE_LIMIT", "STATES", "OpenIncident", "TimelinePage", "add_note", "change_severity",
    "incident_in_channel", "open_incidents", "reachable", "reopen", "service_labels", "set_state", "started_at",
    "timeline_page",
]

S = IncidentStatus
STATES: tuple[IncidentStatus, ...] = tuple(IncidentStatus)  # the seeds' order
NOTE_LIMIT = 3000  # characters of a note kept on the timeline
_MARK = "…"


# -- reads ---------------------------------------------------------------------------------------

def incident_in_channel(session: Session, channel_id: str) -> Incident | None:
    """The incident whose own channel this is (an incident in a thread has none: not found)."""
    if not channel_id:
        return None
    return session.scalars(select(Incident).where(col(Incident.channel_id) == channel_id)
                           .order_by(col(Incident.id).desc())).first()


def started_at(incident: Incident, starts: list[datetime]) -> datetime:
    """When the problem began: its alerts' earliest `startsAt` (year 1, Go's zero time, means
    unset), else when the bot heard of it; the card counts the same way (bot.card_view)."""
    return min((at for at in starts if at.year > 1), default=incident.created_at)


@dataclass(frozen=True)
class OpenIncident:
    incident: Incident
    started_at: datetime


def open_incidents(session: Session) -> list[OpenIncident]:
    """Every open incident, the most severe first, then the oldest."""
    rows = list(session.scalars(select(Incident).where(
        col(Incident.status).not_in([S.RESOLVED, S.POSTMORTEM]))))
    starts: dict[int, list[datetime]] = {}
    if rows:
        query = select(col(Alert.incident_id), col(Alert.starts_at)).where(
            col(Alert.incident_id).in_([row.id for row in rows]))
        for incident_id, at in session.execute(query):
            starts.setdefault(incident_id, []).append(at)
    found = [OpenIncident(row, started_at(row, starts.get(row.id or 0, []))) for row in rows]
    rank: dict[str, int] = {severity: n for n, severity in enumerate(SEVERITIES)}
    return sorted(found, key=lambda o: (rank.get(o.incident.severity, len(rank)), o.incident.created_at,
                                        o.incident.id or 0))


@dataclass(frozen=True)
class TimelinePage:
    entries: list[TimelineEntry]  # oldest first
    page: int  # 1-based
    pages: int
    total: int
    first: int  # the 1-based position of entries[0] in the whole timeline


def timeline_page(session: Session, incident_id: int, page: int, per_page: int) -> TimelinePage:
    """One page of the whole timeline, oldest first; page 1 holds the first entries. A page past
    the last one comes back empty (with `pages` saying how many there are)."""
    total = int(session.scalar(select(func.count()).select_from(TimelineEntry)
                               .where(col(TimelineEntry.incident_id) == incident_id)) or 0)
    pages = max(1, math.ceil(total / per_page))
    offset = (max(1, page) - 1) * per_page
    entries = list(session.scalars(
        select(TimelineEntry).where(col(TimelineEntry.incident_id) == incident_id)
        .order_by(col(TimelineEntry.at), col(TimelineEntry.id)).offset(offset).limit(per_page)))
    return TimelinePage(entries=entries, page=max(1, page), pages=pages, total=total, first=offset + 1)


def reachable(incident: Incident) -> list[IncidentStatus]:
    """The states the incident may move to from where it is, in the seeds' order."""
    allowed = TRANSITIONS[IncidentStatus(incident.status)]
    return [state for state in STATES if state in allowed]


def service_labels(session: Session, service: str) -> dict[str, str]:
    """The labels to route a service by: those of its newest Alertmanager incident (so routes and
    responder rules on other labels, `team` say, match as they did for it), else just the service.
    Not a declared one's: a person typed its service and severity, and it has no other labels."""
    newest = session.scalars(select(Incident).where(col(Incident.service) == service,
                                                    col(Incident.source) != SLACK)
                             .order_by(col(Incident.id).desc())).first()
    return dict(newest.labels) if newest is not None else {"service": service}


# -- changes -------------------------------------------------------------------------------------

def _card(session: Session, incident: Incident, now: datetime) -> None:
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)


def add_note(session: Session, incident: Incident, actor: str, text: str, now: datetime) -> None:
    """A person's note on the timeline (cut to NOTE_LIMIT characters)."""
    note = text if len(text) <= NOTE_LIMIT else text[: NOTE_LIMIT - len(_MARK)] + _MARK
    add_timeline(session, incident, actor, "note", note, at=now)
    incident.updated_at = now
    _card(session, incident, now)


def change_severity(session: Session, incident: Incident, severity: str, actor: str, now: datetime,
                    config: OncallConfig) -> bool:
    """Set the severity by hand; False when it already is. An open incident's escalation follows
    the new severity's timetable (bot.escalation); a raised one may now get a channel of its own."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    before = incident.severity
    if severity == before:
        return False
    add_timeline(session, incident, actor, "severity", f"severity {before} → {severity}", at=now,
                 data={"from": before, "to": severity})
    incident.severity, incident.updated_at = severity, now
    if incident.is_open:
        if SEVERITIES.index(severity) < SEVERITIES.index(before):
            enqueue(session, JOB_OPEN, incident.id, now=now)  # as intake does: it may now get its own channel
            escalation.on_severity_raised(session, incident, config, now)
        else:
            escalation.on_severity_lowered(session, incident, config, now)
    _card(session, incident, now)
    return True


def reopen(session: Session, incident: Incident, actor: str, now: datetime, config: OncallConfig) -> bool:
    """A resolved incident back to detected, its escalation started over (a new owner is
    needed, as when its alert group fires again). False unless it is resolved."""
    if IncidentStatus(incident.status) != S.RESOLVED:
        return False
    transition(session, incident, S.DETECTED, actor=actor, now=now, reason="reopened by hand")
    escalation.on_incident_reopened(session, incident, config, now)
    metrics.INCIDENTS.labels(event="reopened").inc()
    return True


def set_state(session: Session, incident: Incident, to: IncidentStatus, actor: str, now: datetime,
              config: OncallConfig) -> None:
    """Move to `to`, only along the seeds' transitions (InvalidTransition otherwise). Resolving
    and reopening take the same paths as everywhere else (timers, PagerDuty, notices)."""
    if not can_become(incident, to):
        current = IncidentStatus(incident.status)
        raise InvalidTransition(f"an incident that is {current.value} cannot become {to.value}")
    if to == S.RESOLVED:
        escalation.resolve(session, incident, actor, now, "slack")
    elif to == S.DETECTED and IncidentStatus(incident.status) == S.RESOLVED:
        reopen(session, incident, actor, now, config)
    elif to == S.POSTMORTEM:
        postmortem_ops.enter(session, incident, actor, now, config)  # its channel's archive queued too
    else:
        transition(session, incident, to, actor=actor, now=now)
