"""`python -m bench` runs end to end and writes every figure of issue 13 §7.

A smoke run (`--quick`, SQLite): it asserts that every row is there with numbers, never that a
target is met. The benchmark's figures come from a full run on a quiet machine (the README's
"Benchmark" section), not from a test.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROWS = (  # each with its unit; the latency rows have p50 and p99 as well
    ("webhook ack at 200/s, repeats", "ms"),
    ("webhook ack at 200/s, 1 change in 10", "ms"),
    ("ingest throughput / bare endpoint", "ratio"),
    ("webhook -> channel + card", "ms"),
    ("button ack (runbook step click)", "ms"),
    ("timer lateness, 2 replicas", "s"),
    ("timers fired twice", "timers"),
    ("storm: alerts lost", "alerts"),
    ("storm: messages to one channel in any 1 s", "calls"),
    ("storm: messages per channel per s, 10 s window", "calls/s"),
    ("storm: channel creations in any minute", "channels"),
    ("idle RSS of oncall-bot serve", "MiB"),
    ("idle CPU of oncall-bot serve", "% of a core"),
)
WITH_PERCENTILES = {"ms", "s"}


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_run_writes_every_row_with_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--database", "sqlite", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    figures = json.loads(out.read_text())

    machine = figures["machine"]
    assert machine["cpus"] >= 1 and len(machine["load_average"]) == 3 and machine["python"].startswith("3.")
    rows = {(r["name"], r["database"]): r for r in figures["results"]}
    assert sorted(rows) == sorted((name, "sqlite") for name, _ in ROWS), "one row per figure, no other"
    for name, unit in ROWS:
        row = rows[(name, "sqlite")]
        assert row["unit"] == unit and row["target"], row
        assert isinstance(row["met"], bool), row
        assert _number(row["value"]), row
        if unit in WITH_PERCENTILES:
            assert _number(row["p50"]) and _number(row["p99"]) and row["p50"] <= row["p99"] == row["value"], row
    # The one table on stdout carries every row, each with its verdict.
    table = [line for line in done.stdout.splitlines() if line.startswith(tuple(name for name, _ in ROWS))]
    assert len(table) == len(ROWS) and all(("PASS" in line) != ("MISS" in line) for line in table), done.stdout
