"""What a feature contributes to the app, as a value: the composition root (commands.app)
combines them; no feature reaches into another's state."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_bolt.response import BoltResponse
from starlette.routing import Route

from bot.models import Job

__all__ = ["Action", "Feature", "Handler", "Listener", "Loop", "Middleware"]

Handler = Callable[[Job], Awaitable[None]]
Listener = Callable[..., Awaitable[None]]
Middleware = Callable[..., Awaitable[BoltResponse | None]]  # Bolt listener middleware: next()'s response, or its own


@dataclass(frozen=True)
class Loop:
    """A background loop run beside the server: started with it, stopped when it stops."""

    run: Callable[[], Coroutine[Any, Any, None]]  # a coroutine: the app runs it as a task
    stop: Callable[[], None]


@dataclass(frozen=True)
class Action:
    """A Bolt `block_actions` listener, with the middleware that runs before it."""

    action_id: str | re.Pattern[str]
    listener: Listener
    middleware: Sequence[Middleware] = ()


@dataclass(frozen=True)
class Feature:
    handlers: Mapping[str, Handler] = field(default_factory=dict)  # outbox job kind -> handler
    actions: Sequence[Action] = ()
    commands: Mapping[str, Listener] = field(default_factory=dict)  # "/runbook" -> listener
    events: Mapping[str, Listener] = field(default_factory=dict)  # "app_mention" -> listener
    views: Mapping[str, Listener] = field(default_factory=dict)  # a modal's callback_id -> its submission listener
    shortcuts: Mapping[str, Listener] = field(default_factory=dict)  # a (message) shortcut's callback_id -> listener
    routes: Sequence[Route] = ()
    loops: Sequence[Loop] = ()
    on_close: Sequence[Callable[[], Any]] = ()  # run in a thread when the server stops
