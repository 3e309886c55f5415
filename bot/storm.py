"""Storm mode: the rules that keep an alert storm from opening hundreds of Slack channels.

Slack creates about 20 channels a minute and takes about one message a second per channel. So
while alert groups would open incidents faster than `storm.max_new_incidents` per
`storm.per_minutes`, a new group joins the one open storm incident instead of opening its own:
its alert_group row and alerts are stored as always (alerts tagged with their group), its line is a
StormMember row (the storm card's table), and the group's current incident IS the storm incident,
so its later notifications land there too (bot.incidents._ingest_member).

The rate counts what would have opened an incident: incidents opened by alert groups and groups
that joined a storm, in the last `per_minutes`. Counting the joins too is what keeps a storm a
storm while it lasts; had only incidents counted, every `per_minutes` of a long storm would open
`max_new_incidents` more channels. Once the rate falls, new groups open their own incidents
again; the storm incident stays until its groups are resolved (or split out: bot.storm_split).

Paging (decided here, done by bot.escalation as for any incident): the storm incident pages
once, at the highest severity of its groups (raised as groups join, like any incident's), with a
dedup key of its own and the route of its first group's labels; its groups do not page one by
one. A group split out of it becomes an ordinary incident that pages on its own.

Nothing here talks to Slack or PagerDuty, and nothing opens an incident: bot.incidents does.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlmodel import Session, col

from bot.config import SEVERITIES, OncallConfig
from bot.models import INCIDENT, STORM, Alert, AlertGroup, Incident, IncidentStatus, StormMember

__all__ = ["FIRING", "RESOLVED", "SPLIT", "STORM_ALERTNAME", "STORM_RECEIVER", "MemberFields", "Tally",
           "alert_counts", "all_settled", "is_storm", "join", "member_of", "members", "open_storm", "over_rate",
           "refresh", "retitle", "set_member_status", "storm_incident", "storm_title", "tally"]

STORM_RECEIVER = "storm"  # the receiver of a storm incident's own synthetic alert group
STORM_ALERTNAME = "AlertStorm"  # a storm incident's alertname (its past-incidents line, its channel name)
FIRING, RESOLVED, SPLIT = "firing", "resolved", "split"  # StormMember.status

# pg_advisory_xact_lock key: "storm" in ASCII. Two groups deciding at once on PostgreSQL take
# turns, so they never both open a storm (SQLite has one writer at a time already).
_DECISION_LOCK = 0x73746F726D


def is_storm(incident: Incident) -> bool:
    return incident.kind == STORM


def over_rate(session: Session, config: OncallConfig, now: datetime) -> bool:
    """Whether a group that would open an incident now joins the storm instead. Called only
    when a group would open one, inside its transaction (the decision is serialised)."""
    policy = config.storm
    if not policy.enabled:
        return False
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DECISION_LOCK})
    since = now - timedelta(minutes=policy.per_minutes)
    opened = session.scalar(select(func.count()).select_from(Incident).where(  # ix_incident_created_at
        col(Incident.created_at) > since, col(Incident.kind) == INCIDENT, col(Incident.source) == "alertmanager")) or 0
    if opened >= policy.max_new_incidents:
        return True
    joined = session.scalar(select(func.count()).select_from(StormMember).where(  # ix_storm_member_joined_at
        col(StormMember.joined_at) > since)) or 0
    return opened + joined >= policy.max_new_incidents


def open_storm(session: Session) -> Incident | None:
    """The open storm incident, locked; None when there is none (the caller opens one)."""
    closed = (IncidentStatus.RESOLVED, IncidentStatus.POSTMORTEM)
    query = (select(Incident).where(col(Incident.kind) == STORM, col(Incident.status).not_in(closed))
             .order_by(col(Incident.id).desc()).limit(1).with_for_update())
    return session.scalars(query).first()


def storm_incident(group: AlertGroup, labels: dict[str, str], severity: str, now: datetime) -> Incident:
    """A new storm incident's row (bot.incidents opens it): its first group's labels, so that
    routes, responders and `private_when` treat it as they would that group, but its alertname
    its own, so that runbooks match a storm, not whichever group came first."""
    return Incident(group_id=group.id, episode=1, title=storm_title(1), alertname=STORM_ALERTNAME,
                    severity=severity, labels={**labels, "alertname": STORM_ALERTNAME}, annotations={}, kind=STORM,
                    created_at=now, updated_at=now)


def storm_title(groups: int) -> str:
    """The stored title (PagerDuty's summary, the channel topic); the card words it per locale."""
    return f"Alert storm: {groups} group{'' if groups == 1 else 's'}"


def member_of(session: Session, storm_id: int, group_id: int) -> StormMember | None:
    return session.scalars(select(StormMember).where(col(StormMember.storm_id) == storm_id,
                                                     col(StormMember.group_id) == group_id)).first()


@dataclass(frozen=True)
class MemberFields:
    """What a group contributes to its table row, and its own incident if split out."""

    title: str
    alertname: str
    severity: str
    service: str | None
    namespace: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    external_url: str
    truncated_alerts: int


def join(session: Session, storm: Incident, group: AlertGroup, fields: MemberFields, now: datetime) -> StormMember:
    """The group's row in the storm's table (again, should it come back after a split)."""
    assert storm.id is not None and group.id is not None
    member = member_of(session, storm.id, group.id)
    if member is None:
        member = StormMember(storm_id=storm.id, group_id=group.id, joined_at=now, severity=fields.severity,
                             title=fields.title, alertname=fields.alertname, updated_at=now)
        session.add(member)
    member.status, member.split_incident_id = FIRING, None
    refresh(member, fields, now)
    group.current_incident_id = storm.id
    return member


def refresh(member: StormMember, fields: MemberFields, now: datetime) -> bool:
    """A later notification of the group: its row follows it (severity only ever raised)."""
    before = (member.title, member.severity, member.annotations, member.truncated_alerts)
    member.title, member.annotations = fields.title, fields.annotations
    member.truncated_alerts = fields.truncated_alerts
    if SEVERITIES.index(fields.severity) < SEVERITIES.index(member.severity):
        member.severity = fields.severity
    if member.alertname != fields.alertname or not member.labels:  # set once, as an incident's are
        member.alertname, member.labels = fields.alertname, fields.labels
        member.service, member.namespace, member.external_url = fields.service, fields.namespace, fields.external_url
    changed = before != (member.title, member.severity, member.annotations, member.truncated_alerts)
    if changed:
        member.updated_at = now
    return changed


def alert_counts(session: Session, member: StormMember) -> bool:
    """Recount the group's alerts (firing, all) after they were applied; True if they changed."""
    session.flush()
    rows = session.execute(select(col(Alert.status), func.count()).where(
        col(Alert.incident_id) == member.storm_id, col(Alert.group_id) == member.group_id)
        .group_by(col(Alert.status))).all()
    by_status = {status: count for status, count in rows}
    counts = (by_status.get("firing", 0), sum(by_status.values()))
    changed = counts != (member.firing, member.alerts)
    member.firing, member.alerts = counts
    return changed


def set_member_status(member: StormMember, status: str, now: datetime) -> bool:
    """firing ↔ resolved, as the group's own status says; False if it already was."""
    if member.status == status:
        return False
    member.status, member.updated_at = status, now
    return True


def all_settled(session: Session, storm_id: int) -> bool:
    """No group of the storm is firing any more (each resolved or split out): it may resolve."""
    return session.scalar(select(StormMember.id).where(  # type: ignore[call-overload]
        col(StormMember.storm_id) == storm_id, col(StormMember.status) == FIRING).limit(1)) is None


def retitle(session: Session, storm: Incident, now: datetime) -> bool:
    """"Alert storm: N groups", N the groups still in it (split ones left)."""
    session.flush()
    count = session.scalar(select(func.count()).select_from(StormMember).where(
        col(StormMember.storm_id) == storm.id, col(StormMember.status) != SPLIT)) or 0
    title = storm_title(count)
    if title == storm.title:
        return False
    storm.title, storm.updated_at = title, now
    return True


def members(session: Session, storm_id: int) -> list[StormMember]:
    """The table: the groups still in the storm, firing first, then by severity, then oldest."""
    rows = session.scalars(select(StormMember).where(col(StormMember.storm_id) == storm_id,
                                                     col(StormMember.status) != SPLIT))
    return sorted(rows, key=lambda m: (m.status != FIRING, SEVERITIES.index(m.severity), m.joined_at, m.id or 0))


@dataclass
class Tally:
    """The storm card's counts: groups by status, by alertname and by severity (most first)."""

    firing: int = 0
    resolved: int = 0
    by_alertname: list[tuple[str, int]] = field(default_factory=list)
    by_severity: list[tuple[str, int]] = field(default_factory=list)


def tally(rows: list[StormMember]) -> Tally:
    names = Counter(m.alertname for m in rows)
    severities = Counter(m.severity for m in rows)
    firing = sum(1 for m in rows if m.status == FIRING)
    return Tally(firing=firing, resolved=len(rows) - firing,
                 by_alertname=sorted(names.items(), key=lambda item: (-item[1], item[0])),
                 by_severity=sorted(severities.items(), key=lambda item: SEVERITIES.index(item[0])))
