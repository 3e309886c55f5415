"""Slash commands. Each listener parses, calls one domain service and renders."""

from __future__ import annotations

from typing import Any

from commands.feature import Feature
from commands.ids import COMMAND_INCIDENT, COMMAND_ONCALL

__all__ = ["feature"]

# /runbook lives in commands.runbook_flow.
HELP = {
    COMMAND_INCIDENT: "`/incident status` shows this channel's incident.",
    COMMAND_ONCALL: "`/oncall` shows who is on call.",
}


MENTION_HELP = ("I open a channel and a live card for each Alertmanager alert group, post its runbook, and "
                "page through PagerDuty. Try `/incident status`, `/oncall` or `/runbook list`.")


def feature() -> Feature:
    return Feature(commands={command: _help(command) for command in HELP}, events={"app_mention": _mention_help})


async def _mention_help(event: dict[str, Any], say: Any) -> None:
    """@oncall-bot in a channel: answer in the thread with what the bot does and its commands."""
    await say(text=MENTION_HELP, thread_ts=event.get("thread_ts") or event.get("ts"))


def _help(command: str) -> Any:
    async def listener(ack: Any) -> None:
        await ack(text=HELP[command], response_type="ephemeral")

    return listener
