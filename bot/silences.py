"""The silences approved `alertmanager.silence` requests created: recorded for the incident
card, ended by its Expire button.

* `record` stores the silence Alertmanager created, once per Alertmanager id (a retried
  execution records nothing twice), with a "silenced" timeline entry and an audit entry, and
  queues the card's redraw now and another when the silence ends (`silence.ended`), so the
  card drops it by itself.
* `request_expire` is the Expire click: one compare-and-set, so of two clicks exactly one wins
  and only the winner's transaction queues `silence.expire`.
* `expired` records that job's outcome once (ended in Alertmanager, or found already expired
  there); `expire_failed` gives the button back and puts the reason in the timeline.
* `shown` is what the card lists. The card is drawn from stored data only, so a silence past
  its `ends_at` is never shown as silencing anything, whatever Alertmanager says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bot import audit
from bot.actions import SilenceCreated
from bot.jobs import JOB_CARD, JOB_SILENCE_ENDED, JOB_SILENCE_EXPIRE, enqueue
from bot.lifecycle import add_timeline
from bot.models import Incident, Silence, new_token

__all__ = ["ACTION", "Claim", "ended", "expire_failed", "expired", "find", "record", "request_expire", "shown"]

ACTION = "alertmanager.silence"  # the action whose runs create what this module records


def record(session: Session, incident: Incident, created: SilenceCreated, *, approval_id: int | None,
           now: datetime) -> Silence | None:
    """Store the silence `created` for `incident`; None when it was already recorded (a retry)."""
    assert incident.id is not None
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = session.execute(insert(Silence).values(
        token=new_token(), incident_id=incident.id, approval_id=approval_id, silence_id=created.silence_id,
        matchers=created.matchers, comment=created.comment, created_by=created.created_by,
        starts_at=created.starts_at, ends_at=created.ends_at, created_at=now,
    ).on_conflict_do_nothing(index_elements=["silence_id"]).returning(col(Silence.id)))
    inserted = result.scalar_one_or_none()  # None: the conflict, an earlier attempt's row
    if inserted is None:
        return None
    row = session.get_one(Silence, inserted)
    facts = _facts(row)
    add_timeline(session, incident, created.created_by, "silenced",
                 f"silenced {created.matchers} until {created.ends_at:%Y-%m-%d %H:%M} UTC", at=now, data=facts)
    audit.record(session, event="silenced", actor=created.created_by, at=now, incident_id=incident.id,
                 action=ACTION, params={"matchers": created.matchers}, data={**facts, "comment": created.comment})
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)
    enqueue(session, JOB_SILENCE_ENDED, incident.id, now=now, payload={"silence": row.id}, run_at=created.ends_at)
    return row


def shown(session: Session, incident_id: int, now: datetime) -> list[Silence]:
    """The incident's silences that have neither ended (by `now`) nor been expired, soonest end first."""
    return list(session.scalars(select(Silence).where(
        col(Silence.incident_id) == incident_id, col(Silence.expired_at).is_(None), col(Silence.ends_at) > now,
    ).order_by(col(Silence.ends_at), col(Silence.id))))


def find(session: Session, token: str) -> Silence | None:
    if not token or len(token) > 32:
        return None
    return session.scalars(select(Silence).where(col(Silence.token) == token)).first()


@dataclass(frozen=True)
class Claim:
    won: bool
    current: Silence | None  # the row after the attempt (who expired it, or why not)


def request_expire(session: Session, silence_id: int, user: str, now: datetime) -> Claim:
    """The Expire click: not asked for, not expired, not ended → asked for by `user`; only the
    winner queues the call to Alertmanager (and the redraw that shows it under way)."""
    result = session.execute(update(Silence).where(
        col(Silence.id) == silence_id, col(Silence.expire_requested_at).is_(None), col(Silence.expired_at).is_(None),
        col(Silence.ends_at) > now,
    ).values(expire_requested_by=user, expire_requested_at=now))
    won = bool(result.rowcount)  # type: ignore[attr-defined]
    row = _after(session, silence_id)
    if won and row is not None:
        enqueue(session, JOB_SILENCE_EXPIRE, row.incident_id, now=now, payload={"silence": row.id})
        enqueue(session, JOB_CARD, row.incident_id, now=now, coalesce=True)
    return Claim(won, row)


def expired(session: Session, silence_id: int, now: datetime, *, already: bool) -> Silence | None:
    """Alertmanager has it expired (`already`: it was, before our call): recorded once, by whoever
    clicked; None when an earlier attempt recorded it."""
    result = session.execute(update(Silence).where(
        col(Silence.id) == silence_id, col(Silence.expired_at).is_(None), col(Silence.expire_requested_at).isnot(None),
    ).values(expired_at=now, expired_by=col(Silence.expire_requested_by)))
    row = _after(session, silence_id)
    if not result.rowcount or row is None:  # type: ignore[attr-defined]
        return None
    incident = session.get(Incident, row.incident_id)
    assert incident is not None
    actor = row.expired_by or "oncall-bot"
    text = (f"the silence of {row.matchers} was already expired in Alertmanager" if already
            else f"expired the silence of {row.matchers}")
    facts = {**_facts(row), "already_expired": already}
    add_timeline(session, incident, actor, "silence_expired", text, at=now, data=facts)
    audit.record(session, event="silence_expired", actor=actor, at=now, incident_id=row.incident_id, action=ACTION,
                 params={"matchers": row.matchers}, data=facts)
    enqueue(session, JOB_CARD, row.incident_id, now=now, coalesce=True)
    return row


def expire_failed(session: Session, silence_id: int, now: datetime, reason: str) -> Silence | None:
    """Alertmanager refused to expire it (for good): the request is withdrawn, so the card shows
    the Expire button again, and the timeline says why; None when not under way."""
    row = _after(session, silence_id)
    asker = row.expire_requested_by if row is not None else None
    result = session.execute(update(Silence).where(
        col(Silence.id) == silence_id, col(Silence.expired_at).is_(None), col(Silence.expire_requested_at).isnot(None),
    ).values(expire_requested_by=None, expire_requested_at=None))
    row = _after(session, silence_id)
    if not result.rowcount or row is None:  # type: ignore[attr-defined]
        return None
    incident = session.get(Incident, row.incident_id)
    assert incident is not None
    actor = asker or "oncall-bot"
    facts = {**_facts(row), "error": reason[:500]}
    add_timeline(session, incident, actor, "silence_expire_failed",
                 f"could not expire the silence of {row.matchers}: {reason}"[:1000], at=now, data=facts)
    audit.record(session, event="silence_expire_failed", actor=actor, at=now, incident_id=row.incident_id,
                 action=ACTION, params={"matchers": row.matchers}, data=facts)
    enqueue(session, JOB_CARD, row.incident_id, now=now, coalesce=True)
    return row


def ended(session: Session, silence_id: int, now: datetime) -> None:
    """Its end has come: the card, drawn again, no longer lists it (nothing to record)."""
    row = session.get(Silence, silence_id)
    if row is not None and row.expired_at is None and row.ends_at <= now:
        enqueue(session, JOB_CARD, row.incident_id, now=now, coalesce=True)


def _after(session: Session, silence_id: int) -> Silence | None:
    session.expire_all()
    return session.get(Silence, silence_id)


def _facts(row: Silence) -> dict[str, Any]:
    return {"silence": row.id, "silence_id": row.silence_id, "approval": row.approval_id,
            "starts_at": row.starts_at.isoformat(), "ends_at": row.ends_at.isoformat()}
