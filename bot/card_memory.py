"""What an incident's card remembers and offers, as data (commands.card_memory renders it):

* the last incidents like it (`past_incidents`): resolved incidents with the same alertname and
  service, each with how long it lasted and what was done last before it resolved, the
  approved remediation that succeeded, else the runbook step that last ran successfully;
* its newest remediation requests (`recent_remediations`), whatever their status;
* the states it is likely to move to next (`likely_next`), a subset of bot.lifecycle's
  transitions, offered as buttons.

Read inside bot.card_view's one read transaction; no Slack text here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from bot.declare import SLACK
from bot.lifecycle import TRANSITIONS
from bot.models import ApprovalRequest, ApprovalStatus, Incident, IncidentStatus, RunbookStep

__all__ = ["LIKELY_NEXT", "PAST_SHOWN", "REMEDIATIONS_SHOWN", "PastIncident", "likely_next", "past_incidents",
           "recent_remediations"]

PAST_SHOWN = 3  # past incidents a card names
REMEDIATIONS_SHOWN = 3  # remediation requests a card lists, newest first

S = IncidentStatus
# Where work usually goes from each state (the seeds' forward path); each must be one of
# bot.lifecycle.TRANSITIONS. Resolving is left out: the card has its own Resolve button (with its
# confirmation), so mitigating offers nothing more; reopening is `/incident reopen`.
LIKELY_NEXT: dict[IncidentStatus, tuple[IncidentStatus, ...]] = {
    S.DETECTED: (S.TRIAGED, S.INVESTIGATING),
    S.TRIAGED: (S.INVESTIGATING, S.IDENTIFIED),
    S.INVESTIGATING: (S.IDENTIFIED, S.MITIGATING),
    S.ESCALATED: (S.INVESTIGATING, S.IDENTIFIED, S.MITIGATING),
    S.IDENTIFIED: (S.MITIGATING,),
    S.MITIGATING: (),
    S.RESOLVED: (),
    S.POSTMORTEM: (),
}


def likely_next(incident: Incident) -> list[IncidentStatus]:
    """The states to offer as buttons (at most 3), only ones the incident may move to."""
    current = IncidentStatus(incident.status)
    return [state for state in LIKELY_NEXT[current] if state in TRANSITIONS[current]][:3]


@dataclass(frozen=True)
class PastIncident:
    """A resolved incident like the one on the card. `kind` says what preceded its resolution:
    an approved `remediation` that succeeded, else a runbook `step` that ran successfully (its
    `step_id`), else None; `action` and `params` are that remediation's or step's."""

    id: int
    channel_id: str | None
    opened_at: datetime
    resolved_at: datetime
    kind: Literal["remediation", "step"] | None = None
    action: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    step_id: str | None = None


def past_incidents(session: Session, incident: Incident, limit: int = PAST_SHOWN) -> list[PastIncident]:
    """The last `limit` resolved incidents with the incident's alertname and service, opened
    before it, not private and from Alertmanager, the most recently resolved first; one statement.
    Declared incidents (bot.declare) have no memory and are none: they all share one alertname
    (`incidents.declared_alertname`), so its match says nothing of what went wrong. Its plan: a scan of `incident`
    filtered on (alertname, service, status), the top `limit` by resolved_at, then for those rows
    only one index probe each into approval_request and runbook_step (by incident_id).
    An index on incident (alertname, service, resolved_at) would make the first part a probe too."""
    if incident.source == SLACK:
        return []
    service = col(Incident.service) == incident.service if incident.service is not None \
        else col(Incident.service).is_(None)
    past = (select(col(Incident.id).label("id"), col(Incident.channel_id).label("channel_id"),
                   col(Incident.created_at).label("opened_at"), col(Incident.resolved_at).label("resolved_at"))
            .where(col(Incident.alertname) == incident.alertname, service,
                   col(Incident.status).in_([S.RESOLVED, S.POSTMORTEM]), col(Incident.resolved_at).is_not(None),
                   col(Incident.private).is_(False),  # a private incident is named on no other card
                   col(Incident.source) != SLACK,
                   col(Incident.id) < (incident.id or 0))
            .order_by(col(Incident.resolved_at).desc(), col(Incident.id).desc()).limit(limit).subquery("past"))
    # What preceded the resolution: the newest remediation that succeeded, requested before it
    # resolved; and the runbook step that last ran successfully before it resolved.
    request, step = aliased(ApprovalRequest), aliased(RunbookStep)
    last_request = (select(col(request.id)).where(col(request.incident_id) == past.c.id,
                                                  col(request.status) == ApprovalStatus.SUCCEEDED,
                                                  col(request.requested_at) <= past.c.resolved_at)
                    .order_by(col(request.id).desc()).limit(1).correlate(past).scalar_subquery())
    last_step = (select(col(step.id)).where(col(step.incident_id) == past.c.id, col(step.last_ok).is_(True),
                                            col(step.last_run_at) <= past.c.resolved_at)
                 .order_by(col(step.last_run_at).desc(), col(step.id).desc()).limit(1).correlate(past)
                 .scalar_subquery())
    query = (select(past.c.id, past.c.channel_id, past.c.opened_at, past.c.resolved_at,
                    col(ApprovalRequest.action), col(ApprovalRequest.params),
                    col(RunbookStep.action), col(RunbookStep.params), col(RunbookStep.step_id))
             .select_from(past)
             .outerjoin(ApprovalRequest, col(ApprovalRequest.id) == last_request)
             .outerjoin(RunbookStep, col(RunbookStep.id) == last_step)
             .order_by(past.c.resolved_at.desc(), past.c.id.desc()))
    found = []
    for row in session.execute(query):
        incident_id, channel_id, opened_at, resolved_at, request_action, request_params, step_action, step_params, \
            step_id = row
        if request_action is not None:
            what: dict[str, Any] = {"kind": "remediation", "action": request_action, "params": request_params or {}}
        elif step_id is not None:
            what = {"kind": "step", "action": step_action, "params": step_params or {}, "step_id": step_id}
        else:
            what = {}
        found.append(PastIncident(id=incident_id, channel_id=channel_id, opened_at=opened_at,
                                  resolved_at=resolved_at, **what))
    return found


def recent_remediations(session: Session, incident_id: int, limit: int = REMEDIATIONS_SHOWN) -> list[ApprovalRequest]:
    """The incident's newest remediation requests, newest first (by the index on incident_id)."""
    return list(session.scalars(select(ApprovalRequest).where(col(ApprovalRequest.incident_id) == incident_id)
                                .order_by(col(ApprovalRequest.id).desc()).limit(limit)))
