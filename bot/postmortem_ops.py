"""Post-mortems of incidents: each generation stored, the move to `postmortem`, the archive.

* `write` is `/incident postmortem`, in the caller's transaction with the incident's row locked:
  a resolved incident moves to `postmortem` (`enter`), then the document is rendered from what is
  stored (`load_facts`, by the caller's `Render`: commands.postmortem_doc) and kept as the next
  version, and its upload is queued
  (`postmortem.post`, in the incident's Slack lane). An incident already in `postmortem` gets
  a new version naming what changed; any other state gets nothing (None).
* `enter` is the move itself, from `/incident postmortem` or `/incident state postmortem`: the
  timeline entry (bot.lifecycle), and, with `postmortem.archive_after_days`, the channel's
  archive queued as a job due that many days later (in no lane: it would hold one up for days).
* `posted` and `archived` record what those jobs did, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session, col

from bot.config import OncallConfig
from bot.jobs import JOB_POSTMORTEM_ARCHIVE, JOB_POSTMORTEM_POST, enqueue
from bot.lifecycle import add_timeline, transition
from bot.models import (
    Alert,
    ApprovalRequest,
    Incident,
    IncidentStatus,
    Paging,
    Postmortem,
    RunbookStep,
    Silence,
    TimelineEntry,
)
from bot.postmortem import Facts, Previous, Render

__all__ = ["Written", "archive_due", "archived", "enter", "latest", "load_facts", "posted", "versions", "write"]

S = IncidentStatus


@dataclass(frozen=True)
class Written:
    row: Postmortem  # the version just stored
    changed: tuple[str, ...]  # sections changed since the previous version (commands.postmortem_doc.SECTIONS)
    previous: int | None  # the previous version's number
    moved: bool  # the incident moved resolved → postmortem just now
    archive_at: datetime | None  # when its channel is archived (None: never, or it has none)


def load_facts(session: Session, incident: Incident) -> Facts:
    """Everything the document shows, read in the caller's transaction."""
    of = incident.id
    return Facts(
        incident=incident,
        alerts=list(session.scalars(select(Alert).where(col(Alert.incident_id) == of)
                                    .order_by(col(Alert.starts_at), col(Alert.id)))),
        timeline=list(session.scalars(select(TimelineEntry).where(col(TimelineEntry.incident_id) == of)
                                      .order_by(col(TimelineEntry.at), col(TimelineEntry.id)))),
        steps=list(session.scalars(select(RunbookStep).where(col(RunbookStep.incident_id) == of)
                                   .order_by(col(RunbookStep.step_index), col(RunbookStep.id)))),
        approvals=list(session.scalars(select(ApprovalRequest).where(col(ApprovalRequest.incident_id) == of)
                                       .order_by(col(ApprovalRequest.requested_at), col(ApprovalRequest.id)))),
        paging=session.get(Paging, of),
        silences=list(session.scalars(select(Silence).where(col(Silence.incident_id) == of)
                                      .order_by(col(Silence.starts_at), col(Silence.id)))),
    )


def versions(session: Session, incident_id: int) -> list[Postmortem]:
    """Every stored version, the oldest first."""
    return list(session.scalars(select(Postmortem).where(col(Postmortem.incident_id) == incident_id)
                                .order_by(col(Postmortem.version))))


def latest(session: Session, incident_id: int) -> Postmortem | None:
    return session.scalars(select(Postmortem).where(col(Postmortem.incident_id) == incident_id)
                           .order_by(col(Postmortem.version).desc())).first()


def enter(session: Session, incident: Incident, actor: str, now: datetime, config: OncallConfig, *,
          reason: str = "") -> None:
    """resolved → postmortem (bot.lifecycle refuses any other state), and its channel's archive
    queued `postmortem.archive_after_days` from now (0: never)."""
    transition(session, incident, S.POSTMORTEM, actor=actor, now=now, reason=reason)
    days = config.postmortem.archive_after_days
    if days and incident.channel_id:
        enqueue(session, JOB_POSTMORTEM_ARCHIVE, incident.id, now=now, run_at=now + timedelta(days=days),
                payload={"channel": incident.channel_id, "since": now.isoformat()})


def archive_due(session: Session, incident: Incident, config: OncallConfig) -> datetime | None:
    """When the incident's channel is archived under today's configuration: the move to
    postmortem plus `archive_after_days`; None when it never is (0, or no channel)."""
    days = config.postmortem.archive_after_days
    if not days or not incident.channel_id:
        return None
    moved = session.scalars(select(TimelineEntry).where(
        col(TimelineEntry.incident_id) == incident.id, col(TimelineEntry.kind) == "status")
        .order_by(col(TimelineEntry.at).desc(), col(TimelineEntry.id).desc())).first()
    if moved is None or moved.data.get("to") != S.POSTMORTEM.value:
        return None
    return moved.at + timedelta(days=days)


def write(session: Session, incident: Incident, user: str, language: str, now: datetime,
          config: OncallConfig, render: Render) -> Written | None:
    """The next version of the incident's post-mortem, rendered by `render`, stored and queued for
    posting; None unless the incident is resolved or already in postmortem."""
    state = IncidentStatus(incident.status)
    if state not in (S.RESOLVED, S.POSTMORTEM):
        return None
    assert incident.id is not None
    moved = state == S.RESOLVED
    if moved:
        enter(session, incident, user, now, config, reason="post-mortem written")
        session.flush()  # the move is on the timeline the document shows
    before = latest(session, incident.id)
    previous = Previous(before.version, before.generated_at, before.markdown) if before is not None else None
    version = before.version + 1 if before is not None else 1
    document = render(load_facts(session, incident), version=version, generated_at=now, generated_by=user,
                      language=language, previous=previous)
    row = Postmortem(incident_id=incident.id, version=version, markdown=document.markdown, language=language,
                     generated_at=now, generated_by=user)
    session.add(row)
    session.flush()
    enqueue(session, JOB_POSTMORTEM_POST, incident.id, now=now,
            payload={"postmortem": row.id, "changed": list(document.changed),
                     "previous": before.version if before is not None else None})
    return Written(row=row, changed=document.changed, previous=before.version if before is not None else None,
                   moved=moved, archive_at=archive_due(session, incident, config))


def posted(session: Session, postmortem_id: int, file_id: str | None, now: datetime) -> None:
    row = session.get(Postmortem, postmortem_id, with_for_update=True)
    if row is not None and row.posted_at is None:
        row.posted_at, row.file_id = now, file_id


def archived(session: Session, incident: Incident, channel: str, now: datetime, *, days: int) -> None:
    """The bot archived the channel: on the timeline, once (a retried job finds its entry)."""
    recorded = session.scalars(select(col(TimelineEntry.id)).where(
        col(TimelineEntry.incident_id) == incident.id, col(TimelineEntry.kind) == "archived")).first()
    if recorded is not None:
        return
    add_timeline(session, incident, "oncall-bot", "archived",
                 f"channel archived, {days} day(s) after the post-mortem", at=now, data={"channel": channel})
