"""Benchmarks: figures go in the issue notes, never in a timed test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll every millisecond (a benchmark's clock must not add the tests' 20 ms steps)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.001)
    return value
