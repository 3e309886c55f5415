"""Every id the bot gives Slack and gets back: action ids, block ids, callback ids, commands.

Builders put them on buttons and blocks; listeners match on them. One module, so a listener
and the builder it answers can never drift apart.
"""

from __future__ import annotations

import re

__all__ = [
    "APPROVAL_APPROVE", "APPROVAL_DENY", "CARD_ACK", "CARD_ACTIONS_BLOCK", "CARD_ESCALATE", "CARD_RESOLVE",
    "COMMAND_INCIDENT", "COMMAND_ONCALL",
    "COMMAND_RUNBOOK", "RUNBOOK_STEP", "runbook_step_action", "runbook_step_block",
]

# The incident card's buttons, in one actions block.
CARD_ACK, CARD_RESOLVE, CARD_ESCALATE = "incident_ack", "incident_resolve", "incident_escalate"
CARD_ACTIONS_BLOCK = "incident_actions"

# A runbook step's button: one action id per step index (Slack wants them unique per message).
_RUNBOOK_STEP_PREFIX = "runbook_step:"
RUNBOOK_STEP = re.compile(f"^{re.escape(_RUNBOOK_STEP_PREFIX)}\\d+$")


def runbook_step_action(index: int) -> str:
    return f"{_RUNBOOK_STEP_PREFIX}{index}"


def runbook_step_block(index: int) -> str:
    return f"runbook_step_{index}"


# An approval request's buttons (their value: the request's opaque token).
APPROVAL_APPROVE, APPROVAL_DENY = "approval_approve", "approval_deny"

COMMAND_INCIDENT, COMMAND_ONCALL, COMMAND_RUNBOOK = "/incident", "/oncall", "/runbook"
