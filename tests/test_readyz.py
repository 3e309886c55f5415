"""/readyz is read by anyone who reaches the port (security review, issue 10 item 7): it says what is
wrong in words and names the setting to check; hosts, ports, users and drivers' messages go to the
log only, at error level. Only the database makes the bot not ready (503): without Slack it still
takes webhooks into the durable outbox, without Redis it coordinates through the database
(issue 13 §2), so those are warnings of a ready, "degraded" bot."""

from __future__ import annotations

import logging

import httpx
import pytest

from commands.health import REDIS_DOWN
from tests.conftest import RunningBot, free_port, make_settings, start_bot
from tests.fakes.slack import FakeSlack

# What a driver's message gives away: none of it may reach the JSON.
LEAKS = ("127.0.0.1", "localhost", "nobody", "secret", "nothing", "psycopg", "OperationalError", "redis.",
         "ConnectionError", "refused", "Connect call failed", "Errno", "aiohttp", "ClientConnector", "sqlite",
         "no such table", "Background on this error")


def _assert_no_details(text: str, *ports: int) -> None:
    leaked = [word for word in (*LEAKS, *map(str, ports)) if word.lower() in text.lower()]
    assert leaked == [], f"/readyz shows {leaked}: {text}"


def test_unreachable_database_and_redis_are_named_without_hosts_or_driver_errors(
        slack: FakeSlack, running: list[RunningBot], caplog: pytest.LogCaptureFixture) -> None:
    db_port, redis_port = free_port(), free_port()  # nothing listens on either
    settings = make_settings(f"postgresql://nobody:secret@127.0.0.1:{db_port}/nothing", slack,
                             redis_url=f"redis://127.0.0.1:{redis_port}/0")
    bot = start_bot(settings, migrate=False)  # the database is down from the start: nothing to migrate
    running.append(bot)
    with caplog.at_level(logging.ERROR):
        reply = httpx.get(f"{bot.url}/readyz", timeout=20)
    assert reply.status_code == 503, reply.text
    assert reply.json()["status"] == "not ready"
    problems, warnings = reply.json()["problems"], reply.json()["warnings"]
    assert [p.split(":")[0] for p in problems] == ["database unreachable"] and "DATABASE_URL" in problems[0]
    assert [w.split(":")[0] for w in warnings] == ["redis unreachable"] and "REDIS_URL" in warnings[0]
    assert reply.json()["redis"] == REDIS_DOWN
    _assert_no_details(reply.text, db_port, redis_port)
    # ... and the log has what an operator needs
    logged = {(r.name, r.getMessage()) for r in caplog.records if r.levelno == logging.ERROR}
    assert any(name == "commands.health" and "database" in m and "OperationalError" in m and str(db_port) in m
               for name, m in logged), logged
    assert any(name == "integrations.redis_store" and "ConnectionError" in m and str(redis_port) in m
               and "check REDIS_URL" in m for name, m in logged), logged


def test_unreachable_redis_alone_is_a_ready_degraded_bot_named_without_its_address(
        slack: FakeSlack, running: list[RunningBot], tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    bot = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack, redis_url=f"redis://127.0.0.1:{port}/0"))
    running.append(bot)
    reply = httpx.get(f"{bot.url}/readyz", timeout=20)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["status"], reply.json()["problems"], reply.json()["redis"]) == ("degraded", [], REDIS_DOWN)
    assert reply.json()["warnings"] == [
        "redis unreachable: check REDIS_URL and that Redis is up (the log has the details); until it answers, "
        "replicas coordinate through the database and Slack rate limits are per replica"]
    _assert_no_details(reply.text, port)


def test_a_database_without_the_bots_tables_is_503_not_500(
        slack: FakeSlack, running: list[RunningBot], tmp_path) -> None:  # type: ignore[no-untyped-def]
    bot = start_bot(make_settings(f"sqlite:///{tmp_path / 'empty.db'}", slack), migrate=False)
    running.append(bot)
    reply = httpx.get(f"{bot.url}/readyz", timeout=20)
    assert reply.status_code == 503, reply.text
    (problem,) = reply.json()["problems"]
    assert problem.startswith("database cannot be read") and "migrations" in problem
    _assert_no_details(reply.text)


def test_unreachable_slack_is_a_ready_degraded_bot_named_without_its_address(
        tmp_path, slack: FakeSlack, running: list[RunningBot],  # type: ignore[no-untyped-def]
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack,
                             slack_api_url=f"http://127.0.0.1:{port}/api/")
    with caplog.at_level(logging.ERROR, logger="commands.health"):
        bot = start_bot(settings)
        running.append(bot)
        reply = httpx.get(f"{bot.url}/readyz", timeout=20)
    # Webhooks still go into the durable outbox: ready, and it says why the work waits.
    assert reply.status_code == 200, reply.text
    assert (reply.json()["status"], reply.json()["problems"]) == ("degraded", [])
    (warning,) = reply.json()["warnings"]
    assert warning.startswith("Slack unreachable") and "SLACK_API_URL" in warning and "outbox" in warning
    _assert_no_details(reply.text, port)
    assert any(str(port) in r.getMessage() for r in caplog.records if r.name == "commands.health")
