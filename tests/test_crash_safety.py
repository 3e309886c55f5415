"""The bot killed (SIGKILL) at each step of opening an incident, mid-call included, then
restarted: one channel, one card, one announcement, and the card still follows the incident.

The bot runs as its own OS process (`oncall-bot serve`) against the Slack fake of this test
process; the fake holds the chosen call (Slack has done the work, the answer is not sent yet,
as when a crash or a timeout loses it) while the test kills the bot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.alerts import group, resolved
from tests.conftest import SIGNING_SECRET, WEBHOOK_TOKEN, free_port, wait_for
from tests.fakes.slack import FakeSlack

ANNOUNCE = "C0INCIDENTS"
CONFIG = {"channels": {"announce": ANNOUNCE},
          "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "S0SRE"]}]}


@dataclass
class BotProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def post_alerts(self, payload: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}/alertmanager", json=payload, timeout=10,
                          headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_process(database_url: str, slack: FakeSlack, tmp_path: Path, n: int,
                  lease_seconds: float | None = 1.0, extra_env: dict[str, str] | None = None) -> BotProcess:
    """`oncall-bot serve` as its own process; `lease_seconds` short so that a restart resumes at
    once (None: the production default); `extra_env` adds variables (KUBECONFIG, RUNBOOKS_PATH, ...)."""
    config = tmp_path / "oncall.json"  # JSON is YAML
    config.write_text(json.dumps(CONFIG))
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": slack.base_url, "DATABASE_URL": database_url,
           "ALERTMANAGER_WEBHOOK_TOKEN": WEBHOOK_TOKEN, "ONCALL_CONFIG": str(config),
           "LOG_LEVEL": "INFO", **(extra_env or {})}
    if lease_seconds is not None:
        env["ONCALL_JOB_LEASE_SECONDS"] = str(lease_seconds)
    log = tmp_path / f"bot-{n}.log"
    process = subprocess.Popen([sys.executable, "-m", "commands.cli", "serve", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    bot = BotProcess(url=f"http://127.0.0.1:{port}", process=process, log=log)

    def alive() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the bot exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{bot.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(alive, timeout=30, what="the bot process to serve")
    return bot


@pytest.fixture
def processes(database_url: str, slack: FakeSlack, tmp_path: Path) -> Iterator[Callable[[], BotProcess]]:
    started: list[BotProcess] = []

    def start() -> BotProcess:
        started.append(start_process(database_url, slack, tmp_path, len(started)))
        return started[-1]

    yield start
    for bot in started:
        bot.stop()


def _in_incident_channel(args: dict[str, Any]) -> bool:
    return args.get("channel") != ANNOUNCE


def _in_announce_channel(args: dict[str, Any]) -> bool:
    return args.get("channel") == ANNOUNCE


def _runbook(args: dict[str, Any]) -> bool:
    return ((args.get("metadata") or {}).get("event_payload") or {}).get("kind") == "runbook"


# (method, when, which call): the step of opening an incident at which the bot dies.
STEPS = {
    "after-the-webhook-200": ("conversations.create", "before", None),
    "creating-the-channel": ("conversations.create", "after", None),
    "setting-the-topic": ("conversations.setTopic", "after", None),
    "inviting-responders": ("conversations.invite", "after", None),
    "posting-the-card": ("chat.postMessage", "after", _in_incident_channel),
    "posting-the-announcement": ("chat.postMessage", "after", _in_announce_channel),
    "posting-the-runbook": ("chat.postMessage", "after", _runbook),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_killed_at_each_step_of_opening_an_incident_nothing_is_doubled_or_lost(
        step: str, processes: Callable[[], BotProcess], slack: FakeSlack) -> None:
    method, when, match = STEPS[step]
    hold = slack.hold(method, when=when, **({"match": match} if match else {}))
    first = processes()
    payload = group()
    assert first.post_alerts(payload).status_code == 200
    assert hold.reached.wait(timeout=20), f"the bot never called {method}"
    first.kill()
    hold.release()  # the answer goes nowhere: the bot that asked is dead

    second = processes()
    wait_for(lambda: len(slack.tagged("card")) == 1 and len(slack.tagged("announcement")) == 1,
             timeout=30, what="the card and the announcement after the restart")
    channels = [c for c in slack.channels.values() if c.name.startswith("inc-")]
    assert [c.name for c in channels] == [channels[0].name] and not channels[0].name.endswith("-2")
    channel = channels[0]
    wait_for(lambda: {"U0ALICE", "U0BOB", "U0CAROL"} <= channel.members, what="the responders invited")
    assert channel.topic.startswith("P1 · ")
    (card_channel, card), = slack.tagged("card")
    (announce_channel, note), = slack.tagged("announcement")
    assert (card_channel, announce_channel) == (channel.id, ANNOUNCE)
    assert f"<#{channel.id}>" in json.dumps(note.blocks)
    wait_for(lambda: slack.tagged("runbook"), what="the runbook posted")
    parts = [m.metadata["event_payload"]["part"] for _, m in slack.tagged("runbook")]  # type: ignore[index]
    assert len(parts) == len(set(parts)), f"a runbook message was posted twice: {parts}"

    # The one card is the live one: it follows the incident after the restart.
    assert second.post_alerts(resolved(payload)).json()["outcome"] == "resolved"
    wait_for(lambda: "RESOLVED" in json.dumps(card.blocks), what="the card to show the incident resolved")
    assert len(slack.tagged("card")) == 1 and len(slack.tagged("announcement")) == 1
    assert len([c for c in slack.channels.values() if c.name.startswith("inc-")]) == 1
