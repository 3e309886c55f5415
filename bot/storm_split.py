"""Splitting a group out of a storm incident into an incident of its own (the storm card's
Split out button): the group and its alerts move to a new incident, opened as any incident is
(channel, responders, card, runbook, escalation timers: it pages on its own), and its row leaves
the storm's table. The storm resolves once none of its groups fires any more.

Lock order as in ingest (bot.incidents): the group's row, then the storm incident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col

from bot import escalation, metrics, storm
from bot.config import OncallConfig
from bot.incidents import next_episode, open_incident
from bot.jobs import JOB_CARD, enqueue
from bot.lifecycle import add_timeline
from bot.models import Alert, AlertGroup, Incident, StormMember

__all__ = ["Split", "split_out"]


@dataclass(frozen=True)
class Split:
    """What a split did: `incident_id` the new incident, else `refused` says why not."""

    incident_id: int | None = None
    refused: str | None = None  # gone | not_in_storm | not_firing


def split_out(session: Session, config: OncallConfig, storm_id: int, group_id: int, actor: str,
              now: datetime) -> Split:
    """Call inside a transaction. `actor`: the Slack user who asked (the new incident's first actor)."""
    group = session.get(AlertGroup, group_id, with_for_update=True)
    incident = session.get(Incident, storm_id, with_for_update=True)
    if group is None or incident is None or not storm.is_storm(incident):
        return Split(refused="gone")
    member = storm.member_of(session, storm_id, group_id)
    if member is None or member.status == storm.SPLIT or group.current_incident_id != storm_id:
        return Split(refused="not_in_storm")
    if member.status != storm.FIRING:
        return Split(refused="not_firing")  # nothing to respond to: it would open resolved news
    own = _open_own(session, config, group, incident, member, actor, now)
    session.execute(update(Alert).where(col(Alert.incident_id) == storm_id, col(Alert.group_id) == group_id)
                    .values(incident_id=own.id))
    member.status, member.split_incident_id, member.updated_at = storm.SPLIT, own.id, now
    group.applied_digest = None  # its next notification takes the full path, to its own incident
    add_timeline(session, incident, actor, "storm", f"{member.title} split out into incident #{own.id}", at=now,
                 data={"group_id": group_id, "incident_id": own.id})
    storm.retitle(session, incident, now)
    _settle(session, incident, actor, now)
    enqueue(session, JOB_CARD, incident.id, now=now, coalesce=True)
    metrics.INCIDENTS.labels(event="split").inc()
    return Split(incident_id=own.id)


def _open_own(session: Session, config: OncallConfig, group: AlertGroup, incident: Incident, member: StormMember,
              actor: str, now: datetime) -> Incident:
    own = Incident(
        group_id=group.id, episode=next_episode(session, group), title=member.title, alertname=member.alertname,
        severity=member.severity, service=member.service, namespace=member.namespace, labels=dict(member.labels),
        annotations=dict(member.annotations), external_url=member.external_url,
        truncated_alerts=member.truncated_alerts, private=incident.private, created_at=now, updated_at=now,
    )
    return open_incident(session, group, own, config, now, actor=actor,
                         text=f"split the group out of alert storm #{incident.id}",
                         data={"storm_id": incident.id, "receiver": group.receiver, "group_key": group.group_key})


def _settle(session: Session, incident: Incident, actor: str, now: datetime) -> None:
    # The last firing group left: nothing of the storm is left to respond to.
    if not incident.is_open or not storm.all_settled(session, incident.id or 0):
        return
    escalation.resolve(session, incident, actor, now, "slack", reason="its last firing group was split out")
