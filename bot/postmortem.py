"""What a post-mortem is made of: an incident's stored rows and the key times computed from its
timeline (no I/O, no clock, no words).

bot.postmortem_ops reads the `Facts` in one transaction and stores each version of the document;
the document itself (Markdown, in English or Japanese) is commands.postmortem_doc's, handed to
`postmortem_ops.write` as its `Render`. A time the records do not hold is None here, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.models import Alert, ApprovalRequest, Incident, Paging, RunbookStep, Silence, TimelineEntry

__all__ = ["NOTE_KINDS", "PAGE_KINDS", "UPDATE_KINDS", "Document", "Facts", "KeyTimes", "Previous", "Render",
           "alert_time", "key_times"]

UPDATE_KINDS = ("status_update",)  # the timeline kind of a status update (`/incident update`, bot.roles)
NOTE_KINDS = ("note", "message")  # `/incident note`, and messages pinned or :pushpin:ed (bot.timeline_capture)
PAGE_KINDS = ("page", "escalate", "ack", "escalated", "reassigned")  # paging and acknowledgements


@dataclass(frozen=True)
class Facts:
    """Everything the document is built from, as stored (bot.postmortem_ops reads it in one go)."""

    incident: Incident
    alerts: Sequence[Alert]
    timeline: Sequence[TimelineEntry]  # oldest first
    steps: Sequence[RunbookStep]
    approvals: Sequence[ApprovalRequest]  # oldest first
    paging: Paging | None
    silences: Sequence[Silence]


@dataclass(frozen=True)
class Previous:
    """The version before this one, to name what changed."""

    version: int
    generated_at: datetime
    markdown: str


@dataclass(frozen=True)
class Document:
    """One version as rendered, to be stored."""

    markdown: str
    changed: tuple[str, ...]  # the sections that differ from the previous version; () without one


class Render(Protocol):
    """The document of a version (commands.postmortem_doc.build)."""

    def __call__(self, facts: Facts, *, version: int, generated_at: datetime, generated_by: str, language: str,
                 previous: Previous | None = None) -> Document: ...


def alert_time(at: datetime | None) -> datetime | None:
    """An Alertmanager time, None when unset (Go's zero time, year 1)."""
    return at if at is not None and at.year > 1 else None


@dataclass(frozen=True)
class KeyTimes:
    """The incident's key times, from its timeline; None where the timeline holds no such event."""

    began: datetime | None  # the earliest alert's startsAt
    detected: datetime  # the incident opened
    acknowledged: TimelineEntry | None  # the first acknowledgement
    mitigated: TimelineEntry | None  # the first successful remediation, or the first move to mitigating
    resolved: TimelineEntry | None  # the last move to resolved (a reopened incident resolves again)

    @property
    def outage_start(self) -> datetime:
        """The earliest alert's start, or detection when no alert's start is known."""
        return self.began or self.detected

    @property
    def outage_end(self) -> datetime | None:
        return self.resolved.at if self.resolved is not None else None

    @property
    def outage(self) -> timedelta | None:
        end = self.outage_end
        return end - self.outage_start if end is not None else None

    def since_detection(self, entry: TimelineEntry | None) -> timedelta | None:
        """Time to acknowledge, mitigate or resolve: counted from detection, as the document says."""
        return entry.at - self.detected if entry is not None else None


def key_times(facts: Facts) -> KeyTimes:
    timeline = facts.timeline
    created = next((e for e in timeline if e.kind == "created"), None)
    starts = [at for at in (alert_time(a.starts_at) for a in facts.alerts) if at is not None]
    mitigations = [e for e in timeline if (e.kind == "remediation" and e.data.get("ok") is True)
                   or (e.kind == "status" and e.data.get("to") == "mitigating")]
    resolutions = [e for e in timeline if e.kind == "status" and e.data.get("to") == "resolved"]
    return KeyTimes(
        began=min(starts, default=None),
        detected=created.at if created is not None else facts.incident.created_at,
        acknowledged=next((e for e in timeline if e.kind == "ack"), None),
        mitigated=mitigations[0] if mitigations else None,
        resolved=resolutions[-1] if resolutions else None,
    )
