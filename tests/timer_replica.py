"""One bot replica's timer runner, as its own OS process (for tests/test_timer_replicas.py).

    DATABASE_URL=postgresql://… python -m tests.timer_replica --routing-key KEY --offset-seconds N \
        --ready-file PATH --go-file PATH [--batch 2]

Connects, creates `--ready-file`, and waits until `--go-file` exists, so that every replica
starts racing at the same moment however long its imports took. Then it fires due timers in
small batches (TimerRunner.fire_due) until none is left for it, its clock `--offset-seconds`
ahead of the wall clock so that deadlines armed "now" are already due. Prints one JSON line:
{"pid", "fired", "batches", "first", "last"} (`first`/`last`: wall-clock time of its first and
last batch that fired something, to show the replicas really ran side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta
from pathlib import Path

from bot.config import OncallConfig
from bot.db import Database
from bot.models import utcnow
from bot.timers import TimerRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--offset-seconds", type=float, default=0.0)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--go-file", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--wait-seconds", type=float, default=60.0, help="give up if not told to go by then")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("set DATABASE_URL or pass --database-url")

    config = OncallConfig.model_validate({"pagerduty": {"routing_key": args.routing_key}})
    db = Database(args.database_url)
    offset = timedelta(seconds=args.offset_seconds)
    runner = TimerRunner(db, config, clock=lambda: utcnow() + offset, batch=args.batch)
    with db.session() as session:  # connected (and the pool warm) before the start line
        session.connection()
    args.ready_file.touch()
    give_up = time.monotonic() + args.wait_seconds
    while not args.go_file.exists():
        if time.monotonic() > give_up:
            raise SystemExit(f"{args.go_file} did not appear within {args.wait_seconds:g} s")
        time.sleep(0.001)

    fired = batches = 0
    first = last = None
    while (n := runner.fire_due()) > 0:
        last = time.time()
        first = first or last
        fired, batches = fired + n, batches + 1
    db.dispose()
    print(json.dumps({"pid": os.getpid(), "fired": fired, "batches": batches, "first": first, "last": last}))


if __name__ == "__main__":
    main()
