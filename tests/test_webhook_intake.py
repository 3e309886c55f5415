"""POST /alertmanager: authentication, limits and validation; nothing written on any error."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from bot.models import Incident, Job
from tests.alerts import alert, group
from tests.conftest import WEBHOOK_TOKEN, RunningBot


def _counts(bot: RunningBot) -> tuple[int, int]:
    with bot.services.db.session() as session:
        incidents = session.scalar(select(func.count()).select_from(Incident))
        jobs = session.scalar(select(func.count()).select_from(Job))
    return incidents, jobs


def test_wrong_or_missing_token_is_401_and_writes_nothing(bot: RunningBot) -> None:
    assert bot.post_alerts(group(), token="wrong").status_code == 401
    with bot.client() as http:
        response = http.post("/alertmanager", json=group())
    assert response.status_code == 401
    assert "ALERTMANAGER_WEBHOOK_TOKEN" in response.json()["error"]
    assert _counts(bot) == (0, 0)


def test_invalid_json_is_400_naming_the_problem(bot: RunningBot) -> None:
    with bot.client() as http:
        response = http.post("/alertmanager", content=b"{not json", headers={
            "Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    assert _counts(bot) == (0, 0)


def test_schema_errors_are_422_naming_the_field(bot: RunningBot) -> None:
    payload = group()
    del payload["alerts"][0]["fingerprint"]
    response = bot.post_alerts(payload)
    assert response.status_code == 422
    assert response.json()["error"].startswith("alerts.0.fingerprint")

    wrong_version = {**group(), "version": "3"}
    response = bot.post_alerts(wrong_version)
    assert response.status_code == 422 and response.json()["error"].startswith("version")

    no_alertname = group(alert())
    del no_alertname["alerts"][0]["labels"]["alertname"]
    response = bot.post_alerts(no_alertname)
    assert response.status_code == 422 and "alertname" in response.json()["error"]
    assert _counts(bot) == (0, 0)


def test_oversize_body_is_413(bot: RunningBot) -> None:
    payload = group(*(alert(labels={"pod": f"api-{i}"}, annotations={"description": "x" * 5000})
                      for i in range(300)))
    assert len(json.dumps(payload)) > bot.services.settings.max_webhook_bytes
    response = bot.post_alerts(payload)
    assert response.status_code == 413
    assert "max_alerts" in response.json()["error"]
    assert _counts(bot) == (0, 0)


def test_unknown_fields_and_newer_alertmanager_fields_are_accepted(bot: RunningBot) -> None:
    payload = group(notification_reason="first notification", routeLabels={"team": "payments"},
                    somethingNew={"x": 1})
    response = bot.post_alerts(payload)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "created"


def test_resolved_news_of_an_unknown_group_is_ignored(bot: RunningBot) -> None:
    response = bot.post_alerts(group(alert(status="resolved")))
    assert response.status_code == 200
    assert response.json() == {"incident_id": None, "outcome": "ignored"}
    assert _counts(bot) == (0, 0)


def _metric(text: str, name: str) -> float:
    line = next((line for line in text.splitlines() if line.startswith(name + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def test_health_ready_and_metrics(bot: RunningBot) -> None:
    with bot.client() as http:
        before = _metric(http.get("/metrics").text, 'oncall_webhooks_total{outcome="created"}')
        bot.post_alerts(group())
        assert http.get("/healthz").json() == {"status": "alive"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        text = http.get("/metrics").text
    assert _metric(text, 'oncall_webhooks_total{outcome="created"}') == before + 1
    assert "oncall_jobs_pending" in text and "oncall_slack_calls_total" in text


def test_readyz_checks_redis_when_configured(database_url: str, slack, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import free_port, make_settings, start_bot

    for url, expected in ((redis_url, 200), (f"redis://127.0.0.1:{free_port()}/0", 503)):
        running = start_bot(make_settings(database_url, slack, redis_url=url))
        try:
            with running.client() as http:
                reply = http.get("/readyz")
            assert reply.status_code == expected, reply.text
            if expected == 503:
                assert reply.json()["problems"][0].startswith("redis unreachable")
        finally:
            running.stop()
            running.services.db.dispose()


def test_database_failure_answers_503_so_alertmanager_retries(slack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_settings, start_bot

    path = tmp_path / "oncall.db"
    running = start_bot(make_settings(f"sqlite:///{path}", slack))
    try:
        running.services.db.dispose()
        for leftover in tmp_path.glob("oncall.db*"):
            leftover.unlink()  # the database is gone: every write now fails
        reply = running.post_alerts(group())
        assert reply.status_code == 503
        assert "retry later" in reply.json()["error"]
    finally:
        running.stop()
