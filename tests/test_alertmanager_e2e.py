"""End to end with the real Alertmanager: it sends the running bot real webhooks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
from sqlalchemy import select

from bot.models import Alert, Incident, IncidentStatus
from tests.conftest import WEBHOOK_TOKEN, RunningBot, wait_for
from tests.fakes.processes import start_alertmanager
from tests.fakes.slack import FakeSlack


def _config(bot: RunningBot) -> str:
    return f"""
route:
  receiver: oncall-bot
  group_by: [alertname, team]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: oncall-bot
    webhook_configs:
      - url: {bot.url}/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {WEBHOOK_TOKEN}
"""


def _fire(alertmanager_url: str, *instances: str, resolve: bool = False) -> None:
    now = datetime.now(timezone.utc)
    alerts = [{
        "labels": {"alertname": "DatabaseConnectionExhausted", "severity": "critical", "team": "payments",
                   "namespace": "prod", "service": "db", "instance": instance},
        "annotations": {"summary": "DB接続プールが枯渇しています", "description": "pool > 90% for 5m"},
        "startsAt": (now - timedelta(minutes=5)).isoformat(),
        "generatorURL": "http://prometheus.example.com/graph",
        **({"endsAt": now.isoformat()} if resolve else {}),
    } for instance in instances]
    httpx.post(f"{alertmanager_url}/api/v2/alerts", json=alerts, timeout=5).raise_for_status()


def _incidents(bot: RunningBot) -> list[Incident]:
    with bot.services.db.session() as session:
        return list(session.scalars(select(Incident)))


def _alerts(bot: RunningBot) -> list[Alert]:
    with bot.services.db.session() as session:
        return list(session.scalars(select(Alert)))


def test_real_alertmanager_opens_updates_and_resolves_one_incident(bot: RunningBot, slack: FakeSlack, tmp_path) -> None:
    # Two unclustered Alertmanagers with the same alerts: the HA-duplicate case for real.
    managers = [start_alertmanager(_config(bot), tmp_path / f"am{i}") for i in range(2)]
    try:
        for manager in managers:
            _fire(manager.url, "db-1")
        incident = wait_for(lambda: (rows := _incidents(bot)) and rows[0].card_ts and rows[0], timeout=30,
                            what="the incident card from Alertmanager's webhook")
        assert incident.alertname == "DatabaseConnectionExhausted" and incident.severity == "P1"
        assert incident.labels["team"] == "payments"

        for manager in managers:
            _fire(manager.url, "db-1", "db-2")
        wait_for(lambda: len(_alerts(bot)) == 2, timeout=30, what="the second alert to join the incident")

        for manager in managers:
            _fire(manager.url, "db-1", "db-2", resolve=True)
        wait_for(lambda: _incidents(bot)[0].status == IncidentStatus.RESOLVED, timeout=30,
                 what="Alertmanager's resolved notification")
        assert len(_incidents(bot)) == 1
        assert len(slack.calls_to("conversations.create")) == 1
        def card() -> str:
            return str(next(m.blocks for m in slack.messages(incident.channel_id) if m.ts == incident.card_ts))

        wait_for(lambda: "RESOLVED" in card(), timeout=10, what="the card to show resolved")
        assert "DB接続プールが枯渇しています" in card() and "db-2" in card()
    finally:
        for manager in managers:
            manager.stop()
