"""Prometheus metrics, served at GET /metrics. One registry per process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["REGISTRY", "WEBHOOKS", "INCIDENTS", "JOBS", "SLACK_CALLS", "WEBHOOK_TO_CARD"]

REGISTRY = CollectorRegistry()

WEBHOOKS = Counter(
    "oncall_webhooks_total", "Alertmanager webhooks received, by outcome", ["outcome"], registry=REGISTRY
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
WEBHOOK_TO_CARD = Histogram(
    "oncall_webhook_to_card_seconds",
    "From the webhook that opened an incident to its card posted in Slack",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
