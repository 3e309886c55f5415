"""Benchmark: what `oncall-bot serve` costs while it has nothing to do.

    .venv/bin/python -m bench.idle [--database sqlite|postgres|both] [--settle 5] [--seconds 30]

Starts `oncall-bot serve` (its own process, on a fresh database, Slack being the project's fake;
bench.intake.serve_bot), checks from its log that the outbox worker and the timer runner are
running, lets it settle for `--settle` seconds, then reads /proc/PID/stat (utime + stime, in
clock ticks) at the start and the end of `--seconds` and /proc/PID/status (VmRSS) every second:
idle CPU as a share of one core, RSS at the end and the most seen. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from bench import progress, wait_until
from bench.intake import Served, fresh_serve

__all__ = ["cpu_seconds", "measure", "rss_mib", "run"]

LOOPS = ("outbox worker started", "timer runner started")  # what bot.outbox and bot.timers log at start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used (/proc/PID/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "(comm)", which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"/proc/{pid}/status has no VmRSS line: is the process a zombie?")


def measure(served: Served, kind: str, *, settle_seconds: float = 5.0, seconds: float = 30.0) -> dict[str, Any]:
    """Idle CPU and RSS of the `oncall-bot serve` process `served`, which has had nothing to do."""
    text = served.log.read_text
    wait_until(lambda: all(line in text() for line in LOOPS), "the outbox and timer loops to start", timeout=30)
    pid = served.process.pid
    time.sleep(settle_seconds)
    progress(f"idle {kind}: pid {pid} serving, loops running; measuring for {seconds:g} s")
    start_cpu, started = cpu_seconds(pid), time.monotonic()
    rss = [rss_mib(pid)]
    while (elapsed := time.monotonic() - started) < seconds:
        time.sleep(min(1.0, seconds - elapsed))
        rss.append(rss_mib(pid))
        if len(rss) % 10 == 0:
            progress(f"idle {kind}: {elapsed:.0f} s, RSS {rss[-1]:.1f} MiB")
    used, elapsed = cpu_seconds(pid) - start_cpu, time.monotonic() - started
    if served.process.poll() is not None:
        raise SystemExit(f"oncall-bot serve exited during the idle measurement:\n{text()[-3000:]}")
    return {"database": kind, "seconds": elapsed, "cpu_seconds": used, "cpu_percent": 100 * used / elapsed,
            "rss_mib": rss[-1], "rss_max_mib": max(rss)}


def run(kind: str, *, settle_seconds: float = 5.0, seconds: float = 30.0) -> dict[str, Any]:
    """Idle CPU and RSS of a fresh `oncall-bot serve` on a fresh `kind` database."""
    with fresh_serve(kind) as (_, _, served):
        return measure(served, kind, settle_seconds=settle_seconds, seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start before measuring")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    for kind in kinds:
        r = run(kind, settle_seconds=args.settle, seconds=args.seconds)
        print(f"  {kind:8} idle over {r['seconds']:.0f} s: CPU {r['cpu_percent']:.2f}% of a core "
              f"({r['cpu_seconds']:.2f} s), RSS {r['rss_mib']:.1f} MiB (max {r['rss_max_mib']:.1f})")


if __name__ == "__main__":
    main()
