"""What an incident card shows, read in one go: the data every card builder renders.

The card is composed once: `load_card_view` reads the incident, its alerts, its recent
timeline, its paging state and its silences in one read transaction, and commands.cards turns
the result into Block Kit with no further I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from bot import roles, silences, storm
from bot.card_memory import PastIncident, past_incidents, recent_remediations
from bot.config import OncallConfig
from bot.escalation import PAGE, active_maintenance
from bot.models import (
    Alert,
    ApprovalRequest,
    Incident,
    Paging,
    Silence,
    StormMember,
    TimelineEntry,
    Timer,
    TimerStatus,
)

__all__ = ["TIMELINE_SHOWN", "CardView", "load_card_view"]

TIMELINE_SHOWN = 5  # the newest entries the card shows


@dataclass
class CardView:
    incident: Incident
    alerts: list[Alert]
    timeline: list[TimelineEntry] = field(default_factory=list)  # newest last
    now: datetime | None = None  # when the card is rendered: times of another day show their date
    paging: Paging | None = None  # None: no paging row (never armed)
    page_at: datetime | None = None  # when the pending page timer is due
    window: tuple[str, datetime] | None = None  # the maintenance window holding pages: (name, end)
    pagerduty_unconfigured: bool = False  # this severity pages, but no routing key matches
    # Silences approved for it that have neither ended (by `now`) nor been expired, soonest end first.
    silences: list[Silence] = field(default_factory=list)
    locale: str = "en"  # the card's language (runbooks.locale), for the lines of bot.card_memory
    past: list[PastIncident] = field(default_factory=list)  # the last resolved incidents like it
    remediations: list[ApprovalRequest] = field(default_factory=list)  # its newest requests, newest first
    last_update_at: datetime | None = None  # its newest status update (bot.roles); None: none yet
    # A storm incident's table (bot.storm.members: the groups still in it), and the rate that
    # started it (max_new_incidents, per_minutes); None for any other incident.
    storm: list[StormMember] | None = None
    storm_rate: tuple[int, int] = (0, 0)

    @property
    def started_at(self) -> datetime:
        """When the problem began: the earliest `startsAt` of its alerts (Go's zero time, year 1,
        means unset), else when the bot heard of it."""
        starts = [a.starts_at for a in self.alerts if a.starts_at.year > 1]
        return min(starts, default=self.incident.created_at)


def load_card_view(session: Session, incident: Incident, config: OncallConfig, now: datetime) -> CardView:
    alerts = list(session.scalars(select(Alert).where(col(Alert.incident_id) == incident.id)))
    timeline = list(session.scalars(
        select(TimelineEntry).where(col(TimelineEntry.incident_id) == incident.id)
        .order_by(col(TimelineEntry.at).desc(), col(TimelineEntry.id).desc()).limit(TIMELINE_SHOWN)
    ))
    page_at = session.scalar(select(col(Timer.due_at)).where(
        col(Timer.incident_id) == incident.id, col(Timer.kind) == PAGE,
        col(Timer.status) == TimerStatus.PENDING).order_by(col(Timer.due_at)))
    pages = config.escalation.for_severity(incident.severity).page_minutes is not None
    return CardView(
        incident=incident, alerts=alerts, timeline=timeline[::-1], now=now,
        paging=session.get(Paging, incident.id), page_at=page_at,
        window=active_maintenance(session, config, incident.labels, now),
        pagerduty_unconfigured=pages and config.pagerduty.route(incident.labels)[0] is None,
        silences=silences.shown(session, incident.id or 0, now),
        locale=config.runbooks.locale, past=past_incidents(session, incident),
        remediations=recent_remediations(session, incident.id or 0),
        last_update_at=roles.last_update_at(session, incident.id or 0),
        storm=storm.members(session, incident.id or 0) if storm.is_storm(incident) else None,
        storm_rate=(config.storm.max_new_incidents, config.storm.per_minutes),
    )
