"""Approval requests for remediations: asking, deciding once, recording the result.

A remediation click creates an `ApprovalRequest` (`request`), refused with a reason when the
kill switch is off, a budget is spent or the step already waits for approval. Every change of
status afterwards is one compare-and-set UPDATE on the row (`claim`, `deny`, `expire`), so of
two approvers clicking at the same moment exactly one wins, on SQLite as on PostgreSQL; only
the winner's transaction enqueues the execution job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlmodel import Session, col

from bot import audit, metrics
from bot.config import RemediationPolicy
from bot.jobs import (
    JOB_APPROVAL_EXECUTE,
    JOB_APPROVAL_EXPIRE,
    JOB_APPROVAL_FOLLOW,
    JOB_APPROVAL_POST,
    JOB_APPROVAL_REDRAW,
    JOB_CARD,
    JOB_RUNBOOK_REFRESH,
    enqueue,
)
from bot.lifecycle import add_timeline
from bot.models import ApprovalRequest, ApprovalStatus, Incident, IncidentStatus, RunbookStep, new_token

__all__ = ["FOLLOWED", "ROLLOUT_ENDED", "ApprovalRefused", "Claim", "claim", "deny", "expire", "find", "finish",
           "is_open", "latest_by_step", "progressed", "reconciled", "request", "rolled_out", "started"]

# Requests that count against a budget: those that may still run, or ran.
_SPENT = (ApprovalStatus.PENDING, ApprovalStatus.APPROVED, ApprovalStatus.EXECUTING, ApprovalStatus.SUCCEEDED,
          ApprovalStatus.FAILED)
_CLOSED = (IncidentStatus.RESOLVED, IncidentStatus.POSTMORTEM)
# Remediations that start a rollout, followed after their call until it completes or fails.
FOLLOWED = frozenset({"k8s.rollout_restart", "k8s.rollout_undo", "k8s.scale"})
ROLLOUT_ENDED = ("complete", "failed", "timed_out", "unknown")  # unknown: could not be followed


class ApprovalRefused(Exception):
    """The request cannot be made; the message says why (shown to the requester). `reason` names
    it for callers that word it themselves (in the asker's language): switched_off, resolved,
    pending, incident_budget, daily_budget; `limit` is the budget that was reached, `who` the
    Slack user whose request is pending."""

    def __init__(self, message: str, reason: str = "", limit: int = 0, who: str = "") -> None:
        super().__init__(message)
        self.reason, self.limit, self.who = reason, limit, who


def is_open(incident: Incident) -> bool:
    return IncidentStatus(incident.status) not in _CLOSED


def request(session: Session, step: RunbookStep, incident: Incident, user: str, now: datetime,
            config: RemediationPolicy, *, risk: str, params: dict[str, Any],
            self_approved: bool = False) -> ApprovalRequest:
    """Record a request to run `step` with `params` (validated by the caller against the
    runbook's allow-lists) and queue its approval message; ApprovalRefused says why not.
    `self_approved`: the caller found that the policy lets the requester approve it (low risk,
    `self_approve_low`): approved by them at once and run, with no approval message."""
    assert incident.id is not None and step.id is not None and step.action is not None
    # Requests for one incident, one at a time: two clicks at once must not both pass the checks
    # below (PostgreSQL's read committed would let them; SQLite serialises writers anyway).
    session.execute(select(col(Incident.id)).where(col(Incident.id) == incident.id).with_for_update())
    if self_approved and not (risk == "low" and config.self_approve_low):
        raise ValueError("only a low-risk request may be approved by its requester, with self_approve_low")
    if not config.enabled:
        raise ApprovalRefused("Remediations are switched off (`remediations.enabled: false` in ONCALL_CONFIG); "
                              "nothing was requested.", "switched_off")
    if not is_open(incident):
        raise ApprovalRefused("This incident is resolved; its remediations can no longer be requested.", "resolved")
    pending = session.scalars(select(ApprovalRequest).where(
        col(ApprovalRequest.step_id) == step.id, col(ApprovalRequest.status) == ApprovalStatus.PENDING,
        col(ApprovalRequest.expires_at) > now)).first()
    if pending is not None:
        raise ApprovalRefused(f"<@{pending.requested_by}> already requested this step; approve or deny that "
                              "request in the step's thread.", "pending", who=pending.requested_by)
    spent = select(func.count()).select_from(ApprovalRequest).where(col(ApprovalRequest.status).in_(_SPENT))
    used = session.scalar(spent.where(col(ApprovalRequest.incident_id) == incident.id)) or 0
    if used >= config.budget_per_incident:
        raise ApprovalRefused(f"This incident has used its budget of {config.budget_per_incident} remediations "
                              "(`remediations.budget_per_incident`); nothing was requested.", "incident_budget",
                              config.budget_per_incident)
    today = session.scalar(spent.where(col(ApprovalRequest.requested_at) > now - timedelta(days=1))) or 0
    if today >= config.budget_per_day:
        raise ApprovalRefused(f"The budget of {config.budget_per_day} remediations in 24 hours is used "
                              "(`remediations.budget_per_day`); nothing was requested.", "daily_budget",
                              config.budget_per_day)
    row = ApprovalRequest(token=new_token(), incident_id=incident.id, step_id=step.id, action=step.action,
                          params=params, risk=risk, requested_by=user, requested_at=now,
                          expires_at=now + timedelta(minutes=config.expiry_minutes))
    session.add(row)
    session.flush()
    add_timeline(session, incident, user, "approval_requested",
                 f"requested approval to run {step.action} ({step.step_id}), risk {risk}", at=now,
                 data={"approval": row.id, "step": step.step_id, "action": step.action, "params": params,
                       "risk": risk})
    if not self_approved:
        enqueue(session, JOB_APPROVAL_POST, incident.id, now=now, payload={"approval": row.id})
        enqueue(session, JOB_APPROVAL_EXPIRE, incident.id, now=now, payload={"approval": row.id},
                run_at=row.expires_at)
    _shown(session, incident.id, now)
    metrics.after_commit(session, metrics.APPROVALS.labels(event="requested").inc)
    audit.record(session, event="requested", actor=user, at=now, incident_id=incident.id, action=step.action,
                 params=params, data={"approval": row.id, "step": step.step_id, "risk": risk,
                                      "expires_at": row.expires_at.isoformat()})
    if self_approved:  # recorded as approved by the requester, as if they had clicked Approve
        won = claim(session, row.id or 0, user, now)
        assert won.won and won.current is not None
        return won.current
    return row


def _shown(session: Session, incident_id: int, now: datetime, approval: int | None = None) -> None:
    """The request's state changed: redraw its approval message (in the same transaction, so a
    failed redraw is retried, never lost), the step's status line and the card."""
    if approval is not None:
        enqueue(session, JOB_APPROVAL_REDRAW, incident_id, now=now, payload={"approval": approval})
    enqueue(session, JOB_RUNBOOK_REFRESH, incident_id, now=now, coalesce=True)
    enqueue(session, JOB_CARD, incident_id, now=now, coalesce=True)


def latest_by_step(session: Session, incident_id: int) -> dict[int, ApprovalRequest]:
    """Each runbook step's most recent request (its status line)."""
    rows = session.scalars(select(ApprovalRequest).where(col(ApprovalRequest.incident_id) == incident_id)
                           .order_by(col(ApprovalRequest.id)))
    return {row.step_id: row for row in rows}


def find(session: Session, token: str) -> ApprovalRequest | None:
    if not token or len(token) > 32:
        return None
    return session.scalars(select(ApprovalRequest).where(col(ApprovalRequest.token) == token)).first()


@dataclass(frozen=True)
class Claim:
    won: bool
    current: ApprovalRequest | None  # the row after the attempt (who won, or why not)


def _cas(session: Session, request_id: int, now: datetime, **values: Any) -> bool:
    """pending → values, only while pending and unexpired: rowcount 1 means this caller won."""
    result = session.execute(update(ApprovalRequest)
                             .where(col(ApprovalRequest.id) == request_id,
                                    col(ApprovalRequest.status) == ApprovalStatus.PENDING,
                                    col(ApprovalRequest.expires_at) > now)
                             .values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _after(session: Session, request_id: int) -> ApprovalRequest | None:
    session.expire_all()
    return session.get(ApprovalRequest, request_id)


def claim(session: Session, request_id: int, user: str, now: datetime) -> Claim:
    """Approve: pending → executing; only the winner queues the execution job."""
    won = _cas(session, request_id, now, status=ApprovalStatus.EXECUTING, decided_by=user, decided_at=now)
    row = _after(session, request_id)
    if won and row is not None:
        incident = session.get(Incident, row.incident_id)
        assert incident is not None
        add_timeline(session, incident, user, "approval_approved",
                     f"approved {row.action} requested by {row.requested_by}", at=now,
                     data={"approval": row.id, "action": row.action, "params": row.params})
        enqueue(session, JOB_APPROVAL_EXECUTE, row.incident_id, now=now, payload={"approval": row.id})
        _shown(session, row.incident_id, now, row.id)
        metrics.after_commit(session, metrics.APPROVALS.labels(event="approved").inc)
        audit.record(session, event="approved", actor=user, at=now, incident_id=row.incident_id, action=row.action,
                     params=row.params, data={"approval": row.id, "requested_by": row.requested_by,
                                              "risk": row.risk})
    return Claim(won, row)


def deny(session: Session, request_id: int, user: str, now: datetime, reason: str | None = None) -> Claim:
    won = _cas(session, request_id, now, status=ApprovalStatus.DENIED, decided_by=user, decided_at=now,
               reason=reason)
    row = _after(session, request_id)
    if won and row is not None:
        incident = session.get(Incident, row.incident_id)
        assert incident is not None
        add_timeline(session, incident, user, "approval_denied", f"denied {row.action} requested by "
                     f"{row.requested_by}", at=now, data={"approval": row.id, "action": row.action})
        audit.record(session, event="denied", actor=user, at=now, incident_id=row.incident_id, action=row.action,
                     params=row.params, data={"approval": row.id, "requested_by": row.requested_by,
                                              "reason": reason})
        _shown(session, row.incident_id, now, row.id)
        metrics.after_commit(session, metrics.APPROVALS.labels(event="rejected").inc)
    return Claim(won, row)


def expire(session: Session, request_id: int, now: datetime) -> Claim:
    """pending → expired once its time is up (when someone clicks, or the approval.expire job)."""
    result = session.execute(update(ApprovalRequest)
                             .where(col(ApprovalRequest.id) == request_id,
                                    col(ApprovalRequest.status) == ApprovalStatus.PENDING,
                                    col(ApprovalRequest.expires_at) <= now)
                             .values(status=ApprovalStatus.EXPIRED, decided_at=now))
    won = bool(result.rowcount)  # type: ignore[attr-defined]
    row = _after(session, request_id)
    if won and row is not None:
        incident = session.get(Incident, row.incident_id)
        assert incident is not None
        add_timeline(session, incident, "oncall-bot", "approval_expired",
                     f"the request to run {row.action} expired unapproved", at=now,
                     data={"approval": row.id, "action": row.action})
        audit.record(session, event="expired", actor="oncall-bot", at=now, incident_id=row.incident_id,
                     action=row.action, params=row.params, data={"approval": row.id,
                                                                 "requested_by": row.requested_by})
        _shown(session, row.incident_id, now, row.id)
        metrics.after_commit(session, metrics.APPROVALS.labels(event="expired").inc)
    return Claim(won, row)


def started(session: Session, request: ApprovalRequest, now: datetime, *, run: bool, why: str = "",
            before: dict[str, Any] | None = None) -> bool:
    """The execution job is about to run the action (`run`), or will not (`why`): on the record
    before anything happens in the cluster. A run sets the started mark with the cluster's facts
    `before` it, so a later attempt reconciles instead of running it again; False when another
    attempt set it first (a lapsed lease: two workers), and then this one must not run it."""
    if run:
        result = session.execute(update(ApprovalRequest)
                                 .where(col(ApprovalRequest.id) == request.id,
                                        col(ApprovalRequest.status) == ApprovalStatus.EXECUTING,
                                        col(ApprovalRequest.started_at).is_(None))
                                 .values(started_at=now, before=before or {}))
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        request.started_at, request.before = now, before or {}
    audit.record(session, event="executed", actor=request.decided_by or "oncall-bot", at=now,
                 incident_id=request.incident_id, action=request.action, params=request.params,
                 data={"approval": request.id, "run": run, **({"why": why} if why else {})})
    return True


def reconciled(session: Session, request_id: int, now: datetime, *, ok: bool, result: str,
               facts: dict[str, Any]) -> ApprovalRequest | None:
    """executing → succeeded/failed from what the cluster shows after an interrupted run (never
    run again), with a "reconciled" audit entry; None if not executing."""
    row = finish(session, request_id, now, ok=ok, result=result)
    if row is not None:
        audit.record(session, event="reconciled", actor="oncall-bot", at=now, incident_id=row.incident_id,
                     action=row.action, params=row.params,
                     data={"approval": row.id, "happened": ok, "before": row.before, "after": facts,
                           "result": row.result})
    return row


def finish(session: Session, request_id: int, now: datetime, *, ok: bool, result: str) -> ApprovalRequest | None:
    """executing → succeeded/failed, with the result and a timeline entry; None if not executing."""
    row = session.get(ApprovalRequest, request_id, with_for_update=True)
    if row is None or row.status != ApprovalStatus.EXECUTING:
        return None
    row.status = ApprovalStatus.SUCCEEDED if ok else ApprovalStatus.FAILED
    row.result = result[:4000]
    incident = session.get(Incident, row.incident_id)
    assert incident is not None
    add_timeline(session, incident, row.decided_by or "oncall-bot", "remediation",
                 f"ran {row.action} (approved by {row.decided_by}): {result}"[:1000], at=now,
                 data={"approval": row.id, "action": row.action, "params": row.params, "ok": ok})
    audit.record(session, event="result", actor=row.decided_by or "oncall-bot", at=now, incident_id=row.incident_id,
                 action=row.action, params=row.params, data={"approval": row.id, "ok": ok, "result": row.result})
    if ok and row.action in FOLLOWED:
        row.rollout = "progressing"
        enqueue(session, JOB_APPROVAL_FOLLOW, row.incident_id, now=now, payload={"approval": row.id})
    _shown(session, row.incident_id, now, row.id)
    return row


def progressed(session: Session, request: ApprovalRequest, detail: str, now: datetime) -> bool:
    """The followed rollout's latest progress line; False when unchanged (nothing to redraw)."""
    result = session.execute(update(ApprovalRequest)
                             .where(col(ApprovalRequest.id) == request.id,
                                    col(ApprovalRequest.rollout) == "progressing",
                                    or_(col(ApprovalRequest.rollout_detail).is_(None),
                                        col(ApprovalRequest.rollout_detail) != detail[:1000]))
                             .values(rollout_detail=detail[:1000]))
    changed = bool(result.rowcount)  # type: ignore[attr-defined]
    if changed:
        _shown(session, request.incident_id, now, request.id)  # its message, the step's line, the card
    return changed


def rolled_out(session: Session, request_id: int, now: datetime, *, state: str,
               detail: str) -> ApprovalRequest | None:
    """progressing → complete | failed | timed_out, once, with a timeline and an audit entry;
    None when it was not progressing (ended by an earlier attempt)."""
    assert state in ROLLOUT_ENDED
    result = session.execute(update(ApprovalRequest)
                             .where(col(ApprovalRequest.id) == request_id,
                                    col(ApprovalRequest.rollout) == "progressing")
                             .values(rollout=state, rollout_detail=detail[:1000]))
    row = _after(session, request_id)
    if not result.rowcount or row is None:  # type: ignore[attr-defined]
        return None
    incident = session.get(Incident, row.incident_id)
    assert incident is not None
    add_timeline(session, incident, "oncall-bot", "rollout", f"rollout after {row.action}: {state}: {detail}"[:1000],
                 at=now, data={"approval": row.id, "action": row.action, "rollout": state})
    audit.record(session, event="rollout", actor="oncall-bot", at=now, incident_id=row.incident_id,
                 action=row.action, params=row.params, data={"approval": row.id, "rollout": state, "detail": detail})
    _shown(session, row.incident_id, now, row.id)
    return row
