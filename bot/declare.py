"""Incidents declared by a person (Slack's `/incident new` and the Declare incident shortcut).

A declaration opens an incident exactly as an Alertmanager group does (bot.incidents.
open_incident: the channel, responders, card and announcement jobs, the runbook, the escalation
timers), from an alert group of its own: receiver `declared`, group key `manual:<uuid>`, the
uuid derived from what makes the declaration itself (the modal's view id). So a declaration
made twice (a retried or replayed submission) lands on its group's row, locked, and finds the
incident it opened; and the group logic (one incident per episode, reopening) holds unchanged.
The declarer is its commander and the first actor on its timeline.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from bot.config import SEVERITIES, OncallConfig, Severity
from bot.incidents import IngestResult, lock_group, open_incident
from bot.models import Incident

__all__ = ["DECLARED", "DESCRIPTION_LIMIT", "SERVICE_LIMIT", "SLACK", "TITLE_LIMIT", "Declaration", "declare",
           "declared_labels", "group_key"]

DECLARED = "declared"  # the receiver of declared incidents' groups (Alertmanager's are its config's names)
SLACK = "slack"  # Incident.source of an incident a person declared in Slack
TITLE_LIMIT = 150  # characters of a declared title (Slack's header block shows 150)
SERVICE_LIMIT = 100
DESCRIPTION_LIMIT = 3000  # Slack's plain_text_input holds at most 3,000 characters
_NAMESPACE = uuid.UUID("5d1c1f9e-8f0a-4f7e-9d2b-6c1e0a4b7d31")  # the declarations' uuid5 namespace


@dataclass(frozen=True)
class Declaration:
    """What a person declared; `key` is what makes it this declaration (e.g. `T0001:V0123`)."""

    key: str
    declared_by: str  # a Slack user id: the commander
    title: str
    severity: Severity
    service: str | None = None
    description: str | None = None
    private: bool = False
    message_url: str | None = None  # the message it was declared from (the shortcut), if any
    via: str = "command"  # command | shortcut: how it was declared (the timeline's data)


def group_key(key: str) -> str:
    """The synthetic Alertmanager-like group key of a declaration: unique to it, stable across retries."""
    return f"manual:{uuid.uuid5(_NAMESPACE, key)}"


def declare(session: Session, config: OncallConfig, declaration: Declaration, *, now: datetime) -> IngestResult:
    """Open the declared incident (`created`), or find the one this declaration already opened
    (`unchanged`). Call inside a transaction (Database.session()). ValueError: not a valid one."""
    _check(declaration)
    group = lock_group(session, DECLARED, group_key(declaration.key), now)
    if group.current_incident_id is not None:
        return IngestResult(group.current_incident_id, "unchanged")
    labels = declared_labels(config, declaration)
    annotations = {"summary": declaration.title}
    if declaration.description:
        annotations["description"] = declaration.description
    incident = Incident(
        group_id=group.id, episode=1, title=declaration.title, alertname=config.incidents.declared_alertname,
        severity=declaration.severity, service=declaration.service, labels=labels, annotations=annotations,
        source=SLACK, private=declaration.private, commander=declaration.declared_by,
        created_at=now, updated_at=now,
    )
    data = {"source": SLACK, "via": declaration.via, "receiver": DECLARED, "group_key": group.group_key,
            **({"message_url": declaration.message_url} if declaration.message_url else {})}
    open_incident(session, group, incident, config, now, actor=declaration.declared_by,
                  text="declared the incident" + (" from a message" if declaration.via == "shortcut" else ""),
                  data=data)
    return IngestResult(incident.id, "created")


def declared_labels(config: OncallConfig, declaration: Declaration) -> dict[str, str]:
    """The labels a declared incident is matched by (responders, routes, runbooks, `private_when`),
    as an alert's would be: the configured alertname, its severity as the severity label's value
    that maps to it (`critical` for P1 by default: rules written for alerts match it too), and
    the service."""
    policy = config.severity
    value = next((name for name, severity in policy.map.items() if severity == declaration.severity),
                 declaration.severity)
    labels = {"alertname": config.incidents.declared_alertname, policy.label: value}
    if declaration.service:
        labels["service"] = declaration.service
    return labels


def _check(declaration: Declaration) -> None:
    if not declaration.title.strip() or len(declaration.title) > TITLE_LIMIT:
        raise ValueError(f"a declared incident's title is 1 to {TITLE_LIMIT} characters")
    if declaration.severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
    if declaration.service is not None and len(declaration.service) > SERVICE_LIMIT:
        raise ValueError(f"a service name is at most {SERVICE_LIMIT} characters")
    if declaration.description is not None and len(declaration.description) > DESCRIPTION_LIMIT:
        raise ValueError(f"a description is at most {DESCRIPTION_LIMIT} characters")
