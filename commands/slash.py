"""Slash commands. Each listener parses, calls one domain service and renders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt.async_app import AsyncApp

if TYPE_CHECKING:
    from commands.server import Services

__all__ = ["register"]

# /runbook lives in commands.runbook_flow.
HELP = {
    "/incident": "`/incident status` shows this channel's incident.",
    "/oncall": "`/oncall` shows who is on call.",
}


def register(app: AsyncApp, services: "Services") -> None:
    for command in HELP:
        app.command(command)(_help(command))


def _help(command: str) -> Any:
    async def listener(ack: Any) -> None:
        await ack(text=HELP[command], response_type="ephemeral")

    return listener
