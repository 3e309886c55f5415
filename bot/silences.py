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
* `request` is `/silence` and the card's silence menu (commands.silence_command): a request
  through the approval flow (bot.approvals), on a step row of the command's own
  (bot.steps.add_command_step), approved by its requester at once when the policy lets them.
  `incident_matchers` / `given_matchers` say what it silences.
* `marker` is what a silence's comment names its request by, and `made_by` finds the silence a
  request made in Alertmanager's listing: after a crash, or an answer lost after Alertmanager
  created it, the request is reconciled (commands.silences) instead of failing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bot import approvals, audit, steps
from bot.actions import SilenceCreated
from bot.config import RemediationPolicy
from bot.jobs import JOB_CARD, JOB_SILENCE_ENDED, JOB_SILENCE_EXPIRE, enqueue
from bot.lifecycle import add_timeline
from bot.models import ApprovalRequest, ApprovalStatus, Incident, Silence, new_token
from bot.param_syntax import SilenceMatcher, parse_duration, parse_silence_matchers, short_repr
from integrations.alertmanager import SilenceInfo

__all__ = ["ACTION", "COMMAND", "Asked", "Claim", "ended", "expire_failed", "expired", "find", "given_matchers",
           "incident_matchers", "made_by", "marker", "record", "request", "request_expire", "shown"]

ACTION = "alertmanager.silence"  # the action whose runs create what this module records
COMMAND = "/silence"  # the command whose requests' step rows are its own (bot.steps.add_command_step)
MAX_MATCHERS = 16  # bot.param_syntax.parse_silence_matchers takes no more


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


# -- `/silence` and the card's menu ------------------------------------------------------------------

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_CUT = re.compile(r"…\[cut \d+ (chars|entries)\]")  # integrations.alertmanager's marks of what it cut
_WORD = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)(=~|!~|!=|=)(.*)", re.DOTALL)


def incident_matchers(incident: Incident) -> str | None:
    """Matchers for the incident's alerts: one equality per label its alert group has in common
    (Alertmanager's commonLabels, kept as `Incident.labels`), alertname first. A label the bot cut
    to store it (its value is no longer the alerts') is left out; None when the labels name no
    alertname (a group of different alerts: the matchers must be given)."""
    labels = {name: value for name, value in incident.labels.items()
              if _LABEL_NAME.fullmatch(name) and value and not _CUT.search(value) and not _CUT.search(name)}
    if not labels.get("alertname"):
        return None
    names = ["alertname", *sorted(name for name in labels if name != "alertname")][:MAX_MATCHERS]
    return ", ".join(str(SilenceMatcher(name, labels[name], False, True)) for name in names)


def given_matchers(words: Sequence[str], alertname: str) -> str:
    """`label=value` words (also `!=`, `=~`, `!~`; quotes already taken off) as matchers; the
    incident's alertname is added when they name none, and they may name no other: an
    incident's silence narrows its own alerts, it never reaches another incident's (or no
    incident's) alerts. ValueError says which word is wrong; the action's parameters
    (bot.param_syntax.parse_silence_matchers) judge the rest."""
    matchers: list[SilenceMatcher] = []
    for word in words:
        found = _WORD.fullmatch(word)
        if not found:
            raise ValueError(f"{short_repr(word)} is not label=value")
        name, op, value = found.groups()
        if name == "alertname" and alertname and (op != "=" or value != alertname):
            raise ValueError(f"{short_repr(word)}: this incident's silences are for its own alerts "
                             f"(alertname={short_repr(alertname)}); silence other alerts from their own incident")
        matchers.append(SilenceMatcher(name, value, op in ("=~", "!~"), op in ("=", "=~")))
    if alertname and not any(m.name == "alertname" for m in matchers):
        matchers.insert(0, SilenceMatcher("alertname", alertname, False, True))
    return ", ".join(map(str, matchers))


@dataclass(frozen=True)
class Asked:
    """What a silence request came to: the request made (`request`), or why none was: the same
    silence already waits for approval (`pending`), or one as long is in place (`covering`)."""

    request: ApprovalRequest | None
    pending: ApprovalRequest | None = None
    covering: Silence | None = None


def request(session: Session, incident: Incident, user: str, now: datetime, policy: RemediationPolicy, *,
            params: dict[str, Any], risk: str, self_approved: bool, channel: str | None) -> Asked:
    """A silence of the incident's alerts, asked for by `user` with validated `params` (the
    action's: matchers, duration, comment), in the caller's transaction with the incident's row
    locked. `self_approved`: the policy lets the requester approve it (bot.approvals.request).
    `channel`: where its approval message and outcome go. bot.approvals.ApprovalRefused says why
    not (switched off, resolved, a budget spent): the caller rolls back."""
    assert incident.id is not None
    matchers = params["matchers"]
    pending = next((row for row in session.scalars(select(ApprovalRequest).where(
        col(ApprovalRequest.incident_id) == incident.id, col(ApprovalRequest.action) == ACTION,
        col(ApprovalRequest.status) == ApprovalStatus.PENDING, col(ApprovalRequest.expires_at) > now,
    ).order_by(col(ApprovalRequest.id))) if row.params.get("matchers") == matchers), None)
    if pending is not None:
        return Asked(None, pending=pending)
    ends = now + parse_duration(str(params["duration"]))
    covering = next((row for row in shown(session, incident.id, now) if row.matchers == matchers
                     and row.ends_at >= ends and row.expire_requested_at is None), None)
    if covering is not None:
        return Asked(None, covering=covering)
    step = steps.add_command_step(session, incident, COMMAND, ACTION, params, channel=channel)
    return Asked(approvals.request(session, step, incident, user, now, policy, risk=risk, params=params,
                                   self_approved=self_approved))


# -- finding a request's silence again ------------------------------------------------------------------

def marker(incident_id: int, approval_id: int | None) -> str:
    """What a silence's comment names it by: the incident and the request that made it."""
    return f"oncall-bot incident #{incident_id} request #{approval_id}:"


def made_by(found: Sequence[SilenceInfo], row: ApprovalRequest) -> SilenceCreated | None:
    """The silence the request `row` created, among Alertmanager's `found`: its comment names the
    request, its creator and matchers are the request's (a silence someone made by hand with a
    copied comment is not it), and it starts no earlier than the request's started mark (the same
    ids again, after the database was reset, named an older one); None when the request made none."""
    wanted = {(m.name, m.value, m.is_regex, m.is_equal) for m in parse_silence_matchers(str(row.params["matchers"]))}
    creator = row.decided_by or "oncall-bot"  # as the action sets createdBy (bot.actions)
    named = marker(row.incident_id, row.id)
    # The action sends its start, read after the mark, to the millisecond (Alertmanager keeps a later one).
    since = row.started_at - timedelta(seconds=1) if row.started_at else None
    mine = sorted((s for s in found if named in s.comment and s.created_by == creator
                   and {(m.name, m.value, m.is_regex, m.is_equal) for m in s.matchers} == wanted
                   and (since is None or s.starts_at >= since)),
                  key=lambda s: (s.starts_at, s.id))
    if not mine:
        return None
    first = mine[0]
    return SilenceCreated(first.id, str(row.params["matchers"]), first.starts_at, first.ends_at, first.created_by,
                          first.comment)
