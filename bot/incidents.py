"""Incidents: alert groups become incidents, and every change is a timeline entry.

`ingest()` is the whole intake transaction: group row locked, incident created or
updated, alerts tracked by fingerprint, Slack work queued in the same transaction.
Either all of it is written or none of it is. `receive()` answers an exact repeat
(Alertmanager re-sends every group at repeat_interval) from a read instead, or from memory
(`Repeats`).

A group that would open an incident while groups arrive faster than the storm rate joins the
storm incident instead (bot.storm: the rules; `_join_storm` and `_ingest_member` here).
"""

from __future__ import annotations

import hashlib
import json
import uuid
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bot import escalation, metrics, storm
from bot.config import SEVERITIES, OncallConfig
from bot.db import Database
from bot.jobs import JOB_CARD, JOB_NOTIFY, JOB_OPEN, JOB_RUNBOOK_POST, enqueue
from bot.lifecycle import add_timeline, transition
from bot.models import STORM, Alert, AlertGroup, Incident, IncidentStatus, StormMember
from integrations.alertmanager import WebhookAlert, WebhookMessage, storable_key

__all__ = ["ALERTMANAGER", "IngestResult", "Repeats", "applied_digest", "ingest", "lock_group", "next_episode",
           "open_incident", "receive"]

ALERTMANAGER = "alertmanager"

S = IncidentStatus


# joined_storm: the group joined the storm incident instead of opening its own (bot.storm)
Outcome = Literal["created", "joined_storm", "reopened", "resolved", "updated", "unchanged", "ignored"]


@dataclass(frozen=True)
class IngestResult:
    incident_id: int | None
    outcome: Outcome
    repeat: bool = False  # answered from a read: nothing was written, nothing queued


def receive(db: Database, config: OncallConfig, message: WebhookMessage, *, now: datetime,
            repeats: Repeats | None = None) -> IngestResult:
    """Apply one Alertmanager notification: a repeat of the one last applied is answered from a
    read (no lock, no write; from `repeats`' memory when it has the group), anything else takes
    ingest()'s transaction."""
    repeat = (repeats or Repeats(db)).answer(config, message)
    if repeat is not None:
        return repeat
    with db.session() as session:
        return ingest(session, config, message, now=now)


class Repeats:
    """Answers exact repeats (Alertmanager re-sends every group at repeat_interval, an HA pair
    twice over): each group's row as last read (its applied digest and its incident's fields)
    is kept while Database.changes() says no row changed since, so that a repeat of a kept group
    reads nothing at all; else one read.

    Why a digest equal to the group's means nothing to do: ingest() is a function of the
    notification, the configuration, the clock and the rows it reads (the group's current
    incident; its status, resolved_at/by, severity, title, annotations, truncated_alerts; its
    alerts' status, labels, annotations), and applying one notification twice in a row changes
    nothing the second time. applied_digest() is written in the transaction that applied the
    notification and covers all of that but the alert rows and the clock:
    - the alert rows: only ingest() writes them, and it writes a new digest with them;
    - the clock: ingest() reads it only to decide whether a resolved incident may still be
      reopened (reopen_window_minutes), so only an open incident is answered here. (An alert's
      endsAt is never compared with the clock: its status says whether it fired.)
    Anything that changed the incident since (resolved, reopened or re-rated by a person,
    escalated by a timer, resolved from PagerDuty) changes the digest computed from the live
    row: the notification takes the full path, and behaves as it did before there was one.
    The group and its incident are read in one statement, one snapshot: should a transaction
    commit meanwhile, this answer is the one the notification had just before it, a valid order
    for two concurrent deliveries.
    A storm's group (its current incident is the storm incident) is answered the same way; its
    digest covers only the storm's fields that _ingest_member reads (_READ_BY_MEMBER), so that
    other groups joining (the title counts them) leave its repeats answered from a read.

    What is kept is the row such a read returns, and only under the changes() value read before
    the read: any transaction of this process, or on SQLite of any process, moves it before the
    next repeat is answered, so a kept row is the live one. Another replica's commit on
    PostgreSQL moves it when its notification arrives, a few ms later: a repeat answered in
    between is answered as just before that commit, the order of two concurrent deliveries
    again. Alertmanager sends a group's notifications one after another, group_interval apart
    (minutes), never within those ms; an HA pair's two are not ordered with each other at all."""

    MAX_KEPT = 65_536  # groups; over it, every row is read again once

    def __init__(self, db: Database) -> None:
        self.db = db
        self._kept: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}

    def known(self, config: OncallConfig, message: WebhookMessage) -> IngestResult | None:
        """The answer without touching the database: when the group is kept and no row changed since."""
        found = self._kept_row((message.receiver, message.group_key), self.db.changes())
        return None if found is _NOT_KEPT else _unchanged(config, message, found)

    def answer(self, config: OncallConfig, message: WebhookMessage) -> IngestResult | None:
        """ingest()'s answer when applying `message` would change nothing, else None: kept, or one read."""
        changes = self.db.changes()
        key = (message.receiver, message.group_key)
        found = self._kept_row(key, changes)
        if found is _NOT_KEPT:
            with self.db.statement() as connection:
                found = connection.execute(_REPEAT_QUERY, {"receiver": key[0], "group_key": key[1]}).first()
            if found is not None and changes is not None:
                if len(self._kept) >= self.MAX_KEPT:
                    self._kept.clear()
                self._kept[key] = (changes, found)
        return _unchanged(config, message, found)

    def _kept_row(self, key: tuple[str, str], changes: tuple[int, int] | None) -> Any:
        """The group's row kept under `changes`, else _NOT_KEPT."""
        kept = self._kept.get(key)
        return kept[1] if changes is not None and kept is not None and kept[0] == changes else _NOT_KEPT


_NOT_KEPT = object()


def _unchanged(config: OncallConfig, message: WebhookMessage, found: Any) -> IngestResult | None:
    """The repeat's answer from the group's row `found` (_REPEAT_QUERY's), or None: not a repeat."""
    if found is None or IncidentStatus(found.status) in (S.RESOLVED, S.POSTMORTEM):  # not Incident.is_open
        return None
    if found.applied_digest != applied_digest(config, message, found):
        return None
    return IngestResult(found.id, "unchanged", repeat=True)


# The incident's fields that ingest() reads, in applied_digest()'s order; of a storm incident,
# those that _ingest_member reads (its title and the rest are the storm's, not the group's).
_READ_BY_INGEST = ("id", "status", "severity", "title", "annotations", "truncated_alerts")
_READ_BY_MEMBER = ("id", "kind", "status", "severity")

# Built once: on the path that answers every repeat, building a statement costs as much as running it.
_incident_table, _group_table = Incident.__table__, AlertGroup.__table__  # type: ignore[attr-defined]
_REPEAT_QUERY = (
    select(_group_table.c.applied_digest, _incident_table.c.kind,
           *(_incident_table.c[name] for name in _READ_BY_INGEST))
    .join(_incident_table, _incident_table.c.id == _group_table.c.current_incident_id)
    .where(_group_table.c.receiver == bindparam("receiver"), _group_table.c.group_key == bindparam("group_key"))
)


def applied_digest(config: OncallConfig, message: WebhookMessage, incident: Any) -> str:
    """SHA-256 of what ingest() compares the notification with once the incident exists, of what
    the configuration decides about it, and of the incident's fields that ingest() reads.

    Not in it: what ingest() stores only when it creates a row, which a repeat never needs:
    externalURL (an HA pair's two Alertmanagers differ in it), an alert's startsAt and
    generatorURL, and its endsAt (otherwise rewritten only beside a change of status, labels or
    annotations); nor what it never reads: version, notificationReason, routeLabels.
    `incident`: an Incident, or a row of its _READ_BY_INGEST columns and its kind."""
    read = _READ_BY_MEMBER if getattr(incident, "kind", None) == STORM else _READ_BY_INGEST
    firing = [a for a in message.alerts if a.status == "firing"]
    decided = {
        "config": [_severity(config, firing) if firing else None, config.incidents.auto_resolve],
        "incident": [IncidentStatus(incident.status).value if name == "status" else getattr(incident, name)
                     for name in read],
    }
    return hashlib.sha256(f"{_said(message)}|{_json(decided)}".encode()).hexdigest()


def _said(message: WebhookMessage) -> str:
    """The notification's part of applied_digest(), kept with the message: the webhook endpoint
    answers a repeated body with the message it parsed before, and this is most of the digest.
    (Keyed by id, checked by a weak reference: a message is not hashable, and an id is reused.)"""
    kept = _SAID.get(id(message))
    if kept is not None and kept[0]() is message:
        return kept[1]
    said = _json({
        "group": [message.receiver, message.group_key, message.status, message.truncated_alerts],
        "common": [message.group_labels, message.common_labels, message.common_annotations],
        # In the message's order: the title names the first alert and counts them (_title).
        "alerts": [[a.fingerprint, a.status, a.labels, a.annotations] for a in message.alerts],
    })
    if len(_SAID) >= _SAID_KEPT:
        _SAID.clear()  # the endpoint keeps fewer messages than this: those come back soon enough
    _SAID[id(message)] = (weakref.ref(message), said)
    return said


_SAID: dict[int, tuple[weakref.ref[WebhookMessage], str]] = {}
_SAID_KEPT = 8192


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def ingest(db_session: Session, config: OncallConfig, message: WebhookMessage, *, now: datetime) -> IngestResult:
    """Apply one Alertmanager notification. Call inside a transaction (Database.session())."""
    group = lock_group(db_session, message.receiver, message.group_key, now)
    incident = _current_incident(db_session, group, config, now)
    if incident is not None and storm.is_storm(incident):
        return _ingest_member(db_session, config, group, incident, message, now)
    if incident is None:
        if not any(a.status == "firing" for a in message.alerts):
            return IngestResult(None, "ignored")  # resolved news of a group we never opened
        if storm.over_rate(db_session, config, now):
            return _join_storm(db_session, config, group, message, now)
        incident = _open_incident(db_session, group, config, message, now)
        outcome: Outcome = "created"
    else:
        outcome = "unchanged"
    changed = _apply_alerts(db_session, incident, message, now, group)
    changed |= _refresh_summary(db_session, config, incident, message, now)
    outcome = _follow_group_status(db_session, config, incident, message, now, outcome, changed)
    if outcome in ("updated", "reopened", "resolved"):
        enqueue(db_session, JOB_CARD, incident.id, now=now, coalesce=True)
    group.applied_digest = applied_digest(config, message, incident)  # with what it stands for (Repeats)
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
    first = next(a for a in message.alerts if a.status == "firing")
    labels = message.common_labels or first.labels
    incident = Incident(
        group_id=group.id,
        episode=next_episode(session, group),
        title=_title(message),
        alertname=storable_key(labels.get("alertname", first.alertname), _MAX_INDEXED_BYTES),
        severity=_severity(config, [a for a in message.alerts if a.status == "firing"]),
        service=_indexed(_first_label(labels, "service", "app", "job")),
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


def next_episode(session: Session, group: AlertGroup) -> int:
    """The group's next episode number: its current incident may be a storm's (not its own)."""
    if group.current_incident_id is None:
        return 1
    last = session.scalar(select(func.max(col(Incident.episode))).where(col(Incident.group_id) == group.id))
    return (last or 0) + 1


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


def _apply_alerts(session: Session, incident: Incident, message: WebhookMessage, now: datetime,
                  group: AlertGroup, *, timeline: bool = True) -> bool:
    """The group's alerts, by fingerprint. `timeline`: one entry per alert's change (a storm's
    groups say one line each instead: hundreds of alerts would bury its timeline)."""
    query = select(Alert).where(col(Alert.incident_id) == incident.id)
    if storm.is_storm(incident):  # many groups' alerts: this group's only
        query = query.where(col(Alert.group_id) == group.id)
    known = {a.fingerprint: a for a in session.scalars(query)}
    changed = False
    for alert in message.alerts:
        row = known.get(alert.fingerprint)
        if row is None:
            session.add(_new_alert(incident, group, alert))
            if alert.status == "firing" and timeline:
                add_timeline(session, incident, ALERTMANAGER, "alert", f"{alert.alertname} firing", at=now,
                             data={"fingerprint": alert.fingerprint})
            changed = True
        elif row.status != alert.status or row.annotations != alert.annotations or row.labels != alert.labels:
            if row.status != alert.status and timeline:
                verb = "resolved" if alert.status == "resolved" else "firing again"
                add_timeline(session, incident, ALERTMANAGER, "alert", f"{alert.alertname} {verb}", at=now,
                             data={"fingerprint": alert.fingerprint})
            row.status, row.labels, row.annotations = alert.status, alert.labels, alert.annotations
            row.ends_at = alert.ended_at
            changed = True
    return changed


def _new_alert(incident: Incident, group: AlertGroup, alert: WebhookAlert) -> Alert:
    assert incident.id is not None
    return Alert(
        incident_id=incident.id, group_id=group.id, fingerprint=alert.fingerprint, alertname=alert.alertname,
        status=alert.status,
        labels=alert.labels, annotations=alert.annotations, generator_url=alert.generator_url,
        starts_at=alert.starts_at, ends_at=alert.ended_at,
    )


def _refresh_summary(
    session: Session, config: OncallConfig, incident: Incident, message: WebhookMessage, now: datetime
) -> bool:
    firing = [a for a in message.alerts if a.status == "firing"]
    changed = False
    if firing:
        changed |= _raise_severity(session, config, incident, _severity(config, firing), now)
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


def _raise_severity(session: Session, config: OncallConfig, incident: Incident, severity: str,
                    now: datetime) -> bool:
    if SEVERITIES.index(severity) >= SEVERITIES.index(incident.severity):  # only ever raised
        return False
    add_timeline(session, incident, ALERTMANAGER, "severity", f"severity {incident.severity} → {severity}", at=now)
    incident.severity = severity
    enqueue(session, JOB_OPEN, incident.id, now=now)  # it may now get its own channel
    escalation.on_severity_raised(session, incident, config, now)
    return True


def _follow_group_status(
    session: Session, config: OncallConfig, incident: Incident, message: WebhookMessage,
    now: datetime, outcome: Outcome, changed: bool,
) -> Outcome:
    if outcome == "created":
        return outcome
    if message.status == "resolved" and incident.is_open and config.incidents.auto_resolve:
        return _resolve(session, incident, now, "all alerts resolved")
    if message.status == "firing" and incident.status == S.RESOLVED and _should_reopen(incident, changed):
        return _reopen(session, config, incident, now)
    return "updated" if changed else outcome


def _resolve(session: Session, incident: Incident, now: datetime, reason: str) -> Outcome:
    transition(session, incident, S.RESOLVED, actor=ALERTMANAGER, now=now, reason=reason)
    escalation.on_incident_resolved(session, incident, now, source=ALERTMANAGER)  # timers off, PagerDuty too
    enqueue(session, JOB_NOTIFY, incident.id, now=now, payload={"notice": "alerts_resolved"})
    metrics.INCIDENTS.labels(event="resolved").inc()
    return "resolved"


def _reopen(session: Session, config: OncallConfig, incident: Incident, now: datetime) -> Outcome:
    transition(session, incident, S.DETECTED, actor=ALERTMANAGER, now=now, reason="the group fired again")
    escalation.on_incident_reopened(session, incident, config, now)  # re-armed: a new owner is needed
    enqueue(session, JOB_NOTIFY, incident.id, now=now, payload={"notice": "reopened"})
    metrics.INCIDENTS.labels(event="reopened").inc()
    return "reopened"


# -- storm mode (the rules: bot.storm) -----------------------------------------------------------

def _join_storm(session: Session, config: OncallConfig, group: AlertGroup, message: WebhookMessage,
                now: datetime) -> IngestResult:
    """The group joins the open storm incident (opened first if there is none): recorded,
    its alerts stored under the storm, a row in its table; the storm pages for it."""
    fields = _member_fields(config, message)
    incident = storm.open_storm(session) or _open_storm(session, config, message, fields.severity, now)
    member = storm.join(session, incident, group, fields, now)
    _apply_alerts(session, incident, message, now, group, timeline=False)
    storm.alert_counts(session, member)
    _raise_severity(session, config, incident, fields.severity, now)
    storm.retitle(session, incident, now)
    add_timeline(session, incident, ALERTMANAGER, "storm", f"{fields.title} joined the storm", at=now,
                 data={"group_id": group.id, "receiver": message.receiver, "group_key": message.group_key})
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)
    group.applied_digest = applied_digest(config, message, incident)
    metrics.INCIDENTS.labels(event="joined_storm").inc()
    return IngestResult(incident.id, "joined_storm")


def _open_storm(session: Session, config: OncallConfig, message: WebhookMessage, severity: str,
                now: datetime) -> Incident:
    # Its own synthetic group (as a declared incident has): one incident per group episode holds.
    group = lock_group(session, storm.STORM_RECEIVER, f"storm:{uuid.uuid4()}", now)
    first = next(a for a in message.alerts if a.status == "firing")
    incident = storm.storm_incident(group, dict(message.common_labels or first.labels), severity, now)
    policy = config.storm
    return open_incident(session, group, incident, config, now, actor=ALERTMANAGER,
                         text=f"opened an alert storm: more than {policy.max_new_incidents} incidents in "
                              f"{policy.per_minutes} min, so new groups join this one",
                         data={"max_new_incidents": policy.max_new_incidents, "per_minutes": policy.per_minutes},
                         job_payload={"webhook_at": now.isoformat()})


def _ingest_member(session: Session, config: OncallConfig, group: AlertGroup, incident: Incident,
                   message: WebhookMessage, now: datetime) -> IngestResult:
    """A later notification of a group in a storm: its alerts and its row follow it; the storm
    resolves when none of its groups fires any more, and reopens as an incident would."""
    member = storm.member_of(session, incident.id or 0, group.id or 0)
    if member is None:  # not in its table (cannot happen through ingest): put it there
        return _join_storm(session, config, group, message, now)
    fields = _member_fields(config, message) if any(a.status == "firing" for a in message.alerts) else None
    changed = _apply_alerts(session, incident, message, now, group, timeline=False)
    changed |= storm.alert_counts(session, member)
    if fields is not None:
        changed |= storm.refresh(member, fields, now)
        changed |= _raise_severity(session, config, incident, member.severity, now)
    outcome = _follow_member_status(session, config, incident, member, message, now, changed)
    if outcome in ("updated", "reopened", "resolved"):
        enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)
    group.applied_digest = applied_digest(config, message, incident)
    return IngestResult(incident.id, outcome)


def _follow_member_status(session: Session, config: OncallConfig, incident: Incident, member: StormMember,
                          message: WebhookMessage, now: datetime, changed: bool) -> Outcome:
    moved = storm.set_member_status(member, storm.RESOLVED if message.status == "resolved" else storm.FIRING, now)
    if moved:
        verb = "resolved" if member.status == storm.RESOLVED else "firing again"
        add_timeline(session, incident, ALERTMANAGER, "storm", f"{member.title} {verb}", at=now,
                     data={"group_id": member.group_id})
        changed = True
    if member.status == storm.RESOLVED and incident.is_open and config.incidents.auto_resolve \
            and storm.all_settled(session, incident.id or 0):
        return _resolve(session, incident, now, "all its groups resolved")
    if member.status == storm.FIRING and incident.status == S.RESOLVED and _should_reopen(incident, changed):
        return _reopen(session, config, incident, now)
    return "updated" if changed else "unchanged"


def _member_fields(config: OncallConfig, message: WebhookMessage) -> storm.MemberFields:
    firing = [a for a in message.alerts if a.status == "firing"]
    first = firing[0]
    labels = message.common_labels or first.labels
    return storm.MemberFields(
        title=_title(message), alertname=storable_key(labels.get("alertname", first.alertname), _MAX_INDEXED_BYTES),
        severity=_severity(config, firing), service=_indexed(_first_label(labels, "service", "app", "job")),
        namespace=labels.get("namespace"), labels=dict(labels),
        annotations=dict(message.common_annotations or first.annotations), external_url=message.external_url,
        truncated_alerts=message.truncated_alerts)


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


# alertname and service are the card's past-incidents index (ix_incident_memory): PostgreSQL
# refuses an index row over 2,704 bytes, which two long labels make (a 503 on every retry).
_MAX_INDEXED_BYTES = 1_024


def _indexed(text: str | None) -> str | None:
    return None if text is None else storable_key(text, _MAX_INDEXED_BYTES)


def _first_label(labels: dict[str, str], *names: str) -> str | None:
    return next((labels[n] for n in names if labels.get(n)), None)
