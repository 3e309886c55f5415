"""Replicas as separate OS processes on one PostgreSQL database: each deadline pages once.

tests/test_escalation.py races two engines in threads of one process; here the replicas are
real processes (tests/timer_replica.py) claiming timers with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

from sqlalchemy import select

from bot.config import OncallConfig
from bot.db import Database
from bot.escalation import JOB_PD_EVENT, PAGE, Timer, TimerStatus
from bot.incidents import ingest
from bot.models import Job, utcnow
from integrations.alertmanager import WebhookMessage
from tests.alerts import alert, group

ROUTING_KEY = "R0UTINGKEY0FTHEPAYMENTSSERVICE00"
INCIDENTS = 60
REPLICAS = 3


def open_incidents(db: Database, config: OncallConfig) -> list[int]:
    ids = []
    for n in range(INCIDENTS):
        message = WebhookMessage.model_validate(group(alert(labels={"instance": f"api-{n}"}),
                                                      group_key=f'{{}}:{{instance="api-{n}"}}'))
        with db.session() as session:
            ids.append(ingest(session, config, message, now=utcnow()).incident_id)
    return ids


def test_replica_processes_page_once_per_deadline(postgres_url: str) -> None:
    config = OncallConfig.model_validate({"pagerduty": {"routing_key": ROUTING_KEY}})
    db = Database(postgres_url)
    db.migrate()
    try:
        ids = open_incidents(db, config)
        start_at = time.time() + 3  # every process imported and connected by then
        replicas = [subprocess.Popen(
            [sys.executable, "-m", "tests.timer_replica", postgres_url, "--routing-key", ROUTING_KEY,
             "--offset-seconds", str(timedelta(minutes=16).total_seconds()), "--start-at", str(start_at)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}) for _ in range(REPLICAS)]
        results = []
        for process in replicas:
            out, err = process.communicate(timeout=90)
            assert process.returncode == 0, err[-3000:]
            results.append(json.loads(out.strip().splitlines()[-1]))

        with db.read() as session:
            pages = list(session.scalars(select(Timer).where(Timer.kind == PAGE)))
            triggers = [j for j in session.scalars(select(Job).where(Job.kind == JOB_PD_EVENT))
                        if j.payload.get("action") == "trigger"]
            due = list(session.scalars(select(Timer).where(Timer.status == TimerStatus.PENDING,
                                                           Timer.due_at <= utcnow() + timedelta(minutes=16))))
        assert len(pages) == INCIDENTS and all(t.status == TimerStatus.FIRED for t in pages)
        # One trigger per incident, in the incident's PagerDuty lane (the negated id).
        assert Counter(-(j.incident_id or 0) for j in triggers) == Counter(ids)
        assert due == []
        fired = [r["fired"] for r in results]
        # Every timer that came due (pages, and the P1 reminders due at 15 min) fired exactly once
        # across the processes, and the work was shared: no single process took it all.
        assert sum(fired) == 2 * INCIDENTS
        assert sum(1 for n in fired if n > 0) >= 2, f"the replicas did not interleave: {results}"
    finally:
        db.dispose()
