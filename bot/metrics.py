"""Prometheus metrics, served at GET /metrics. One registry per process.

Counters and histograms are moved where the thing happens (the webhook handler, the Slack and
PagerDuty call boundaries, the outbox, the timer runner, approvals, the action executor).
What lives in the database (incidents by state, the outbox queue) is read at scrape time by
`StorageCollector`: one GROUP BY per table, nothing cached that could go stale.
deploy/prometheus-rules.yml alerts on these names; tests/test_metrics.py checks that each exists.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, event, func, select
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session, col

from bot.db import Database
from bot.models import Incident, Job, JobStatus

__all__ = ["APPROVALS", "EXECUTIONS", "INCIDENTS", "INTAKE", "JOBS", "PAGERDUTY_CALLS", "PAGERDUTY_CALL_SECONDS",
           "REGISTRY", "SLACK_CALLS", "SLACK_CALL_SECONDS", "SLACK_RATELIMITED", "STORAGE", "WEBHOOKS",
           "WEBHOOK_TO_CARD", "StorageCollector", "after_commit", "record_pagerduty_call", "record_slack_call",
           "record_slack_ratelimited"]

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

# Calls to outside systems: from a loopback fake (milliseconds) to a timeout (10-15 s).
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

WEBHOOKS = Counter(
    "oncall_webhooks_total", "Alertmanager webhooks received, by outcome", ["outcome"], registry=REGISTRY
)
INTAKE = Histogram(
    "oncall_webhook_intake_seconds",
    "From an Alertmanager webhook's arrival to its answer, by outcome class: repeat (answered from a read), "
    "applied (written), rejected (4xx), error (503)",
    ["outcome"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY,
)
INCIDENTS = Counter(
    "oncall_incidents_total", "Incident lifecycle events", ["event"], registry=REGISTRY
)
JOBS = Counter(
    "oncall_jobs_total", "Outbox job attempts, by kind and resulting status", ["kind", "outcome"], registry=REGISTRY
)
SLACK_CALLS = Counter(
    "oncall_slack_calls_total", "Slack Web API calls, by method and outcome", ["method", "outcome"], registry=REGISTRY
)
SLACK_CALL_SECONDS = Histogram(
    "oncall_slack_call_seconds", "Slack Web API call latency (an in-place 429 retry included), by method",
    ["method"], buckets=_CALL_BUCKETS, registry=REGISTRY,
)
SLACK_RATELIMITED = Counter(
    "oncall_slack_ratelimited_total", "HTTP 429 answers from Slack (each one, also those retried in place), by method",
    ["method"], registry=REGISTRY,
)
PAGERDUTY_CALLS = Counter(
    "oncall_pagerduty_calls_total", "PagerDuty API calls, by method and outcome (ok, http_<status>, unreachable, "
    "invalid)", ["method", "outcome"], registry=REGISTRY,
)
PAGERDUTY_CALL_SECONDS = Histogram(
    "oncall_pagerduty_call_seconds", "PagerDuty API call latency (the client's retries included), by method",
    ["method"], buckets=_CALL_BUCKETS, registry=REGISTRY,
)
APPROVALS = Counter(
    "oncall_approvals_total", "Remediation approval requests, by event: requested, approved, rejected, expired",
    ["event"], registry=REGISTRY,
)
EXECUTIONS = Counter(
    "oncall_action_executions_total", "Runbook actions run (diagnostics and remediations; not dry runs), by action "
    "and outcome (ok, error)", ["action", "outcome"], registry=REGISTRY,
)
WEBHOOK_TO_CARD = Histogram(
    "oncall_webhook_to_card_seconds",
    "From the webhook that opened an incident to its card posted in Slack",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)

_LABEL_WORD = re.compile(r"[A-Za-z0-9_.]{1,64}")


def _word(value: str, otherwise: str) -> str:
    """A label value from an outside system: its error code, or `otherwise` for free text (an
    HTML error page, an exception's message) that would make a new series per message."""
    return value if _LABEL_WORD.fullmatch(value) else otherwise


def record_slack_call(method: str, outcome: str, seconds: float) -> None:
    """SlackClient's `on_call`: one call ended (outcome "ok", Slack's error code, "unreachable")."""
    method = _word(method, "other")
    SLACK_CALLS.labels(method, _word(outcome, "http_error")).inc()
    SLACK_CALL_SECONDS.labels(method).observe(seconds)


def record_slack_ratelimited(method: str) -> None:
    """make_web_client's `on_ratelimited`: Slack answered 429."""
    SLACK_RATELIMITED.labels(_word(method, "other")).inc()


def record_pagerduty_call(method: str, outcome: str, seconds: float) -> None:
    """The PagerDuty clients' `on_call`."""
    method = _word(method.replace(" ", "_"), "other")
    PAGERDUTY_CALLS.labels(method, _word(outcome, "error")).inc()
    PAGERDUTY_CALL_SECONDS.labels(method).observe(seconds)


def after_commit(session: Session, count: Callable[[], None]) -> None:
    """Run `count` once the session's transaction commits, never if it rolls back: a counter
    moved inside a transaction that a serialization failure undoes would count what did not happen."""
    pending: list[Callable[[], None]] = session.info.setdefault("metrics_after_commit", [])
    if not pending:
        event.listen(session, "after_commit", _run_pending)
        event.listen(session, "after_soft_rollback", _drop_pending)
    pending.append(count)


def _run_pending(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the outer transaction may still roll back
        return
    for count in session.info.pop("metrics_after_commit", []):
        count()


def _drop_pending(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:  # the outer transaction rolled back (a savepoint's rollback keeps the rest)
        session.info.pop("metrics_after_commit", None)


class StorageCollector(Collector):
    """Gauges read from the database at scrape time: incidents by state and severity, and the
    outbox queue (due or running jobs, and how long the oldest due one has waited) by kind. A
    database error yields nothing and is logged: /metrics still answers with everything else."""

    def __init__(self) -> None:
        self._db: Database | None = None
        self._clock: Callable[[], datetime] | None = None

    def bind(self, db: Database, clock: Callable[[], datetime]) -> None:
        """The database the scrape reads (the composition root's; the last bot built in a process)."""
        self._db, self._clock = db, clock

    def collect(self) -> Iterable[Metric]:
        if self._db is None or self._clock is None:
            return []
        try:
            return list(self._read(self._db, self._clock()))
        except Exception as exc:  # noqa: BLE001 - a scrape must never fail for this
            log.error("metrics: the database could not be read; incident and queue gauges left out of this scrape",
                      extra={"error": f"{exc.__class__.__name__}: {str(exc)[:500]}"})
            return []

    @staticmethod
    def _read(db: Database, now: datetime) -> Iterator[Metric]:
        with db.read() as session:
            incidents = session.execute(select(col(Incident.status), col(Incident.severity), func.count())
                                        .group_by(col(Incident.status), col(Incident.severity))).all()
            due = (col(Job.status) == JobStatus.RUNNING) | ((col(Job.status) == JobStatus.PENDING)
                                                            & (col(Job.run_at) <= now))
            waiting = case((col(Job.status) == JobStatus.PENDING, col(Job.created_at)))  # a long call is no backlog
            queue = session.execute(select(col(Job.kind), func.count(), func.min(waiting))
                                    .where(due).group_by(col(Job.kind))).all()
        by_state = GaugeMetricFamily("oncall_incidents_by_state", "Incidents in the database, by state and severity",
                                     labels=["state", "severity"])
        for state, severity, count in incidents:
            by_state.add_metric([_value(state), severity], count)
        yield by_state
        depth = GaugeMetricFamily("oncall_outbox_depth", "Outbox jobs due or running, by kind", labels=["kind"])
        age = GaugeMetricFamily("oncall_outbox_oldest_age_seconds",
                                "Age (since it was written) of the oldest outbox job due and waiting to run, by kind",
                                labels=["kind"])
        for kind, count, oldest in queue:
            depth.add_metric([kind], count)
            if oldest is not None:
                age.add_metric([kind], max(0.0, (now - _aware(oldest, now)).total_seconds()))
        yield depth
        yield age


def _value(state: Any) -> str:
    return str(getattr(state, "value", state))


def _aware(moment: datetime, like: datetime) -> datetime:
    return moment if moment.tzinfo is not None or like.tzinfo is None else moment.replace(tzinfo=like.tzinfo)


STORAGE = StorageCollector()
REGISTRY.register(STORAGE)
