"""Who may do what to an incident: one policy for every Slack action.

Every button and command that acts on an incident passes through `Policy.decide` (applied
by commands.middleware before any listener runs), so a rule is written once. The default:
the people in the incident's channel, plus whoever acknowledged it or holds one of its roles
(commander, scribe, comms). An incident without a channel of its own (its card and runbook in a
thread of the announce channel, which everyone may read) is steered only by its responders: the
configured ones and whoever PagerDuty had on call (`Incident.responders`), the holders of its
roles and whoever acknowledged it. Approvals (remediations) extend this with their own acts.
Declaring an incident (`decide_declare`) concerns no incident yet: any full member of the workspace
the bot is installed in may, not a guest nor someone of another workspace (Slack Connect).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from bot.models import ApprovalRequest, Incident

__all__ = ["Act", "Decision", "Declarer", "Policy", "Requester", "may_approve"]


class Act(str, Enum):
    ACK = "acknowledge it"
    RESOLVE = "resolve it"
    ESCALATE = "page or escalate it"
    CHANGE_SEVERITY = "change its severity"
    CHANGE_STATE = "change its state"
    ADD_NOTE = "add to its timeline"
    REOPEN = "reopen it"
    EXPIRE_SILENCE = "expire its silences"
    SILENCE = "silence its alerts"  # `/silence`, the card's silence menu (commands.silence_command)
    RUN_DIAGNOSTIC = "run its runbook steps"
    REQUEST_REMEDIATION = "request its remediations"
    APPROVE_REMEDIATION = "approve its remediations"
    SEE_PRIVATE = "see what it is about"  # a private incident's title (bot.declare): its people only
    ASSIGN_ROLE = "assign its roles"  # `/incident assign` (commands.roles)
    POST_UPDATE = "post its status updates"  # `/incident update` (commands.roles)
    DECLARE = "declare an incident"  # `/incident new`, the Declare incident shortcut (commands.declare)


@dataclass(frozen=True)
class Requester:
    user: str
    channel: str | None  # the channel that decides membership (the incident's, or its card's)
    in_channel: bool | None  # None: Slack could not say (the error is in `lookup_error`)
    lookup_error: str | None = None


@dataclass(frozen=True)
class Declarer:
    """Who asks to declare an incident: the workspaces the request and Slack (users.info) say they
    belong to, whether Slack says they are a guest (None: it could not say, `lookup_error` says why),
    and the workspace the bot is installed in."""

    user: str
    teams: frozenset[str]
    installed_team: str
    guest: bool | None
    lookup_error: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: Literal["", "not_in_channel", "membership_unknown", "not_a_responder",
                    # approvals (may_approve)
                    "own_request", "no_experts", "not_an_expert", "not_an_approver",
                    # declaring (Policy.decide_declare)
                    "user_unknown", "guest", "other_workspace"] = ""


class Policy:
    def decide(self, act: Act, requester: Requester, incident: Incident) -> Decision:
        if requester.user in (incident.commander, incident.acknowledged_by, incident.scribe, incident.comms):
            return Decision(True)
        if incident.channel_id is None:  # a thread incident: the announce channel's members are everyone
            return Decision(requester.user in incident.responders, "" if requester.user in incident.responders
                            else "not_a_responder")
        if requester.in_channel:
            return Decision(True)
        if requester.in_channel is None:
            return Decision(False, "membership_unknown")  # fail closed: an unknown is not a yes
        return Decision(False, "not_in_channel")

    def decide_declare(self, declarer: Declarer) -> Decision:
        """Act.DECLARE. Guests are refused: a guest sees only the channels they were let into, and a
        declaration pages people and opens channels for the whole workspace."""
        if declarer.guest is None or not declarer.installed_team:
            return Decision(False, "user_unknown")  # fail closed
        if not declarer.teams or declarer.teams != {declarer.installed_team}:
            return Decision(False, "other_workspace")
        return Decision(False, "guest") if declarer.guest else Decision(True)

    @staticmethod
    def deciding_channel(incident: Incident) -> str | None:
        """Whose members may act: the incident's own channel (None: it has none)."""
        return incident.channel_id


def may_approve(request: ApprovalRequest, user: str, *, experts: set[str], approvers: set[str],
                in_channel: bool | None = False, self_approve_low: bool = False) -> Decision:
    """Whether `user` may approve `request`. `experts` and `approvers` are resolved to people
    (user groups to their members; the commander and responders when the policy names them);
    `in_channel` counts only when the policy lets the incident channel's members approve (None:
    Slack could not say; False otherwise). `medium` and `high` need a second person, `high` one
    who is an expert (none configured: nobody; fail closed); `low` a second person, or the
    requester too when `self_approve_low`."""
    if user == request.requested_by and not (request.risk == "low" and self_approve_low):
        return Decision(False, "own_request")
    if request.risk not in ("low", "medium"):  # high, or anything unknown: experts only
        if not experts:
            return Decision(False, "no_experts")
        return Decision(user in experts, "" if user in experts else "not_an_expert")
    if user in experts or user in approvers or in_channel:
        return Decision(True)
    if in_channel is None:
        return Decision(False, "membership_unknown")
    return Decision(False, "not_an_approver")
