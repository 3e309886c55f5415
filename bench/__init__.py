"""Benchmarks: figures go in the issue notes, never in a timed test.

`python -m bench` (bench/__main__.py) runs them all and prints one table; each module also runs
alone as `python -m bench.<module>`. What they share is here: polling, percentiles, a fresh
database of either kind, progress lines.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["NO_STORM", "bench_config", "fresh_database", "nearest_rank", "progress", "wait_until"]

T = TypeVar("T")

# The benchmarks of one incident's path (intake, cards, clicks, pages) turn storm mode off: their
# 50-200 groups would otherwise mostly join one storm incident. bench.storm measures storm mode.
NO_STORM: dict[str, Any] = {"storm": {"enabled": False}}


def bench_config(**extra: Any) -> Any:
    """tests.conftest.make_settings' default policy (announce channel, the payments responders),
    storm mode off, plus `extra` sections."""
    from bot.config import OncallConfig

    return OncallConfig.model_validate({
        "channels": {"announce": "C0INCIDENTS"},
        "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "S0SRE", "nobody@example.com"]}],
        **NO_STORM, **extra})


def wait_until(predicate: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll every millisecond (a benchmark's clock must not add the tests' 20 ms steps)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.001)
    return value


def nearest_rank(values: list[float], q: float) -> float:
    """The q-th percentile by nearest rank (a value that was measured, never an interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * q / 100) - 1))]


def progress(message: str) -> None:
    """A progress line on stderr: the table and the JSON stay on stdout and in the file."""
    print(f"  {message}", file=sys.stderr, flush=True)


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """The URL of an empty database: a SQLite file in a temporary directory, or a PostgreSQL
    database of its own on 127.0.0.1:5432 (tests.conftest), dropped at the end."""
    if kind == "postgres":
        from tests.conftest import _postgres_database

        yield from _postgres_database()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.db'}"
