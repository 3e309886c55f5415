"""Runbook steps posted in an incident: which runbook, opaque button tokens, runs and approval requests.

A button carries only `RunbookStep.token`; the action and its validated parameters are
stored here when the runbook is posted, so nothing a user sends can change them. A click
only records who asked: the diagnostic itself runs from the outbox (commands.runbook_flow),
so a Slack hiccup while posting its output is retried, never lost.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from bot import audit
from bot.config import RunbookPolicy
from bot.jobs import JOB_RUNBOOK_REFRESH, JOB_STEP_RUN, enqueue
from bot.lifecycle import add_timeline
from bot.models import Alert, Incident, RunbookStep
from bot.runbook_format import Runbook
from bot.runbooks import PreparedStep, RunbookSet, prepare_steps

__all__ = [
    "RunbookPlan", "add_command_step", "find_step", "is_command_step",
    "plan_runbook", "record_run", "request_run", "steps_for", "store_steps",
]

# A step a slash command asks for (`/silence`, or the card's silence menu), not a runbook's: its
# runbook id is the command (a runbook's id is a slug, never "/..."). It gives the approval
# request (bot.approvals) the step row it belongs to, and is never part of the incident's runbook.
_COMMAND = "/"


def is_command_step(step: RunbookStep) -> bool:
    return step.runbook_id.startswith(_COMMAND)


def add_command_step(session: Session, incident: Incident, command: str, action: str, params: dict[str, object],
                     *, channel: str | None) -> RunbookStep:
    """The step row of one command's request. `channel`: where its approval message and result
    go, top level (None: the card's thread, for an incident without a channel of its own)."""
    assert incident.id is not None and command.startswith(_COMMAND)
    row = RunbookStep(token=secrets.token_urlsafe(16), incident_id=incident.id, runbook_id=command, step_index=0,
                      step_id=command.removeprefix(_COMMAND), action=action, kind="remediation", params=params,
                      message_channel=channel)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class RunbookPlan:
    """The runbook for an incident, its steps prepared against the incident's first alert."""

    runbook: Runbook | None
    steps: list[PreparedStep]
    labels: dict[str, str]
    annotations: dict[str, str]


def alert_context(session: Session, incident: Incident) -> tuple[dict[str, str], dict[str, str]]:
    """Labels and annotations templates see: the group's common ones, completed by its first
    alert's (a group's common labels often lack the pod that `k8s.logs` needs)."""
    first = session.scalars(select(Alert).where(col(Alert.incident_id) == incident.id)
                            .order_by(col(Alert.id))).first()
    labels = {**(first.labels if first else {}), **incident.labels}
    annotations = {**(first.annotations if first else {}), **incident.annotations}
    return labels, annotations


def plan_runbook(session: Session, incident: Incident, runbooks: RunbookSet, policy: RunbookPolicy, *,
                 risk_overrides: Mapping[str, str] | None = None) -> RunbookPlan:
    """`risk_overrides`: the configuration's `remediations.risk`, for the risk each step shows."""
    labels, annotations = alert_context(session, incident)
    runbook = runbooks.get(_stored_runbook_id(session, incident)) or runbooks.best_match(labels)
    if runbook is None:
        return RunbookPlan(None, [], labels, annotations)
    steps = prepare_steps(runbook, labels, annotations, policy.namespaces, allowed_urls=policy.urls,
                          allowed_nodes=policy.nodes, risk_overrides=risk_overrides)
    return RunbookPlan(runbook, steps, labels, annotations)


def _stored_runbook_id(session: Session, incident: Incident) -> str:
    """Once posted, an incident keeps its runbook even if a better match is added later."""
    row = session.scalars(select(col(RunbookStep.runbook_id))
                          .where(col(RunbookStep.incident_id) == incident.id,
                                 col(RunbookStep.runbook_id).not_like(f"{_COMMAND}%"))).first()
    return row or ""


def store_steps(session: Session, incident: Incident, plan: RunbookPlan) -> list[RunbookStep]:
    """Create the incident's step rows once; a retried post gets the same rows and tokens."""
    existing = steps_for(session, incident.id or 0)
    if existing or plan.runbook is None:
        return existing
    assert incident.id is not None, "steps are stored for a stored incident"
    rows = [
        RunbookStep(token=secrets.token_urlsafe(16), incident_id=incident.id, runbook_id=plan.runbook.id,
                    step_index=prepared.index, step_id=prepared.step.id, action=prepared.action, kind=prepared.kind,
                    params=prepared.params.model_dump(mode="json") if prepared.params else {},
                    disabled_reason=prepared.error)
        for prepared in plan.steps
    ]
    session.add_all(rows)
    session.flush()
    return rows


def steps_for(session: Session, incident_id: int) -> list[RunbookStep]:
    """The steps of the incident's runbook (a command's steps are not among them)."""
    query = (select(RunbookStep).where(col(RunbookStep.incident_id) == incident_id,
                                       col(RunbookStep.runbook_id).not_like(f"{_COMMAND}%"))
             .order_by(col(RunbookStep.step_index)))
    return list(session.scalars(query))


def find_step(session: Session, token: str) -> RunbookStep | None:
    """The runbook step a button's token names (a command's step has no button)."""
    if not token or len(token) > 32:
        return None
    return session.scalars(select(RunbookStep).where(col(RunbookStep.token) == token,
                                                     col(RunbookStep.runbook_id).not_like(f"{_COMMAND}%"))).first()


def request_run(session: Session, step: RunbookStep, user: str, now: datetime, *, locale: str | None) -> None:
    """A diagnostic was clicked: the outbox runs it (outside any incident's lane, so a queued
    card update never delays the answer)."""
    enqueue(session, JOB_STEP_RUN, step.incident_id, now=now,
            payload={"step": step.id, "user": user, "clicked_at": now.isoformat(), "locale": locale})


def record_run(session: Session, step: RunbookStep, incident: Incident, user: str, now: datetime,
               outcome: str, ok: bool) -> None:
    step.runs += 1
    step.last_run_by, step.last_run_at = user, now
    step.last_ok, step.last_outcome = ok, outcome[:1000]  # the runbook message shows a failure as failed
    add_timeline(session, incident, user, "diagnostic",
                 f"ran {step.action} ({step.step_id}): {outcome}"[:1000], at=now,
                 data={"step": step.step_id, "action": step.action, "params": step.params, "ok": ok})
    enqueue(session, JOB_RUNBOOK_REFRESH, incident.id, now=now, coalesce=True)
    audit.record(session, event="diagnostic_run", actor=user, at=now, incident_id=incident.id, action=step.action,
                 params=step.params, data={"ok": ok, "outcome": outcome[:500], "step": step.step_id})
