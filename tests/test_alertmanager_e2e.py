"""End to end with the real Alertmanager: it sends the running bot real webhooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
    now = datetime.now(UTC)
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


def _post_alerts(alertmanager_url: str, alerts: list[dict], batch: int = 1_000) -> None:
    for start in range(0, len(alerts), batch):
        httpx.post(f"{alertmanager_url}/api/v2/alerts", json=alerts[start:start + batch], timeout=30).raise_for_status()


def _firing(alertname: str, instance: str, description: str) -> dict:
    return {
        "labels": {"alertname": alertname, "severity": "warning", "team": "payments", "namespace": "prod",
                   "service": "api", "instance": instance},
        "annotations": {"summary": f"{alertname} on api", "description": description},
        "startsAt": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }


def test_real_alertmanager_delivers_a_huge_description_and_a_storm_of_5000_alerts(
        bot: RunningBot, slack: FakeSlack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from integrations.alertmanager import CUT_MARKER, MAX_ALERTS, MAX_ANNOTATION_CHARS

    manager = start_alertmanager(_config(bot), tmp_path / "am")
    try:
        description = "The pool is exhausted. " * 870  # 20,010 characters
        _post_alerts(manager.url, [_firing("HugeDescription", "db-1", description)])
        # Zero-padded instances: Alertmanager sorts by instance, so the first 1,000 stay the same.
        _post_alerts(manager.url, [_firing("AlertStorm", f"host-{i:04d}", "load high") for i in range(5_000)])

        def both() -> list[Incident] | None:
            rows = {i.alertname: i for i in _incidents(bot)}
            # Alertmanager may send the storm in parts as the batches arrive: wait for all 5,000.
            storm = rows.get("AlertStorm")
            done = "HugeDescription" in rows and storm and storm.truncated_alerts == 5_000 - MAX_ALERTS
            return [rows["HugeDescription"], rows["AlertStorm"]] if done else None

        huge, storm = wait_for(both, timeout=40, what="both incidents from Alertmanager's webhooks")
        assert huge.annotations["description"] == (
            description[:MAX_ANNOTATION_CHARS] + CUT_MARKER.format(len(description) - MAX_ANNOTATION_CHARS))
        assert sum(a.incident_id == storm.id for a in _alerts(bot)) == MAX_ALERTS
        wait_for(lambda: all(i.card_ts for i in _incidents(bot)), timeout=20, what="both incident cards in Slack")
    finally:
        manager.stop()
