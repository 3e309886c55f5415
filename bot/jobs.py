"""Every kind of outbox job, and the lane each runs in.

A lane is the outbox's unit of order: jobs of one lane run one at a time, oldest first. An
incident's Slack work (channel, card, notices, runbook) shares one lane, so the card is
posted before a notice about it; its PagerDuty events have a lane of their own, so a Slack
outage never holds up a page while trigger → acknowledge → resolve still arrive in order.
Jobs that must wait on neither (the announcement, a clicked step) run in no lane.
`Job.incident_id` is always the incident the job is about.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlmodel import Session

from bot import outbox
from bot.models import Job

__all__ = [
    "JOB_ANNOUNCE", "JOB_APPROVAL_EXECUTE", "JOB_APPROVAL_EXPIRE", "JOB_APPROVAL_FOLLOW", "JOB_APPROVAL_POST",
    "JOB_APPROVAL_REDRAW",
    "JOB_CARD", "JOB_HEARTBEAT_PAGE", "JOB_HEARTBEAT_POST", "JOB_HOME", "JOB_NOTIFY",
    "JOB_OPEN",
    "JOB_PD_ESCALATE", "JOB_PD_EVENT", "JOB_PD_INVITE", "JOB_POSTMORTEM_ARCHIVE", "JOB_POSTMORTEM_POST",
    "JOB_RUNBOOK_POST", "JOB_RUNBOOK_REFRESH", "JOB_SILENCE_ENDED", "JOB_SILENCE_EXPIRE", "JOB_STEP_REPLY",
    "JOB_STEP_RUN", "enqueue", "lane_of",
    "JOB_ROLE_INVITE", "JOB_STATUS_UPDATE", "JOB_STATUS_UPDATE_ANNOUNCE", "JOB_TIMELINE_CAPTURE",
]

JOB_OPEN = "slack.open_incident"            # the incident's channel (if it gets one), responders, card
JOB_ANNOUNCE = "slack.announce"             # its line in the announce channel
JOB_CARD = "slack.update_card"              # refresh the card (coalesced)
JOB_NOTIFY = "slack.notify"                 # a notice in the incident's channel or card thread
JOB_RUNBOOK_POST = "runbook.post"           # the matching runbook's steps, after the card
JOB_RUNBOOK_REFRESH = "runbook.refresh"     # re-render the runbook messages ("ran by ...")
JOB_STEP_RUN = "runbook.run_step"           # run a clicked diagnostic, answer in its thread
JOB_STEP_REPLY = "runbook.reply"            # a line in a step's thread
JOB_PD_EVENT = "pagerduty.event"            # Events API v2: trigger, acknowledge, resolve
JOB_PD_ESCALATE = "pagerduty.escalate"      # REST: raise the PagerDuty incident's level
JOB_PD_INVITE = "pagerduty.invite_oncall"   # who is on call (PagerDuty) joins the channel (Slack)
JOB_APPROVAL_POST = "approval.post"         # dry-run a requested remediation, post its approval message
JOB_APPROVAL_EXECUTE = "approval.execute"   # run an approved remediation (once), report in its thread
JOB_APPROVAL_EXPIRE = "approval.expire"     # at a request's expiry: expire it if still pending, redraw
JOB_APPROVAL_FOLLOW = "approval.follow"     # follow an executed remediation's rollout to its end
JOB_APPROVAL_REDRAW = "approval.redraw"     # redraw an approval message after its request changed
JOB_SILENCE_EXPIRE = "silence.expire"       # the card's Expire click: end the silence in Alertmanager
JOB_SILENCE_ENDED = "silence.ended"         # at a silence's end: redraw the card without it
JOB_HOME = "slack.publish_home"             # a person opened the app's Home tab: publish it for them
JOB_POSTMORTEM_POST = "postmortem.post"     # upload one stored post-mortem version to the incident's channel
JOB_POSTMORTEM_ARCHIVE = "postmortem.archive"  # postmortem.archive_after_days later: archive the channel
JOB_ROLE_INVITE = "roles.invite"           # someone given a role (`/incident assign`) joins the channel
JOB_STATUS_UPDATE = "status_update.post"   # a status update in the incident's channel (or card thread)
JOB_STATUS_UPDATE_ANNOUNCE = "status_update.announce"  # the same in the announcement's thread
JOB_TIMELINE_CAPTURE = "timeline.capture"  # a pinned / :pushpin: message: its text and permalink on the timeline
JOB_HEARTBEAT_PAGE = "heartbeat.pagerduty"  # the heartbeat stopped / came back: trigger / resolve the bot's own page
JOB_HEARTBEAT_POST = "heartbeat.post"      # the same said in the announce channel

LaneName = Literal["slack", "pagerduty", "heartbeat.pagerduty", "heartbeat.slack"]
_LANES: dict[str, LaneName | None] = {
    JOB_OPEN: "slack", JOB_CARD: "slack", JOB_NOTIFY: "slack", JOB_RUNBOOK_POST: "slack",
    JOB_RUNBOOK_REFRESH: "slack", JOB_APPROVAL_POST: "slack", JOB_POSTMORTEM_POST: "slack",
    JOB_ROLE_INVITE: "slack", JOB_STATUS_UPDATE: "slack",
    JOB_PD_EVENT: "pagerduty", JOB_PD_ESCALATE: "pagerduty",
    # No lane: an unusable announce channel holds up nothing; a slow diagnostic holds up no
    # card; inviting the on-call needs both PagerDuty and Slack, so an outage of either
    # must hold up neither lane.
    JOB_ANNOUNCE: None, JOB_STEP_RUN: None, JOB_STEP_REPLY: None, JOB_PD_INVITE: None,
    # An approved remediation runs at once, behind no queued card update.
    JOB_APPROVAL_EXECUTE: None,
    # Due only at the request's expiry: a pending job holds up every later job of its lane, so
    # in the Slack lane it would stall the incident's card and notices until then.
    JOB_APPROVAL_EXPIRE: None,
    # Polls the cluster for minutes: in a lane it would hold up every later job of that lane.
    JOB_APPROVAL_FOLLOW: None,
    # After the message's post (same lane, in order): a redraw queued before it is posted waits.
    JOB_APPROVAL_REDRAW: "slack",
    # Calls Alertmanager, not Slack: in the Slack lane an Alertmanager outage (retried) would stall
    # the incident's card and notices, and a queued card update would delay the expiry. Its card
    # redraw is a slack.update_card of the lane, queued once Alertmanager has answered.
    JOB_SILENCE_EXPIRE: None,
    # Due only at the silence's end: pending in a lane, it would hold up every later job of it.
    JOB_SILENCE_ENDED: None,
    # About no incident (Job.incident_id is None): what one person sees on the Home tab.
    JOB_HOME: None,
    # Due days later (postmortem.archive_after_days): in a lane it would hold up all of it until then.
    JOB_POSTMORTEM_ARCHIVE: None,
    # In the announce channel, like the announcement: its trouble holds up nothing of the incident's.
    JOB_STATUS_UPDATE_ANNOUNCE: None,
    # Only reads Slack and writes the timeline: a message deleted meanwhile fails it, holding up nothing.
    JOB_TIMELINE_CAPTURE: None,
    # About no incident: lanes of their own, bot-wide, so that "back" never overtakes "lost" (a
    # resolve that PagerDuty receives before its trigger is dropped, and the page stays open).
    JOB_HEARTBEAT_PAGE: "heartbeat.pagerduty", JOB_HEARTBEAT_POST: "heartbeat.slack",
}
_BOT_WIDE: frozenset[LaneName] = frozenset({"heartbeat.pagerduty", "heartbeat.slack"})


def lane_of(kind: str, incident_id: int | None) -> str | None:
    """The lane a job of `kind` about `incident_id` runs in ("slack:12", "pagerduty:12")."""
    name = _LANES[kind]
    if name in _BOT_WIDE:
        return name
    return f"{name}:{incident_id}" if name and incident_id is not None else None


def enqueue(session: Session, kind: str, incident_id: int | None, *, now: datetime,
            payload: dict[str, Any] | None = None, coalesce: bool = False,
            run_at: datetime | None = None) -> Job | None:
    """Queue a job of a known kind in the caller's transaction, in its kind's lane."""
    return outbox.enqueue(session, kind, now=now, incident_id=incident_id, lane=lane_of(kind, incident_id),
                          payload=payload, coalesce=coalesce, run_at=run_at)
