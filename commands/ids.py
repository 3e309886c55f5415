"""Every id the bot gives Slack and gets back: action ids, block ids, callback ids, commands.

Builders put them on buttons and blocks; listeners match on them. One module, so a listener
and the builder it answers can never drift apart.
"""

from __future__ import annotations

import re

__all__ = [
    "APPROVAL_APPROVE", "APPROVAL_DENY", "APPROVAL_DENY_REASON", "CARD_ACK", "CARD_ACTIONS_BLOCK", "CARD_ESCALATE",
    "CARD_RESOLVE", "CARD_STATE", "CARD_STATES_BLOCK", "card_state_action", "read_card_state_action",
    "COMMAND_INCIDENT", "COMMAND_ONCALL", "DECLARE_SHORTCUT", "DECLARE_VIEW",
    "COMMAND_RUNBOOK", "RUNBOOK_STEP", "SILENCE_EXPIRE", "runbook_step_action", "runbook_step_block",
    "silence_block", "silence_expire_action",
    "CARD_SILENCE", "COMMAND_SILENCE", "card_silence_option", "read_card_silence_option",
    "STATUS_UPDATE_VIEW",
]

# The incident card's buttons, in one actions block.
CARD_ACK, CARD_RESOLVE, CARD_ESCALATE = "incident_ack", "incident_resolve", "incident_escalate"
CARD_ACTIONS_BLOCK = "incident_actions"

# The card's state buttons, in an actions block of their own: one action id per (state the card
# showed, state offered), so a click says both and a stale one is refused (commands.card_buttons).
_CARD_STATE_PREFIX = "incident_state:"
CARD_STATE = re.compile(f"^{re.escape(_CARD_STATE_PREFIX)}[a-z]+:[a-z]+$")
CARD_STATES_BLOCK = "incident_states"


def card_state_action(shown: str, to: str) -> str:
    return f"{_CARD_STATE_PREFIX}{shown}:{to}"


def read_card_state_action(action_id: str) -> tuple[str, str] | None:
    """(state shown, state offered) of a state button's action id; None if it is not one."""
    if not CARD_STATE.match(action_id):
        return None
    shown, _, to = action_id.removeprefix(_CARD_STATE_PREFIX).partition(":")
    return shown, to

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


# The card's "Silence 1h / 4h / 24h" menu (an overflow); each option's value: the duration, then
# what every card button carries (commands.cards.card_button_value).
CARD_SILENCE = "incident_silence"


def card_silence_option(duration: str, card_value: str) -> str:
    return f"{duration}:{card_value}"


def read_card_silence_option(value: str) -> tuple[str, str]:
    """(duration, the card button value) of a silence option's value."""
    duration, _, card_value = value.partition(":")
    return duration, card_value


COMMAND_INCIDENT, COMMAND_ONCALL, COMMAND_RUNBOOK = "/incident", "/oncall", "/runbook"
COMMAND_SILENCE = "/silence"

# Declaring an incident: the message shortcut (manifest.yml) and the modal it and `/incident new` open.
DECLARE_SHORTCUT, DECLARE_VIEW = "declare_incident", "declare_incident_modal"

# `/incident update`: the status update modal (its callback_id; commands.roles).
STATUS_UPDATE_VIEW = "status_update_modal"
