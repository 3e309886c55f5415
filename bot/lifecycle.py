"""An incident's life: the seeds' state machine, and the timeline every change writes.

A leaf of the domain: incidents (intake), escalation and the runbook steps all build on it,
and it builds on none of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from bot.jobs import JOB_CARD, enqueue
from bot.models import Incident, IncidentStatus, TimelineEntry

__all__ = ["TRANSITIONS", "InvalidTransition", "add_timeline", "can_become", "transition"]

S = IncidentStatus
# Forward moves of the seeds' state machine (operations-plan-ja.md 4.2), plus the usual ways
# back while working.
TRANSITIONS: dict[IncidentStatus, set[IncidentStatus]] = {
    S.DETECTED: {S.TRIAGED, S.INVESTIGATING, S.ESCALATED, S.IDENTIFIED, S.MITIGATING, S.RESOLVED},
    S.TRIAGED: {S.INVESTIGATING, S.ESCALATED, S.IDENTIFIED, S.MITIGATING, S.RESOLVED},
    S.INVESTIGATING: {S.ESCALATED, S.IDENTIFIED, S.MITIGATING, S.RESOLVED},
    S.ESCALATED: {S.INVESTIGATING, S.IDENTIFIED, S.MITIGATING, S.RESOLVED},
    S.IDENTIFIED: {S.INVESTIGATING, S.ESCALATED, S.MITIGATING, S.RESOLVED},
    S.MITIGATING: {S.IDENTIFIED, S.ESCALATED, S.RESOLVED},
    S.RESOLVED: {S.DETECTED, S.POSTMORTEM},  # DETECTED = reopened
    S.POSTMORTEM: set(),
}


class InvalidTransition(ValueError):
    pass


def can_become(incident: Incident, to: IncidentStatus) -> bool:
    return to in TRANSITIONS[IncidentStatus(incident.status)]


def add_timeline(
    session: Session, incident: Incident, actor: str, kind: str, text: str, *,
    at: datetime, data: dict[str, Any] | None = None,
) -> None:
    assert incident.id is not None
    session.add(TimelineEntry(incident_id=incident.id, at=at, actor=actor, kind=kind,
                              text=text, data=data or {}))


def transition(
    session: Session, incident: Incident, to: IncidentStatus, *, actor: str, now: datetime, reason: str = ""
) -> None:
    """Move the incident to a new state, with a timeline entry and a card refresh."""
    current = IncidentStatus(incident.status)
    if not can_become(incident, to):
        raise InvalidTransition(f"an incident that is {current.value} cannot become {to.value}")
    incident.status = to
    incident.updated_at = now
    if to == S.RESOLVED:
        incident.resolved_at, incident.resolved_by = now, actor
    elif current == S.RESOLVED and to == S.DETECTED:
        incident.resolved_at, incident.resolved_by = None, None
    text = f"{current.value} → {to.value}" + (f": {reason}" if reason else "")
    add_timeline(session, incident, actor, "status", text, at=now, data={"from": current.value, "to": to.value})
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)
