"""Runbook steps posted in an incident: opaque button tokens, runs and approval requests.

A button carries only `RunbookStep.token`; the action and its validated parameters are
stored here when the runbook is posted, so nothing a user sends can change them.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from bot.incidents import add_timeline
from bot.models import Incident, RunbookStep

__all__ = ["StepSpec", "find_step", "record_run", "record_approval_request", "steps_for", "store_steps"]


class StepSpec:
    """What the runbook said for one step, after templating and validation."""

    def __init__(self, step_id: str, action: str | None, kind: str, params: dict[str, Any],
                 disabled_reason: str | None) -> None:
        self.step_id, self.action, self.kind = step_id, action, kind
        self.params, self.disabled_reason = params, disabled_reason


def store_steps(session: Session, incident: Incident, runbook_id: str, specs: list[StepSpec]) -> list[RunbookStep]:
    """Create the incident's step rows once; a retried post gets the same rows and tokens."""
    existing = steps_for(session, incident.id or 0)
    if existing:
        return existing
    rows = [
        RunbookStep(token=secrets.token_urlsafe(16), incident_id=incident.id, runbook_id=runbook_id,
                    step_index=index, step_id=spec.step_id, action=spec.action, kind=spec.kind,
                    params=spec.params, disabled_reason=spec.disabled_reason)
        for index, spec in enumerate(specs)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def steps_for(session: Session, incident_id: int) -> list[RunbookStep]:
    query = select(RunbookStep).where(RunbookStep.incident_id == incident_id).order_by(RunbookStep.step_index)
    return list(session.scalars(query))


def find_step(session: Session, token: str) -> RunbookStep | None:
    if not token or len(token) > 32:
        return None
    return session.scalars(select(RunbookStep).where(RunbookStep.token == token).with_for_update()).first()


def record_run(session: Session, step: RunbookStep, incident: Incident, user: str, now: datetime,
               outcome: str) -> None:
    step.runs += 1
    step.last_run_by, step.last_run_at = user, now
    add_timeline(session, incident, user, "diagnostic",
                 f"ran {step.action} ({step.step_id}): {outcome}", at=now,
                 data={"step": step.step_id, "action": step.action, "params": step.params})


def record_approval_request(session: Session, step: RunbookStep, incident: Incident, user: str,
                            now: datetime) -> None:
    add_timeline(session, incident, user, "approval_requested",
                 f"requested approval to run {step.action} ({step.step_id})", at=now,
                 data={"step": step.step_id, "action": step.action, "params": step.params})
