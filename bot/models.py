"""The tables. Schema changes go through a migration in bot/migrations/versions/."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, String, Text, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

__all__ = [
    "Alert", "AlertGroup", "ApprovalRequest", "ApprovalStatus", "Incident", "IncidentStatus", "Job", "JobStatus",
    "MaintenanceWindow", "Postmortem", "Silence",
    "PagerDutyWebhookEvent", "Paging", "RunbookStep", "SlackDelivery", "TimelineEntry", "Timer", "TimerStatus",
    "AuditEntry", "UTCDateTime", "new_token", "utcnow",
    "CapturedMessage", "Heartbeat", "INCIDENT", "STORM", "StormMember",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_token() -> str:
    """An opaque, unguessable id for something a Slack button points at."""
    return secrets.token_urlsafe(16)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which drops the offset) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use bot.models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class IncidentStatus(str, Enum):
    # The seeds' incident state machine (operations-plan-ja.md 4.2).
    DETECTED = "detected"
    TRIAGED = "triaged"
    INVESTIGATING = "investigating"
    ESCALATED = "escalated"
    IDENTIFIED = "identified"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"
    POSTMORTEM = "postmortem"


INCIDENT, STORM = "incident", "storm"  # Incident.kind: one group's (or a person's), or an alert storm's


class AlertGroup(SQLModel, table=True):
    """One Alertmanager alert group. The unique key makes HA duplicates and concurrent
    deliveries serialise on one row instead of racing to create two incidents."""

    __tablename__ = "alert_group"
    __table_args__ = (UniqueConstraint("receiver", "group_key", name="uq_alert_group_key"),)

    id: int | None = Field(default=None, primary_key=True)
    receiver: str = Field(sa_type=Text)  # alert-derived values: text, never a VARCHAR that refuses one
    group_key: str = Field(sa_type=Text)
    current_incident_id: int | None = Field(default=None)
    created_at: datetime = _ts(default_factory=utcnow)
    # SHA-256 of the last notification applied and of the incident as that left it
    # (bot.incidents.applied_digest): a repeat is answered from a read of this row.
    applied_digest: str | None = Field(default=None, max_length=64)


class Incident(SQLModel, table=True):
    __table_args__ = (
        # One incident per episode of a group, enforced by the database.
        UniqueConstraint("group_id", "episode", name="uq_incident_group_episode"),
        # The card's "past incidents" read (bot.card_memory), on every card redraw.
        Index("ix_incident_memory", "alertname", "service", "resolved_at"),
        # The storm rule's rate: incidents opened in the last `storm.per_minutes` (bot.storm).
        Index("ix_incident_created_at", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    group_id: int | None = Field(default=None, foreign_key="alert_group.id", index=True)
    episode: int = 1
    title: str = Field(sa_type=Text)
    alertname: str = Field(sa_type=Text)
    severity: str = Field(max_length=2)
    # plain text: new states need no enum migration
    status: IncidentStatus = Field(default=IncidentStatus.DETECTED, sa_type=String(16))
    service: str | None = Field(default=None, sa_type=Text)
    namespace: str | None = Field(default=None, sa_type=Text)
    labels: dict[str, str] = _json(dict)
    annotations: dict[str, str] = _json(dict)
    external_url: str = Field(default="", sa_type=Text)
    truncated_alerts: int = 0
    commander: str | None = Field(default=None, max_length=64)
    # The other two roles `/incident assign` gives (commands.roles), beside the commander: columns
    # like it rather than a JSON map, so the three are read, shown and authorised alike (bot.policy)
    # and the set of roles is fixed by the schema, not by whatever a map happens to hold.
    scribe: str | None = Field(default=None, max_length=64)
    comms: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
    resolved_at: datetime | None = _ts(default=None)
    resolved_by: str | None = Field(default=None, max_length=128)
    acknowledged_at: datetime | None = _ts(default=None)
    acknowledged_by: str | None = Field(default=None, max_length=64)
    # Slack side, filled by the sync jobs; each step is recorded so a retry resumes.
    channel_id: str | None = Field(default=None, max_length=32)
    channel_name: str | None = Field(default=None, max_length=80)
    channel_ready: bool = False  # topic set and responders invited
    card_channel_id: str | None = Field(default=None, max_length=32)
    card_ts: str | None = Field(default=None, max_length=32)
    card_updated_at: datetime | None = _ts(default=None)
    announce_ts: str | None = Field(default=None, max_length=32)
    # What the card's buttons carry instead of the incident's id: unguessable, so a click can
    # only act on the incident whose card it was made for (commands.middleware checks both).
    card_token: str = Field(default_factory=new_token, max_length=32, unique=True)
    # Slack users called in without a channel to join (an incident in the card's thread): the
    # configured responders and whoever PagerDuty had on call. They may act on it (bot.policy).
    responders: list[str] = _json(list)
    # Where it came from: "alertmanager", or "slack" (declared by a person: bot.declare). Private
    # (declared so, or by `channels.private_when`): a private channel, an announcement without details.
    source: str = Field(default="alertmanager", max_length=32)
    private: bool = False
    # INCIDENT, or STORM: the one incident that new groups join while they arrive faster than
    # `storm.max_new_incidents` per `storm.per_minutes` (bot.storm); its groups are StormMember rows.
    kind: str = Field(default=INCIDENT, max_length=16)

    @property
    def is_open(self) -> bool:
        return self.status not in (IncidentStatus.RESOLVED, IncidentStatus.POSTMORTEM)


class Alert(SQLModel, table=True):
    # Per group: a storm incident holds many groups' alerts, and two receivers' groups may carry
    # the same alert (same fingerprint).
    __table_args__ = (UniqueConstraint("incident_id", "group_id", "fingerprint", name="uq_alert_group_fingerprint"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    # The group that sent it: what a split moves out of a storm incident (bot.storm_split).
    group_id: int | None = Field(default=None, foreign_key="alert_group.id", index=True)
    fingerprint: str = Field(sa_type=Text)
    alertname: str = Field(sa_type=Text)
    status: str = Field(max_length=16)
    labels: dict[str, str] = _json(dict)
    annotations: dict[str, str] = _json(dict)
    generator_url: str = Field(default="", sa_type=Text)
    starts_at: datetime = _ts()
    ends_at: datetime | None = _ts(default=None)


class TimelineEntry(SQLModel, table=True):
    __tablename__ = "timeline_entry"

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    at: datetime = _ts(default_factory=utcnow)
    actor: str = Field(max_length=128)
    kind: str = Field(max_length=32)
    text: str = Field(sa_type=Text)
    data: dict[str, Any] = _json(dict)


class JobStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # a permanent error (never a transient one); kept for the operator


class Job(SQLModel, table=True):
    """The durable outbox: work for Slack (and later PagerDuty) written in the same
    transaction as the change that needs it, and run by the worker after the response."""

    __table_args__ = (Index("ix_job_due", "status", "run_at"), Index("ix_job_lane", "lane", "status"))

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=64)
    incident_id: int | None = Field(default=None, index=True)  # the incident it is about, if any
    # Jobs of one lane run one at a time, in order (bot.jobs names the lanes); None: no order.
    lane: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] = _json(dict)
    status: JobStatus = Field(default=JobStatus.PENDING, sa_type=String(16))
    attempts: int = 0
    run_at: datetime = _ts(default_factory=utcnow)
    lease_until: datetime | None = _ts(default=None)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _ts(default_factory=utcnow)
    finished_at: datetime | None = _ts(default=None)


class RunbookStep(SQLModel, table=True):
    """One runbook step posted in an incident. Its button carries only `token`; the
    action and its validated parameters stay here, out of the user's reach."""

    __tablename__ = "runbook_step"
    __table_args__ = (UniqueConstraint("token", name="uq_runbook_step_token"),)

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=32)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    runbook_id: str = Field(max_length=128)
    step_index: int
    step_id: str = Field(max_length=128)
    action: str | None = Field(default=None, max_length=64)
    kind: str = Field(default="info", max_length=16)  # diagnostic | remediation | info
    params: dict[str, Any] = _json(dict)
    disabled_reason: str | None = Field(default=None, sa_type=Text)
    message_channel: str | None = Field(default=None, max_length=32)
    message_ts: str | None = Field(default=None, max_length=32)
    runs: int = 0
    last_run_by: str | None = Field(default=None, max_length=64)
    last_run_at: datetime | None = _ts(default=None)
    last_ok: bool | None = Field(default=None)  # the last run's result; None until it first runs
    last_outcome: str | None = Field(default=None, sa_type=Text)  # its summary, or why it failed
    created_at: datetime = _ts(default_factory=utcnow)


class ApprovalStatus(str, Enum):
    PENDING = "pending"        # waiting for a second person
    APPROVED = "approved"      # (reserved: approval and execution are one step today)
    DENIED = "denied"
    EXPIRED = "expired"
    EXECUTING = "executing"    # won by one approver; its execution job runs it once
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class ApprovalRequest(SQLModel, table=True):
    """A remediation someone asked to run. Its buttons carry only `token`; the action and the
    parameters validated at request time stay here. Status moves by compare-and-set
    (bot.approvals), so two approvers never both win."""

    __tablename__ = "approval_request"
    __table_args__ = (UniqueConstraint("token", name="uq_approval_request_token"),
                      Index("ix_approval_request_requested_at", "requested_at"))

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=32)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    step_id: int = Field(foreign_key="runbook_step.id", index=True)
    action: str = Field(max_length=64)
    params: dict[str, Any] = _json(dict)
    risk: str = Field(max_length=16)  # low | medium | high
    requested_by: str = Field(max_length=64)
    requested_at: datetime = _ts()
    expires_at: datetime = _ts()
    status: ApprovalStatus = Field(default=ApprovalStatus.PENDING, sa_type=String(16))
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = _ts(default=None)
    reason: str | None = Field(default=None, sa_type=Text)
    dry_run_outcome: str | None = Field(default=None, sa_type=Text)
    result: str | None = Field(default=None, sa_type=Text)
    message_channel: str | None = Field(default=None, max_length=32)
    message_ts: str | None = Field(default=None, max_length=32)
    # Set in one transaction just before the real call: the started mark, and what the cluster
    # looked like then (bot.reconcile), so a retry after a crash compares instead of re-running.
    started_at: datetime | None = _ts(default=None)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # A rollout the remediation started (restart, undo, scale), followed like `kubectl rollout
    # status`: progressing → complete | failed | timed_out; `rollout_detail` its last progress line.
    rollout: str | None = Field(default=None, max_length=16)
    rollout_detail: str | None = Field(default=None, sa_type=Text)


# -- escalation: timers, the PagerDuty side, maintenance windows ----------------------------

class TimerStatus(str, Enum):
    PENDING = "pending"
    FIRED = "fired"          # its effect was applied
    SKIPPED = "skipped"      # due, but its condition no longer held
    CANCELLED = "cancelled"  # called off before it was due (ack, resolve)
    FAILED = "failed"        # its effect kept raising; kept for the operator


class Timer(SQLModel, table=True):
    __tablename__ = "timer"
    __table_args__ = (Index("ix_timer_due", "status", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    # None: a timer about no incident (the heartbeat's `heartbeat.missing`, bot.heartbeat)
    incident_id: int | None = Field(default=None, foreign_key="incident.id", index=True)
    kind: str = Field(max_length=32)
    due_at: datetime = _ts()
    payload: dict[str, Any] = _json(dict)
    status: TimerStatus = Field(default=TimerStatus.PENDING, sa_type=String(16))
    attempts: int = 0
    created_at: datetime = _ts(default_factory=utcnow)
    fired_at: datetime | None = _ts(default=None)
    lateness_seconds: float | None = None
    outcome: str | None = Field(default=None, sa_type=Text)


class Paging(SQLModel, table=True):
    """The PagerDuty side of one incident: its dedup key, how far it was paged, delivery."""

    __tablename__ = "paging"

    incident_id: int = Field(primary_key=True, foreign_key="incident.id", sa_column_kwargs={"autoincrement": False})
    dedup_key: str = Field(max_length=255, unique=True)
    routing_key: str | None = Field(default=None, max_length=64)
    escalation_policy: str | None = Field(default=None, max_length=64)
    level: int = 0  # levels paged so far (0: nobody paged)
    paged_at: datetime | None = _ts(default=None)  # the timetable's anchor
    page_job_id: int | None = None  # the newest page/escalation job; the card shows its delivery
    delivery: str = Field(default="", max_length=16)  # pending | delivered | failed
    delivered_at: datetime | None = _ts(default=None)
    last_error: str | None = Field(default=None, sa_type=Text)
    pd_incident_id: str | None = Field(default=None, max_length=64)
    held: str | None = Field(default=None, sa_type=Text)  # why nobody was paged (mrkdwn we composed)
    acked_in_pagerduty_by: str | None = Field(default=None, max_length=128)
    assignees: list[str] = _json(list)
    updated_at: datetime = _ts(default_factory=utcnow)
    # When the current episode began (opened, or last reopened): PagerDuty events that occurred
    # before it belong to an earlier episode. None on rows from before 0004: incident.created_at.
    episode_started_at: datetime | None = _ts(default=None)
    last_event_at: datetime | None = _ts(default=None)  # newest applied webhook event


class PagerDutyWebhookEvent(SQLModel, table=True):
    """A webhook event PagerDuty sent about one of our incidents. PagerDuty redelivers (retries,
    replays), so an event id is looked at once; the row keeps what was made of it."""

    __tablename__ = "pagerduty_event"

    event_id: str = Field(primary_key=True, sa_type=Text)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    event_type: str = Field(sa_type=Text)
    occurred_at: datetime = _ts()
    received_at: datetime = _ts()
    outcome: str = Field(sa_type=Text)


class MaintenanceWindow(SQLModel, table=True):
    """A window declared by command (config windows live in escalation.maintenance)."""

    __tablename__ = "maintenance_window"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=128)
    match: dict[str, str] = _json(dict)
    starts_at: datetime = _ts()
    ends_at: datetime = _ts(index=True)
    created_by: str = Field(max_length=64)
    created_at: datetime = _ts(default_factory=utcnow)
    cancelled_at: datetime | None = _ts(default=None)


# -- Slack requests seen -----------------------------------------------------------------------

class SlackDelivery(SQLModel, table=True):
    """A Slack request (a click's trigger id, an event's id) that was acted on. Slack delivers
    again when it got no answer in 3 s (and a replayed signed request stays valid for 5 min), so
    each is acted on once; rows older than the replay window are pruned."""

    __tablename__ = "slack_delivery"

    key: str = Field(primary_key=True, max_length=255)
    received_at: datetime = _ts(index=True)


# -- the audit log -----------------------------------------------------------------------------

class AuditEntry(SQLModel, table=True):
    """One entry of the append-only audit log (bot.audit writes and verifies it): `hash` is the
    SHA-256 of every other column, `prev_hash` the previous entry's hash, so an edited, inserted
    or deleted row breaks the chain. The id is the order; bot.audit.record assigns it."""

    __tablename__ = "audit_entry"
    __table_args__ = (UniqueConstraint("hash", name="uq_audit_entry_hash"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    event: str = Field(max_length=32)  # diagnostic_run, requested, approved, denied, expired, executed, ...
    actor: str = Field(max_length=128)  # a Slack user id, "oncall-bot", "pagerduty:Name"
    incident_id: int | None = Field(default=None, index=True)  # no foreign key: the log outlives what it names
    action: str | None = Field(default=None, max_length=64)
    params: dict[str, Any] = _json(dict)
    data: dict[str, Any] = _json(dict)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


# -- silences ----------------------------------------------------------------------------------

class Silence(SQLModel, table=True):
    """An Alertmanager silence that an approved `alertmanager.silence` created (bot.silences),
    shown on the incident's card until it ends or is expired. One row per Alertmanager silence
    id, so a retried execution records it once; its Expire button carries only `token`."""

    __tablename__ = "silence"
    __table_args__ = (UniqueConstraint("silence_id", name="uq_silence_silence_id"),
                      UniqueConstraint("token", name="uq_silence_token"))

    id: int | None = Field(default=None, primary_key=True)
    token: str = Field(max_length=32)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    approval_id: int | None = Field(default=None, foreign_key="approval_request.id")
    silence_id: str = Field(max_length=64)  # Alertmanager's (a UUID)
    matchers: str = Field(sa_type=Text)  # as validated: 'alertname="X", instance="10.0.0.1"'
    comment: str = Field(sa_type=Text)  # as sent, naming the incident
    created_by: str = Field(max_length=128)  # Alertmanager's createdBy: the approver (Slack id)
    starts_at: datetime = _ts()
    ends_at: datetime = _ts()
    created_at: datetime = _ts()
    # The Expire click (one compare-and-set wins), then its outcome once Alertmanager has it.
    expire_requested_by: str | None = Field(default=None, max_length=64)
    expire_requested_at: datetime | None = _ts(default=None)
    expired_at: datetime | None = _ts(default=None)
    expired_by: str | None = Field(default=None, max_length=64)


# -- post-mortems ------------------------------------------------------------------------------

class Postmortem(SQLModel, table=True):
    """One generation of an incident's post-mortem (bot.postmortem_ops): `/incident postmortem`
    stores version 1, each later run the next version, never overwriting one. The post job
    uploads `markdown` to the incident's channel once (`posted_at`, Slack's `file_id`)."""

    __tablename__ = "postmortem"
    __table_args__ = (UniqueConstraint("incident_id", "version", name="uq_postmortem_version"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    version: int
    markdown: str = Field(sa_type=Text)
    language: str = Field(default="en", max_length=8)  # the asker's: en | ja
    generated_at: datetime = _ts()
    generated_by: str = Field(max_length=128)  # a Slack user id
    posted_at: datetime | None = _ts(default=None)
    file_id: str | None = Field(default=None, max_length=64)


# -- timeline capture --------------------------------------------------------------------------

class CapturedMessage(SQLModel, table=True):
    """A message of an incident's channel that someone marked for the timeline (a :pushpin:
    reaction or a pin: bot.timeline_capture). Unique on the message (channel, ts), so pinning and
    pushpinning it, or Slack redelivering either event, records it once; `entry_id` is the
    timeline entry once its text and permalink were fetched."""

    __tablename__ = "captured_message"
    __table_args__ = (UniqueConstraint("channel", "ts", name="uq_captured_message"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    channel: str = Field(max_length=32)
    ts: str = Field(max_length=32)
    thread_ts: str | None = Field(default=None, max_length=32)  # when the event said (a pin does)
    via: str = Field(max_length=16)  # pushpin | pin
    marked_by: str = Field(max_length=64)  # who reacted or pinned (a Slack user id)
    marked_at: datetime = _ts()
    entry_id: int | None = Field(default=None, foreign_key="timeline_entry.id")


# -- the Watchdog heartbeat --------------------------------------------------------------------

class Heartbeat(SQLModel, table=True):
    """Alertmanager's always-firing heartbeat alert, as the bot last saw it (bot.heartbeat): one
    row (id 1), locked by whoever changes it. `timer_id` is the pending `heartbeat.missing` timer;
    `lost_at` is set while the bot says alerts are not reaching it (paged with `routing_key`)."""

    __tablename__ = "heartbeat"

    id: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    last_seen_at: datetime | None = _ts(default=None)
    # `heartbeat.enabled: true`: since when one is expected, though none has ever arrived
    watching_since: datetime | None = _ts(default=None)
    lost_at: datetime | None = _ts(default=None)
    routing_key: str | None = Field(default=None, max_length=64)
    timer_id: int | None = None


# -- alert storms ------------------------------------------------------------------------------

class StormMember(SQLModel, table=True):
    """An alert group that joined a storm incident (bot.storm) instead of opening its own: what
    the storm card's table shows of it, and what its own incident is made of if it is split out.
    `status`: firing | resolved | split (then `split_incident_id` is the incident it became)."""

    __tablename__ = "storm_member"
    __table_args__ = (UniqueConstraint("storm_id", "group_id", name="uq_storm_member"),)

    id: int | None = Field(default=None, primary_key=True)
    storm_id: int = Field(foreign_key="incident.id", index=True)
    group_id: int = Field(foreign_key="alert_group.id", index=True)
    joined_at: datetime = _ts(index=True)  # the storm rule counts joins too (bot.storm.over_rate)
    status: str = Field(default="firing", max_length=16)
    severity: str = Field(max_length=2)
    title: str = Field(sa_type=Text)
    alertname: str = Field(sa_type=Text)
    service: str | None = Field(default=None, sa_type=Text)
    namespace: str | None = Field(default=None, sa_type=Text)
    labels: dict[str, str] = _json(dict)
    annotations: dict[str, str] = _json(dict)
    external_url: str = Field(default="", sa_type=Text)
    truncated_alerts: int = 0
    firing: int = 0  # its alerts firing, and all of them (the table's counts)
    alerts: int = 0
    updated_at: datetime = _ts()
    split_incident_id: int | None = Field(default=None, foreign_key="incident.id")
