"""Structured logs: one JSON object per line, with the `extra=` fields of each call.

Work done for one incident (an outbox job, a timer, a Slack click, a webhook) runs inside
`incident_context(incident_id)`: every line logged meanwhile, however deep, carries
`"incident"` without each call passing it (a call's own `extra={"incident": ...}` wins).
A context variable, so it follows the work into `asyncio.to_thread` and new tasks, and never
leaks into concurrent work for another incident.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "bind_incident", "configure_logging", "current_incident", "incident_context"]

_INCIDENT: ContextVar[int | None] = ContextVar("oncall_incident", default=None)


@contextmanager
def incident_context(incident_id: int | None) -> Iterator[None]:
    """Log lines inside the block name `incident_id` (None: about no incident, nothing added)."""
    token = _INCIDENT.set(incident_id)
    try:
        yield
    finally:
        _INCIDENT.reset(token)


def bind_incident(incident_id: int | None) -> None:
    """From here to the end of the current task (and in the tasks and threads it starts), lines
    name `incident_id`: for Bolt middleware, whose `next()` returns before the listener runs, so
    a `with` block would end too soon. Each request runs in a task of its own: nothing leaks."""
    _INCIDENT.set(incident_id)


def current_incident() -> int | None:
    return _INCIDENT.get()


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if "incident" not in entry and (incident := _INCIDENT.get()) is not None:
            entry["incident"] = incident
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "alembic.runtime.migration", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
