"""Replicas as separate OS processes on one PostgreSQL database: each deadline pages once.

tests/test_escalation.py races two engines in threads of one process; here the replicas are
real processes (tests/timer_replica.py), each with its own interpreter, engine and
connections, claiming timers with FOR UPDATE SKIP LOCKED. They start on a common signal and
fire in batches of two, so they interleave. The pages they wrote are then delivered to the
PagerDuty fake, which must see one trigger per incident.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bot.config import OncallConfig
from bot.db import Database
from bot.escalation import PAGE, REMINDER
from bot.incidents import ingest
from bot.jobs import JOB_PD_EVENT
from bot.models import Job, JobStatus, Timer, TimerStatus, utcnow
from commands.app import build
from integrations.alertmanager import WebhookMessage
from tests.alerts import alert, group
from tests.conftest import make_settings
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack

ROUTING_KEY = "R0UTINGKEY0FTHEPAYMENTSSERVICE00"
INCIDENTS = 60
REPLICAS = 3
# P2 (severity error): the page and the first status reminder are due 30 min after opening,
# the next level (30 min after the page) and the next reminder later. At +31 min exactly
# those two per incident are due.
OFFSET = timedelta(minutes=31)
# Sixty incidents at once: storm mode off, or most would join one storm (tests/test_storm.py).
CONFIG = {"channels": {"announce": "C0INCIDENTS"}, "pagerduty": {"routing_key": ROUTING_KEY},
          "storm": {"enabled": False}}


def open_incidents(db: Database, config: OncallConfig) -> list[int]:
    ids = []
    for n in range(INCIDENTS):
        message = WebhookMessage.model_validate(group(alert(labels={"instance": f"api-{n}", "severity": "error"}),
                                                      group_key=f'{{}}:{{instance="api-{n}"}}'))
        with db.session() as session:
            ids.append(ingest(session, config, message, now=utcnow()).incident_id)
    return ids


def race(database_url: str, workdir: Path) -> list[dict]:
    """Start the replica processes, let them all connect, then release them at once."""
    go = workdir / "go"
    ready = [workdir / f"ready-{n}" for n in range(REPLICAS)]
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": os.pathsep.join(sys.path)}
    replicas = [subprocess.Popen(
        [sys.executable, "-m", "tests.timer_replica", "--routing-key", ROUTING_KEY,
         "--offset-seconds", str(OFFSET.total_seconds()), "--batch", "2",
         "--ready-file", str(ready[n]), "--go-file", str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd(), env=env)
        for n in range(REPLICAS)]
    try:
        deadline = time.monotonic() + 60
        while not all(path.exists() for path in ready):
            dead = [p for p in replicas if p.poll() is not None]
            assert not dead, f"a replica exited before the start: {dead[0].communicate()[1][-3000:]}"
            assert time.monotonic() < deadline, "the replicas did not connect within 60 s"
            time.sleep(0.01)
        go.touch()
        results = []
        for process in replicas:
            out, err = process.communicate(timeout=90)
            assert process.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for process in replicas:
            if process.poll() is None:
                process.kill()
                process.wait()


async def drain(services) -> None:  # type: ignore[no-untyped-def]
    while await services.outbox.run_due():
        pass


def test_replica_processes_page_once_per_deadline(postgres_url: str, tmp_path: Path) -> None:
    config = OncallConfig.model_validate(CONFIG)
    db = Database(postgres_url)
    db.migrate()
    try:
        ids = open_incidents(db, config)
        with db.read() as session:
            armed = list(session.scalars(select(Timer).where(Timer.kind == PAGE)))
        assert len(armed) == INCIDENTS and all(t.status == TimerStatus.PENDING for t in armed)

        results = race(postgres_url, tmp_path)

        with db.read() as session:
            timers = list(session.scalars(select(Timer)))
            triggers = [j for j in session.scalars(select(Job).where(Job.kind == JOB_PD_EVENT))
                        if j.payload.get("action") == "trigger"]
        pages = [t for t in timers if t.kind == PAGE]
        reminders = [t for t in timers if t.kind == REMINDER and t.status != TimerStatus.PENDING]
        # Every page timer fired, once (a second claim would have found the incident paged and
        # marked its timer skipped), and so did every first reminder.
        assert len(pages) == INCIDENTS and Counter(t.status for t in pages) == {TimerStatus.FIRED: INCIDENTS}
        assert len(reminders) == INCIDENTS and all(t.status == TimerStatus.FIRED for t in reminders)
        # One trigger per incident, each in the incident's PagerDuty lane (the negated id).
        assert Counter(j.lane for j in triggers) == Counter(f"pagerduty:{i}" for i in ids)
        # Nothing due at the replicas' time is left, and nothing fired twice: the processes'
        # counts add up to exactly the timers that were due (page + first reminder each).
        assert not [t for t in timers if t.status == TimerStatus.PENDING and t.due_at <= utcnow() + OFFSET]
        fired = [r["fired"] for r in results]
        assert sum(fired) == 2 * INCIDENTS, results
        # They raced: each fired some, and their firing overlapped in time.
        assert all(n > 0 for n in fired), f"a replica fired nothing: {results}"
        assert max(r["first"] for r in results) < min(r["last"] for r in results), \
            f"the replicas did not run side by side: {results}"
    finally:
        db.dispose()

    # What PagerDuty sees: the outbox delivers the jobs; one trigger per incident, no duplicate.
    with FakeSlack() as slack, FakePagerDuty() as pagerduty:
        pagerduty.add_user("PBOT", "The bot", "oncall-bot@example.com")
        pagerduty.add_escalation_policy("PEP1", [["PBOT"]])
        pagerduty.add_service("PSVC1", ROUTING_KEY, "PEP1")
        services = build(make_settings(
            postgres_url, slack, config, pagerduty_api_token=pagerduty.api_token,
            pagerduty_events_url=pagerduty.base_url, pagerduty_api_url=pagerduty.base_url,
            pagerduty_ca_file=pagerduty.ca_file, pagerduty_from_email="oncall-bot@example.com"),
            clock=lambda: utcnow() + OFFSET)  # the replicas' time: the jobs they wrote are due at it
        try:
            asyncio.run(drain(services))
            with services.db.read() as session:
                undelivered = [j for j in session.scalars(select(Job).where(Job.kind == JOB_PD_EVENT))
                               if j.status != JobStatus.DONE]
        finally:
            services.db.dispose()
        assert undelivered == []
        with pagerduty.lock:
            keys = [e.dedup_key for e in pagerduty.events if e.action == "trigger"]
            outcomes = Counter(e.outcome for e in pagerduty.events if e.action == "trigger")
        assert len(keys) == len(set(keys)) == INCIDENTS
        assert outcomes == {"triggered": INCIDENTS}
