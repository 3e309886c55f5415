"""POST /alertmanager: authentication, limits and validation; nothing written on any error."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from sqlalchemy import func, select

from bot.models import Alert, Incident, Job
from integrations.alertmanager import (
    CUT_MARKER,
    MAX_ALERTS,
    MAX_ANNOTATION_CHARS,
    MAX_COUNT,
    MAX_ENTRIES,
    MAX_LABEL_CHARS,
)
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


def test_oversize_body_is_413_and_the_log_names_the_group(bot: RunningBot, caplog: pytest.LogCaptureFixture) -> None:
    payload = group(*(alert(labels={"pod": f"api-{i}"}, annotations={"description": "x" * 5000})
                      for i in range(2200)), group_key='{}:{alertname="TooMany"}')
    assert len(json.dumps(payload)) > bot.services.settings.max_webhook_bytes
    with caplog.at_level(logging.ERROR, logger="commands.alertmanager"):
        response = bot.post_alerts(payload)
    assert response.status_code == 413
    assert "max_alerts" in response.json()["error"]
    assert _counts(bot) == (0, 0)
    logged = next(r for r in caplog.records if "over the body limit" in r.getMessage())
    assert logged.group_key == '{}:{alertname="TooMany"}' and logged.receiver == "oncall-bot"  # type: ignore[attr-defined]


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

    # Redis down is no reason to stop taking webhooks: ready, "degraded", database-only (issue 13 §2).
    for url, expected in ((redis_url, "ok"), (f"redis://127.0.0.1:{free_port()}/0", "unreachable")):
        running = start_bot(make_settings(database_url, slack, redis_url=url))
        try:
            with running.client() as http:
                reply = http.get("/readyz")
            assert reply.status_code == 200 and reply.json()["redis"].startswith(expected), reply.text
            if expected == "unreachable":
                assert reply.json()["warnings"][0].startswith("redis unreachable")
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


# -- No alert group rejected for its content (README "Limits") -------------------------------------

def _post_raw(bot: RunningBot, body: bytes) -> httpx.Response:
    with bot.client() as http:
        return http.post("/alertmanager", content=body, headers={
            "Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"})


def _stored(bot: RunningBot, incident_id: int) -> tuple[Incident, list[Alert]]:
    with bot.services.db.session() as session:
        incident = session.get(Incident, incident_id)
        alerts = list(session.scalars(select(Alert).where(Alert.incident_id == incident_id).order_by(Alert.id)))
        assert incident is not None
        session.expunge_all()
    return incident, alerts


def _cut(text: str, limit: int) -> str:
    return text[:limit] + CUT_MARKER.format(len(text) - limit)


def test_long_label_values_are_kept_up_to_the_limit_and_cut_beyond(bot: RunningBot) -> None:
    long = {"alertname": "A" * 300, "service": "s" * 300, "namespace": "n" * 300, "huge": "h" * 10_000}
    many = {f"label{i}": "v" for i in range(MAX_ENTRIES + 40)}
    payload = group(alert(labels={**long, **many}))
    sent = len(payload["alerts"][0]["labels"])
    response = bot.post_alerts(payload)
    assert response.status_code == 200, response.text
    incident, [stored] = _stored(bot, response.json()["incident_id"])
    assert (incident.alertname, incident.service, incident.namespace) == ("A" * 300, "s" * 300, "n" * 300)
    assert stored.alertname == "A" * 300
    assert stored.labels["huge"] == _cut("h" * 10_000, MAX_LABEL_CHARS) == incident.labels["huge"]
    assert len(stored.labels) == MAX_ENTRIES + 1 and stored.labels[f"…[cut {sent - MAX_ENTRIES} entries]"] == ""


def test_nul_bytes_and_lone_surrogates_are_replaced(bot: RunningBot) -> None:
    payload = group(alert(labels={"pod": "api\x00-1", "service": "pay\x00"},
                          annotations={"summary": "down\x00now", "description": "bad \ud800 half"}))
    body = json.dumps(payload).encode()  # ASCII with \u0000 and \ud800 escapes, as a JSON encoder may send
    assert b"\\u0000" in body and b"\\ud800" in body
    response = _post_raw(bot, body)
    assert response.status_code == 200, response.text
    incident, [stored] = _stored(bot, response.json()["incident_id"])
    assert incident.title == "down\ufffdnow" and incident.service == "pay\ufffd"
    assert stored.labels["pod"] == "api\ufffd-1"
    assert stored.annotations["description"] == "bad \ufffd half"


@pytest.mark.parametrize("count", ["1099511627776", str(10**30), "1e30", "-5"])
def test_truncated_alerts_is_clamped(bot: RunningBot, count: str) -> None:
    body = json.dumps(group()).replace('"truncatedAlerts": 0', f'"truncatedAlerts": {count}').encode()
    assert count.encode() in body
    response = _post_raw(bot, body)
    assert response.status_code == 200, response.text
    incident, _ = _stored(bot, response.json()["incident_id"])
    assert incident.truncated_alerts == (0 if count == "-5" else MAX_COUNT)


def test_a_20000_character_annotation_is_cut_with_the_marker(bot: RunningBot) -> None:
    description = "d" * 20_000
    response = bot.post_alerts(group(alert(annotations={"description": description})))
    assert response.status_code == 200, response.text
    incident, [stored] = _stored(bot, response.json()["incident_id"])
    expected = _cut(description, MAX_ANNOTATION_CHARS)
    assert expected.endswith("…[cut 3616 chars]")
    assert stored.annotations["description"] == expected == incident.annotations["description"]


def test_10000_alerts_keep_the_firing_ones_and_count_the_rest(bot: RunningBot) -> None:
    resolved_first = [alert(status="resolved", labels={"pod": f"old-{i}"}) for i in range(500)]
    firing = [alert(labels={"pod": f"api-{i}"}) for i in range(9_500)]
    payload = group(*resolved_first, *firing, truncatedAlerts=7)
    assert len(json.dumps(payload)) > 4_000_000
    started = time.monotonic()
    response = bot.post_alerts(payload)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert elapsed < 20, f"10,000 alerts took {elapsed:.1f}s"
    incident, stored = _stored(bot, response.json()["incident_id"])
    assert len(stored) == MAX_ALERTS and all(a.status == "firing" for a in stored)
    assert [a.labels["pod"] for a in stored[:2]] == ["api-0", "api-1"]
    assert incident.truncated_alerts == 7 + 10_000 - MAX_ALERTS


def test_long_receiver_and_group_key_still_find_their_incident(bot: RunningBot) -> None:
    payload = group(group_key="{}:{alertname=\"" + "é" * 3000 + "\"}", receiver="r" * 400)
    first = bot.post_alerts(payload)
    assert first.status_code == 200 and first.json()["outcome"] == "created", first.text
    again = bot.post_alerts(group(alert(labels={"pod": "api-2"}), group_key=payload["groupKey"], receiver="r" * 400))
    assert again.json() == {"incident_id": first.json()["incident_id"], "outcome": "updated"}
    other = bot.post_alerts(group(group_key=payload["groupKey"] + "x", receiver="r" * 400))
    assert other.json()["outcome"] == "created"  # a different key: a prefix alone must not merge groups


def test_times_without_a_zone_or_out_of_range_are_stored_as_utc(bot: RunningBot) -> None:
    payload = group()
    payload["alerts"][0]["startsAt"] = "0001-01-01T00:00:00+05:00"  # before year 1 in UTC
    response = bot.post_alerts(payload)
    assert response.status_code == 200, response.text
    resolved = group(alert(status="resolved"))
    resolved["alerts"][0]["endsAt"] = resolved["alerts"][0]["endsAt"][:19]  # no zone
    assert bot.post_alerts(resolved).status_code == 200
    _, [stored] = _stored(bot, response.json()["incident_id"])
    assert stored.starts_at.tzinfo is not None and stored.ends_at is not None


@pytest.mark.parametrize("body, status, error", [
    (b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "nested too deeply"),
    (b'{"version": "4", "truncatedAlerts": 1' + b"0" * 5000 + b"}", 400, "not valid JSON"),
    (json.dumps({**group(), "truncatedAlerts": "many"}).encode(), 422, "truncatedAlerts"),
    (json.dumps({**group(), "truncatedAlerts": 1.5}).encode(), 422, "truncatedAlerts"),
    (json.dumps(group(alert(labels={"pod": 3}))).encode(), 422, ".pod: Input should be a valid string"),  # type: ignore[dict-item]
])
def test_malformed_json_of_any_depth_or_number_size_is_400_or_422(bot: RunningBot, body: bytes, status: int,
                                                                   error: str) -> None:
    response = _post_raw(bot, body)
    assert response.status_code == status, response.text
    assert error in response.json()["error"]
    assert _counts(bot) == (0, 0)
