"""Who may do what to an incident: one policy for every Slack action.

Every button and command that acts on an incident passes through `Policy.decide` (applied
by commands.middleware before any listener runs), so a rule is written once. The default:
the people in the incident's channel, plus whoever acknowledged it or commands it. An
incident without a channel of its own (its card and runbook in a thread of the announce
channel, which everyone may read) is steered only by its responders: the configured ones and
whoever PagerDuty had on call (`Incident.responders`), its commander and whoever acknowledged
it. Approvals (remediations) extend this with their own acts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from bot.models import Incident

__all__ = ["Act", "Decision", "Policy", "Requester"]


class Act(str, Enum):
    ACK = "acknowledge it"
    RESOLVE = "resolve it"
    ESCALATE = "page or escalate it"
    RUN_DIAGNOSTIC = "run its runbook steps"
    REQUEST_REMEDIATION = "request its remediations"


@dataclass(frozen=True)
class Requester:
    user: str
    channel: str | None  # the channel that decides membership (the incident's, or its card's)
    in_channel: bool | None  # None: Slack could not say (the error is in `lookup_error`)
    lookup_error: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Literal["", "not_in_channel", "membership_unknown", "not_a_responder"] = ""


class Policy:
    def decide(self, act: Act, requester: Requester, incident: Incident) -> Decision:
        if requester.user in (incident.commander, incident.acknowledged_by):
            return Decision(True)
        if incident.channel_id is None:  # a thread incident: the announce channel's members are everyone
            return Decision(requester.user in incident.responders, "" if requester.user in incident.responders
                            else "not_a_responder")
        if requester.in_channel:
            return Decision(True)
        if requester.in_channel is None:
            return Decision(False, "membership_unknown")  # fail closed: an unknown is not a yes
        return Decision(False, "not_in_channel")

    @staticmethod
    def deciding_channel(incident: Incident) -> str | None:
        """Whose members may act: the incident's own channel (None: it has none)."""
        return incident.channel_id
