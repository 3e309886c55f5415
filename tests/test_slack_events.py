"""/slack/events: Bolt checks every signature; slash commands answer within Slack's 3 seconds."""

from __future__ import annotations

import time

import httpx

from tests.conftest import RunningBot
from tests.slack_requests import post_to_slack_events, signed_headers, slash_command


def test_unsigned_stale_or_badly_signed_requests_are_refused(bot: RunningBot) -> None:
    body = slash_command("/incident", "status")
    unsigned = httpx.post(f"{bot.url}/slack/events", content=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401
    assert post_to_slack_events(bot.url, body, secret="wrong-secret").status_code == 401
    assert post_to_slack_events(bot.url, body, timestamp=int(time.time()) - 600).status_code == 401


def test_signed_slash_command_is_answered(bot: RunningBot) -> None:
    started = time.monotonic()
    reply = post_to_slack_events(bot.url, slash_command("/runbook", "help"))
    assert reply.status_code == 200
    assert time.monotonic() - started < 3
    assert "/runbook" in reply.text


def test_url_verification_challenge(bot: RunningBot) -> None:
    body = b'{"token":"x","challenge":"c-123","type":"url_verification"}'
    headers = {**signed_headers(body), "Content-Type": "application/json"}
    reply = httpx.post(f"{bot.url}/slack/events", content=body, headers=headers)
    assert reply.status_code == 200 and reply.json() == {"challenge": "c-123"}
