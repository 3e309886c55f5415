"""Benchmark: an alert storm, and what the bot then asks of Slack.

    .venv/bin/python -m bench.storm [--database sqlite|postgres|both] [--alerts 10000] [--seconds 60]
                                    [--per-group 20] [--drain-seconds 120] [--json bench-storm.json]

`--alerts` alerts in groups of `--per-group` (each group its own alertname and group key, every
alert its own fingerprint, severity critical: P1, a dedicated channel each unless storm mode
gathers them) reach `oncall-bot serve` (its own process, on a fresh database, Slack being the
project's fake in this process) over `--seconds`: the groups' first notifications, paced
open-loop (bench.intake.open_loop) at groups/seconds a second. Then the bench waits until the
outbox has nothing due (at most `--drain-seconds`) and reads:
- lost: alerts sent minus distinct fingerprints stored (the `alert` rows of those alertnames);
- per channel: the most message calls (chat.postMessage, chat.update, chat.postEphemeral: the
  calls Slack limits per channel, about one a second with short bursts) to one channel in any
  1 s window, and in any 10 s window divided by 10 (the sustained rate), over every channel;
- channel creations: the most successful conversations.create in any 60 s window (Slack's
  Tier 2: about 20 a minute);
from the Slack fake's record (each call stamped as it arrived). Whatever the bot does with a
storm (storm mode, bot.storm, or one channel per group) is what the figures show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlmodel import col

from bench import idle as bench_idle
from bench import progress
from bench.intake import Served, fresh_serve, open_loop, webhook_request
from bot.db import Database
from bot.models import Alert, AlertGroup, Incident, Job, JobStatus, utcnow
from integrations.slack_rate import CHANNEL_BURST
from tests.alerts import alert, group
from tests.fakes.slack import Call, FakeSlack

__all__ = ["MESSAGE_METHODS", "most_in_window", "run"]

MESSAGE_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral"})
RECEIVER = "oncall-bot"
PREFIX = "Flood"  # the storm's alertnames: Flood0, Flood1, … (the bot's own storm incident is AlertStorm)
# Slack: "about one message per second per channel, short bursts allowed" (platform.md), as the
# bot's limiter keeps it (integrations.slack_rate): a burst of CHANNEL_BURST, then one a second;
# a window of 1 s (10 s) that ends on the next one's arrival holds CHANNEL_BURST + 1 (+ 10).
TARGET_PER_CHANNEL_BURST = CHANNEL_BURST + 1
TARGET_PER_CHANNEL_SUSTAINED = (10 + CHANNEL_BURST) / 10
TARGET_CREATES_PER_MINUTE = 20


def _requests(groups: int, per_group: int) -> list[bytes]:
    since = (utcnow() - timedelta(minutes=2)).isoformat()
    return [webhook_request(group(*(alert(f"{PREFIX}{g}", labels={"instance": f"node-{i}"}, starts_at=since)
                                    for i in range(per_group)),
                                  group_key=f'{{}}:{{alertname="{PREFIX}{g}"}}', receiver=RECEIVER))
            for g in range(groups)]


def most_in_window(stamps: list[float], window: float) -> int:
    """The most stamps in any half-open interval of `window` seconds."""
    ordered, most, first = sorted(stamps), 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def _backlog(db: Database) -> int:
    """Jobs the outbox has yet to do now (a job deferred to later, a retry's backoff, waits)."""
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(Job).where(
            col(Job.status).in_([JobStatus.PENDING, JobStatus.RUNNING]), col(Job.run_at) <= utcnow())) or 0)


def _drain(db: Database, kind: str, timeout: float) -> tuple[float, int]:
    """Wait until nothing is due for 2 s running (or `timeout`): seconds waited, jobs left due."""
    started = time.monotonic()
    idle_since: float | None = None
    reported = started
    while (waited := time.monotonic() - started) < timeout:
        left = _backlog(db)
        now = time.monotonic()
        if left:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= 2:
            return waited, 0
        if now - reported >= 10:
            reported = now
            progress(f"storm {kind}: draining, {left} jobs due, {waited:.0f} s")
        time.sleep(0.2)
    return waited, _backlog(db)


async def _send(port: int, requests: list[bytes], rate: float, slack: FakeSlack, kind: str) -> dict[str, Any]:
    """The paced send, with a progress line every 10 s."""
    started = time.monotonic()

    async def ticker() -> None:
        while True:
            await asyncio.sleep(10)
            with slack._lock:
                calls = len(slack.calls)
            progress(f"storm {kind}: {time.monotonic() - started:.0f} s of "
                     f"{len(requests) / rate:.0f} s sent, {calls} Slack calls so far")

    ticking = asyncio.create_task(ticker())
    try:
        return await open_loop(port, requests, rate)
    finally:
        ticking.cancel()


def _per_channel(calls: list[Call]) -> dict[str, Any]:
    by_channel: dict[str, list[float]] = defaultdict(list)
    for call in calls:
        if call.method in MESSAGE_METHODS and call.args.get("channel"):
            by_channel[str(call.args["channel"])].append(call.at)
    burst = {c: most_in_window(at, 1.0) for c, at in by_channel.items()}
    sustained = {c: most_in_window(at, 10.0) / 10 for c, at in by_channel.items()}
    busiest = max(sustained, key=lambda c: sustained[c], default=None)
    return {"channels_written": len(by_channel), "burst_max": max(burst.values(), default=0),
            "burst_channel": max(burst, key=lambda c: burst[c], default=None),
            "sustained_max": max(sustained.values(), default=0.0), "busiest_channel": busiest,
            "busiest_messages": len(by_channel[busiest]) if busiest else 0}


def _stored(db: Database) -> dict[str, Any]:
    with db.read() as session:
        fingerprints = session.scalar(select(func.count(func.distinct(Alert.fingerprint)))
                                      .where(col(Alert.alertname).like(f"{PREFIX}%")))
        groups = session.scalar(select(func.count()).select_from(AlertGroup)
                                .where(col(AlertGroup.receiver) == RECEIVER))
        kinds = Counter(session.scalars(select(col(Incident.kind))))
    return {"alerts_stored": int(fingerprints or 0), "groups_stored": int(groups or 0),
            "incidents": sum(kinds.values()), "incidents_by_kind": dict(kinds)}


def run(kind: str, *, alerts: int = 10_000, seconds: float = 60.0, per_group: int = 20,
        drain_seconds: float = 120.0, idle: dict[str, float] | None = None) -> dict[str, Any]:
    """The storm on a fresh `kind` database; the figures as a dict (see the module's docstring).
    With `idle` (bench.idle.measure's settle_seconds and seconds), the same `oncall-bot serve`
    is first measured idle, fresh from its start, as bench.idle does (one process start less)."""
    with fresh_serve(kind) as (url, slack, served):
        if idle is None:
            return _storm(served, url, slack, kind, alerts, seconds, per_group, drain_seconds)
        quiet = bench_idle.measure(served, kind, **idle)
        try:
            return _storm(served, url, slack, kind, alerts, seconds, per_group, drain_seconds) | {"idle": quiet}
        except Exception as exc:  # the idle figures stand; the storm's error is reported beside them
            progress(f"storm {kind} failed: {exc!r}")
            return {"database": kind, "idle": quiet, "error": f"{type(exc).__name__}: {exc}"}


def _storm(served: Served, url: str, slack: FakeSlack, kind: str, alerts: int, seconds: float, per_group: int,
           drain_seconds: float) -> dict[str, Any]:
    groups = max(1, alerts // per_group)
    sent_alerts = groups * per_group
    db = Database(url)
    try:
        requests = _requests(groups, per_group)
        progress(f"storm {kind}: {sent_alerts} alerts in {groups} groups over {seconds:g} s "
                 f"({groups / seconds:.1f} webhooks/s)")
        acks = asyncio.run(_send(served.port, requests, groups / seconds, slack, kind))
        waited, left = _drain(db, kind, drain_seconds)
        progress(f"storm {kind}: sent; the outbox drained in {waited:.0f} s"
                 + (f", {left} jobs still due" if left else ""))
        with slack._lock:
            calls = list(slack.calls)
        stored = _stored(db)
    finally:
        db.dispose()
    creates = [c.at for c in calls if c.method == "conversations.create" and c.response.get("ok")]
    return {"database": kind, "alerts_sent": sent_alerts, "groups_sent": groups, "seconds": seconds,
            **stored, "lost": sent_alerts - stored["alerts_stored"],
            "ack_p50_ms": acks["p50_ms"], "ack_p99_ms": acks["p99_ms"], "answers": acks["outcomes"],
            "drain_seconds": waited, "jobs_left_due": left, "slack_calls": len(calls),
            "slack_calls_by_method": dict(Counter(c.method for c in calls)),
            "slack_errors": dict(Counter(f"{c.method}: {c.response.get('error')}" for c in calls
                                         if not c.response.get("ok"))),
            "channels_created": len(creates), "creates_per_minute_max": most_in_window(creates, 60.0),
            **_per_channel(calls)}


def _line(r: dict[str, Any]) -> str:
    return (f"  {r['database']:8} lost {r['lost']} of {r['alerts_sent']} ({r['groups_stored']} groups, "
            f"{r['incidents']} incidents {r['incidents_by_kind']}), {r['channels_created']} channels "
            f"(max {r['creates_per_minute_max']} in a minute), per channel: max {r['burst_max']} messages in 1 s, "
            f"{r['sustained_max']:.1f}/s over 10 s; ack p50/p99 {r['ack_p50_ms']:.1f}/{r['ack_p99_ms']:.1f} ms; "
            f"drained in {r['drain_seconds']:.0f} s, {r['jobs_left_due']} jobs left")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--per-group", type=int, default=20)
    parser.add_argument("--drain-seconds", type=float, default=120.0)
    parser.add_argument("--json", type=Path, default=Path("bench-storm.json"))
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    results = [run(kind, alerts=args.alerts, seconds=args.seconds, per_group=args.per_group,
                   drain_seconds=args.drain_seconds) for kind in kinds]
    print(f"alert storm: {args.alerts} alerts in groups of {args.per_group} over {args.seconds:g} s; targets: "
          f"lost 0, <= {TARGET_PER_CHANNEL_SUSTAINED:g} message/s per channel sustained, "
          f"<= {TARGET_CREATES_PER_MINUTE} channels a minute")
    for r in results:
        print(_line(r))
    args.json.write_text(json.dumps({"results": results}, indent=2, default=str) + "\n")
    print(f"figures written to {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
