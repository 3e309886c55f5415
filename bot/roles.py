"""An incident's roles (commander, scribe, comms) and its status updates. Data only:
commands.roles parses `/incident assign` and `/incident update` and words what they show.

Every change is written in the caller's transaction, with the incident's row locked by the
caller: it records itself on the timeline, queues what Slack must show (the invitation, the
update's two posts) in the outbox, and refreshes the card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import select
from sqlmodel import Session, col

from bot import escalation
from bot.config import OncallConfig
from bot.jobs import JOB_CARD, JOB_ROLE_INVITE, JOB_STATUS_UPDATE, JOB_STATUS_UPDATE_ANNOUNCE, enqueue
from bot.models import Incident, TimelineEntry

__all__ = ["ROLES", "STATUS_UPDATE", "UPDATE_FIELDS", "UPDATE_LIMIT", "Assigned", "Role", "StatusUpdate",
           "assign", "holder", "last_update_at", "post_update", "update_of"]

Role = Literal["commander", "scribe", "comms"]
ROLES: tuple[Role, ...] = get_args(Role)  # the column of each is its name on Incident
STATUS_UPDATE = "status_update"  # the timeline kind of a status update
UPDATE_FIELDS = ("known", "impact", "next_steps")  # what a status update says, in this order
UPDATE_LIMIT = 3000  # characters of each field (the modal's inputs allow no more)
_LABELS = {"known": "Known", "impact": "Impact", "next_steps": "Next"}


def holder(incident: Incident, role: Role) -> str | None:
    """Who holds the role now (a Slack user id), or None."""
    held: str | None = getattr(incident, role)
    return held


@dataclass(frozen=True)
class Assigned:
    role: Role
    user: str
    previous: str | None  # who had it before (None: nobody)
    changed: bool  # False: `user` already had it


def assign(session: Session, incident: Incident, role: Role, user: str, actor: str, now: datetime, *,
           names: Mapping[str, str] | None = None) -> Assigned:
    """Give `role` to `user` (a Slack user id). The timeline says who has it and who had it
    (`names`: how to call the people in its text, e.g. {"U1": "@ann"}; else their ids); the
    person is invited to the incident's channel (one without a channel is steered by its role
    holders, bot.policy)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    previous = holder(incident, role)
    if previous == user:
        return Assigned(role, user, previous, changed=False)
    named = names or {}

    def called(who: str) -> str:
        return named.get(who) or who

    text = f"{role}: {called(user)}" + (f" (was {called(previous)})" if previous else "")
    session.add(TimelineEntry(incident_id=incident.id or 0, at=now, actor=actor, kind="role", text=text,
                              data={"role": role, "user": user, "previous": previous}))
    setattr(incident, role, user)
    incident.updated_at = now
    if incident.channel_id:
        enqueue(session, JOB_ROLE_INVITE, incident.id, now=now, payload={"user": user, "role": role})
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)
    return Assigned(role, user, previous, changed=True)


# -- status updates -------------------------------------------------------------------------------

@dataclass(frozen=True)
class StatusUpdate:
    entry_id: int
    at: datetime
    author: str
    known: str
    impact: str
    next_steps: str


def post_update(session: Session, incident: Incident, author: str, fields: Mapping[str, str], now: datetime,
                config: OncallConfig, *, view: str | None = None) -> StatusUpdate:
    """Record a status update (at least one of UPDATE_FIELDS; each cut to UPDATE_LIMIT), queue
    its posts (the incident's channel or card thread; and the announcement's thread when the
    incident has a channel of its own) and reset the status-update reminder (bot.escalation).
    `view`: the modal it came from; submitted again (a person pressing Submit twice when Slack
    was slow), it is the update already recorded. The caller holds the incident's row lock."""
    values = {name: str(fields.get(name) or "").strip()[:UPDATE_LIMIT] for name in UPDATE_FIELDS}
    if not any(values.values()):
        raise ValueError("a status update says at least one of: " + ", ".join(UPDATE_FIELDS))
    if view:
        for earlier in session.scalars(select(TimelineEntry).where(
                col(TimelineEntry.incident_id) == incident.id, col(TimelineEntry.kind) == STATUS_UPDATE)):
            if earlier.data.get("view") == view:
                return _update(earlier)
    text = "\n".join(f"{_LABELS[name]}: {value}" for name, value in values.items() if value)
    entry = TimelineEntry(incident_id=incident.id or 0, at=now, actor=author, kind=STATUS_UPDATE, text=text,
                          data={**values, **({"view": view} if view else {})})
    session.add(entry)
    session.flush()  # its id names the posts (their message tags)
    assert entry.id is not None
    payload = {"entry": entry.id}
    enqueue(session, JOB_STATUS_UPDATE, incident.id, now=now, payload=payload)
    # Without a channel its card (and the card's thread) is in the announce channel already; a
    # private incident's announcement tells no details, so neither does its thread.
    if incident.channel_id and not incident.private:
        enqueue(session, JOB_STATUS_UPDATE_ANNOUNCE, incident.id, now=now, payload=payload)
    escalation.status_update_posted(session, incident, config, now)
    incident.updated_at = now
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)
    return _update(entry)


def update_of(session: Session, entry_id: int) -> StatusUpdate | None:
    entry = session.get(TimelineEntry, entry_id)
    return _update(entry) if entry is not None and entry.kind == STATUS_UPDATE else None


def last_update_at(session: Session, incident_id: int) -> datetime | None:
    """When the incident's newest status update was posted (None: never)."""
    found: datetime | None = session.scalar(
        select(col(TimelineEntry.at)).where(col(TimelineEntry.incident_id) == incident_id,
                                            col(TimelineEntry.kind) == STATUS_UPDATE)
        .order_by(col(TimelineEntry.at).desc()).limit(1))
    return found


def _update(entry: TimelineEntry) -> StatusUpdate:
    data = entry.data or {}
    return StatusUpdate(entry_id=entry.id or 0, at=entry.at, author=entry.actor, known=str(data.get("known", "")),
                        impact=str(data.get("impact", "")), next_steps=str(data.get("next_steps", "")))
