"""One bot replica's timer runner, as its own OS process (for tests/test_timer_replicas.py).

    python -m tests.timer_replica DATABASE_URL --routing-key KEY --offset-seconds N --start-at EPOCH

Waits until `--start-at` (so replicas start together), then fires due timers in small batches
until none is due, with its clock `--offset-seconds` ahead of the wall clock. Prints
{"fired": n, "batches": b} as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta

from bot.config import OncallConfig
from bot.db import Database
from bot.models import utcnow
from bot.timers import TimerRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database_url")
    parser.add_argument("--routing-key", required=True)
    parser.add_argument("--offset-seconds", type=float, default=0)
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()

    config = OncallConfig.model_validate({"pagerduty": {"routing_key": args.routing_key}})
    db = Database(args.database_url)
    runner = TimerRunner(db, config, clock=lambda: utcnow() + timedelta(seconds=args.offset_seconds),
                         batch=args.batch)
    with db.read() as session:  # connect before the start line, so both race from the first claim
        session.connection()
    time.sleep(max(0.0, args.start_at - time.time()))
    fired = batches = 0
    while (n := runner.fire_due()) > 0:
        fired, batches = fired + n, batches + 1
    db.dispose()
    print(json.dumps({"fired": fired, "batches": batches}))


if __name__ == "__main__":
    main()
