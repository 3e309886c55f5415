"""Every id the bot gives Slack and gets back: action ids, block ids, callback ids, commands.

Builders put them on buttons and blocks; listeners match on them. One module, so a listener
and the builder it answers can never drift apart.
"""

from __future__ import annotations

import re

__all__ = [
    "APPROVAL_APPROVE", "APPROVAL_DENY", "APPROVAL_DENY_REASON", "CARD_ACK", "CARD_ACTIONS_BLOCK", "CARD_ESCALATE",
    "CARD_RESOLVE",
    "COMMAND_INCIDENT", "COMMAND_ONCALL",
    "COMMAND_RUNBOOK", "RUNBOOK_STEP", "SILENCE_EXPIRE", "runbook_step_action", "runbook_step_block",
    "silence_block", "silence_expire_action",
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
APPROVAL_DENY_REASON = "approval_deny_reason"  # the modal asking why (its callback_id)

# A silence on the incident card: its section, and its Expire button (one action id per silence
# shown, since Slack wants them unique per message; the value: the silence's opaque token).
_SILENCE_EXPIRE_PREFIX = "silence_expire:"
SILENCE_EXPIRE = re.compile(f"^{re.escape(_SILENCE_EXPIRE_PREFIX)}\\d+$")


def silence_expire_action(index: int) -> str:
    return f"{_SILENCE_EXPIRE_PREFIX}{index}"


def silence_block(index: int) -> str:
    return f"silence_{index}"


COMMAND_INCIDENT, COMMAND_ONCALL, COMMAND_RUNBOOK = "/incident", "/oncall", "/runbook"
