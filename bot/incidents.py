"""Incidents: alert groups become incidents, and every change is a timeline entry.

`ingest()` is the whole intake transaction: group row locked, incident created or
updated, alerts tracked by fingerprint, Slack work queued in the same transaction.
Either all of it is written or none of it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bot import escalation, metrics
from bot.config import SEVERITIES, OncallConfig
from bot.jobs import JOB_CARD, JOB_NOTIFY, JOB_OPEN, JOB_RUNBOOK_POST, enqueue
from bot.lifecycle import add_timeline, transition
from bot.models import Alert, AlertGroup, Incident, IncidentStatus
from integrations.alertmanager import WebhookAlert, WebhookMessage

__all__ = ["ALERTMANAGER", "IngestResult", "ingest", "lock_group", "open_incident"]

ALERTMANAGER = "alertmanager"

S = IncidentStatus


Outcome = Literal["created", "reopened", "resolved", "updated", "unchanged", "ignored"]


@dataclass(frozen=True)
class IngestResult:
    incident_id: int | None
    outcome: Outcome


def ingest(db_session: Session, config: OncallConfig, message: WebhookMessage, *, now: datetime) -> IngestResult:
    """Apply one Alertmanager notification. Call inside a transaction (Database.session())."""
    group = lock_group(db_session, message.receiver, message.group_key, now)
    incident = _current_incident(db_session, group, config, now)
    if incident is None:
        if not any(a.status == "firing" for a in message.alerts):
            return IngestResult(None, "ignored")  # resolved news of a group we never opened
        incident = _open_incident(db_session, group, config, message, now)
        outcome: Outcome = "created"
    else:
        outcome = "unchanged"
    changed = _apply_alerts(db_session, incident, message, now)
    changed |= _refresh_summary(db_session, config, incident, message, now)
    outcome = _follow_group_status(db_session, config, incident, message, now, outcome, changed)
    if outcome in ("updated", "reopened", "resolved"):
        enqueue(db_session, JOB_CARD, incident.id, now=now, coalesce=True)
    return IngestResult(incident.id, outcome)


def lock_group(session: Session, receiver: str, group_key: str, now: datetime) -> AlertGroup:
    # Insert-if-absent then lock: concurrent and HA-duplicate deliveries of one group
    # all land on this single row (unique constraint) and take turns (row lock).
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(
        insert(AlertGroup)
        .values(receiver=receiver, group_key=group_key, created_at=now)
        .on_conflict_do_nothing(index_elements=["receiver", "group_key"])
    )
    query = select(AlertGroup).where(col(AlertGroup.receiver) == receiver, col(AlertGroup.group_key) == group_key)
    return session.scalars(query.with_for_update()).one()


def _current_incident(
    session: Session, group: AlertGroup, config: OncallConfig, now: datetime
) -> Incident | None:
    if group.current_incident_id is None:
        return None
    incident = session.get(Incident, group.current_incident_id, with_for_update=True)
    if incident is None or incident.is_open:
        return incident
    window = timedelta(minutes=config.incidents.reopen_window_minutes)
    if incident.status == S.RESOLVED and incident.resolved_at and now - incident.resolved_at <= window:
        return incident  # may be reopened
    return None  # closed for good: the next firing is a new episode


def _open_incident(
    session: Session, group: AlertGroup, config: OncallConfig, message: WebhookMessage, now: datetime
) -> Incident:
    episode = 1
    if group.current_incident_id is not None:
        previous = session.get(Incident, group.current_incident_id)
        episode = (previous.episode + 1) if previous else 1
    first = next(a for a in message.alerts if a.status == "firing")
    labels = message.common_labels or first.labels
    incident = Incident(
        group_id=group.id,
        episode=episode,
        title=_title(message),
        alertname=labels.get("alertname", first.alertname),
        severity=_severity(config, [a for a in message.alerts if a.status == "firing"]),
        service=_first_label(labels, "service", "app", "job"),
        namespace=labels.get("namespace"),
        labels=dict(labels),
        annotations=dict(message.common_annotations or first.annotations),
        external_url=message.external_url,
        truncated_alerts=message.truncated_alerts,
        created_at=now,
        updated_at=now,
    )
    return open_incident(session, group, incident, config, now, actor=ALERTMANAGER, text=_opened_text(message),
                         data={"receiver": message.receiver, "group_key": message.group_key},
                         job_payload={"webhook_at": now.isoformat()})


def open_incident(session: Session, group: AlertGroup, incident: Incident, config: OncallConfig, now: datetime, *,
                  actor: str, text: str, data: dict[str, Any], job_payload: dict[str, Any] | None = None) -> Incident:
    """What opening an incident is, however it came (an alert group, or a person: bot.declare):
    the row as the group's current episode, its first timeline entry, the Slack work (channel,
    responders, card, announcement, then the runbook) and the escalation timers."""
    incident.private = incident.private or config.channels.private_for(incident.labels)
    session.add(incident)
    session.flush()  # the unique (group, episode) constraint is checked here
    group.current_incident_id = incident.id
    add_timeline(session, incident, actor, "created", text, at=now, data=data)
    enqueue(session, JOB_OPEN, incident.id, now=now, payload=job_payload)
    enqueue(session, JOB_RUNBOOK_POST, incident.id, now=now)  # same lane: posted once the channel exists
    escalation.on_incident_opened(session, incident, config, now)  # ack deadline, page and reminder timers
    metrics.INCIDENTS.labels(event="created").inc()
    return incident


def _apply_alerts(session: Session, incident: Incident, message: WebhookMessage, now: datetime) -> bool:
    known = {a.fingerprint: a for a in session.scalars(select(Alert).where(col(Alert.incident_id) == incident.id))}
    changed = False
    for alert in message.alerts:
        row = known.get(alert.fingerprint)
        if row is None:
            session.add(_new_alert(incident, alert))
            if alert.status == "firing":
                add_timeline(session, incident, ALERTMANAGER, "alert", f"{alert.alertname} firing", at=now,
                             data={"fingerprint": alert.fingerprint})
            changed = True
        elif row.status != alert.status or row.annotations != alert.annotations or row.labels != alert.labels:
            if row.status != alert.status:
                verb = "resolved" if alert.status == "resolved" else "firing again"
                add_timeline(session, incident, ALERTMANAGER, "alert", f"{alert.alertname} {verb}", at=now,
                             data={"fingerprint": alert.fingerprint})
            row.status, row.labels, row.annotations = alert.status, alert.labels, alert.annotations
            row.ends_at = alert.ended_at
            changed = True
    return changed


def _new_alert(incident: Incident, alert: WebhookAlert) -> Alert:
    assert incident.id is not None
    return Alert(
        incident_id=incident.id, fingerprint=alert.fingerprint, alertname=alert.alertname, status=alert.status,
        labels=alert.labels, annotations=alert.annotations, generator_url=alert.generator_url,
        starts_at=alert.starts_at, ends_at=alert.ended_at,
    )


def _refresh_summary(
    session: Session, config: OncallConfig, incident: Incident, message: WebhookMessage, now: datetime
) -> bool:
    firing = [a for a in message.alerts if a.status == "firing"]
    changed = False
    if firing:
        severity = _severity(config, firing)
        if SEVERITIES.index(severity) < SEVERITIES.index(incident.severity):  # only ever raised
            add_timeline(session, incident, ALERTMANAGER, "severity", f"severity {incident.severity} → {severity}",
                         at=now)
            incident.severity = severity
            enqueue(session, JOB_OPEN, incident.id, now=now)  # it may now get its own channel
            escalation.on_severity_raised(session, incident, config, now)
            changed = True
    if message.common_annotations and message.common_annotations != incident.annotations:
        incident.annotations = dict(message.common_annotations)
        changed = True
    if firing and _title(message) != incident.title:  # alerts joined, or a common summary appeared
        incident.title = _title(message)
        changed = True
    if message.truncated_alerts != incident.truncated_alerts:
        incident.truncated_alerts = message.truncated_alerts
        changed = True
    if changed:
        incident.updated_at = now
    return changed


def _follow_group_status(
    session: Session, config: OncallConfig, incident: Incident, message: WebhookMessage,
    now: datetime, outcome: Outcome, changed: bool,
) -> Outcome:
    if outcome == "created":
        return outcome
    if message.status == "resolved" and incident.is_open and config.incidents.auto_resolve:
        transition(session, incident, S.RESOLVED, actor=ALERTMANAGER, now=now, reason="all alerts resolved")
        escalation.on_incident_resolved(session, incident, now, source=ALERTMANAGER)  # timers off, PagerDuty too
        enqueue(session, JOB_NOTIFY, incident.id, now=now, payload={"notice": "alerts_resolved"})
        metrics.INCIDENTS.labels(event="resolved").inc()
        return "resolved"
    if message.status == "firing" and incident.status == S.RESOLVED and _should_reopen(incident, changed):
        transition(session, incident, S.DETECTED, actor=ALERTMANAGER, now=now, reason="the group fired again")
        escalation.on_incident_reopened(session, incident, config, now)  # re-armed: a new owner is needed
        enqueue(session, JOB_NOTIFY, incident.id, now=now, payload={"notice": "reopened"})
        metrics.INCIDENTS.labels(event="reopened").inc()
        return "reopened"
    return "updated" if changed else outcome


def _should_reopen(incident: Incident, changed: bool) -> bool:
    # Resolved by a person while Alertmanager still fired: repeats of the same alerts
    # must not reopen it (and page again); only a change in the group does.
    return incident.resolved_by == ALERTMANAGER or changed


def _severity(config: OncallConfig, alerts: list[WebhookAlert]) -> str:
    return min((config.severity.severity_of(a.labels) for a in alerts), key=SEVERITIES.index)


def _title(message: WebhookMessage) -> str:
    """The group's common summary; else what the group is: `HighLatency on checkout (3 alerts)`."""
    if message.common_annotations.get("summary"):
        return message.common_annotations["summary"]
    labels = {**message.common_labels, **message.group_labels}
    name = labels.get("alertname") or message.alerts[0].alertname
    where = _first_label(labels, "service", "app", "job", "namespace", "instance", "pod", "cluster")
    count = len(message.alerts) + message.truncated_alerts
    return name + (f" on {where}" if where else "") + (f" ({_alerts(count)})" if count > 1 else "")


def _opened_text(message: WebhookMessage) -> str:
    # For people: the group key stays in the entry's data, not in what the card shows.
    firing = sum(a.status == "firing" for a in message.alerts)
    more = f", {message.truncated_alerts} more not sent" if message.truncated_alerts else ""
    return f"opened the incident with {_alerts(firing)} firing{more}"  # the card puts the actor first


def _alerts(n: int) -> str:
    return f"{n} alert" if n == 1 else f"{n} alerts"


def _first_label(labels: dict[str, str], *names: str) -> str | None:
    return next((labels[n] for n in names if labels.get(n)), None)
