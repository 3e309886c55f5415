"""What a feature contributes to the app, as a value: the composition root (commands.app)
combines them; no feature reaches into another's state."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.routing import Route

from bot.models import Job

__all__ = ["Action", "Feature", "Handler", "Listener", "Loop"]

Handler = Callable[[Job], Awaitable[None]]
Listener = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Loop:
    """A background loop run beside the server: started with it, stopped when it stops."""

    run: Callable[[], Awaitable[None]]
    stop: Callable[[], None]


@dataclass(frozen=True)
class Action:
    """A Bolt `block_actions` listener, with the middleware that runs before it."""

    action_id: str | re.Pattern[str]
    listener: Listener
    middleware: Sequence[Listener] = ()


@dataclass(frozen=True)
class Feature:
    handlers: Mapping[str, Handler] = field(default_factory=dict)  # outbox job kind -> handler
    actions: Sequence[Action] = ()
    commands: Mapping[str, Listener] = field(default_factory=dict)  # "/runbook" -> listener
    events: Mapping[str, Listener] = field(default_factory=dict)  # "app_mention" -> listener
    routes: Sequence[Route] = ()
    loops: Sequence[Loop] = ()
    on_close: Sequence[Callable[[], Any]] = ()  # run in a thread when the server stops
