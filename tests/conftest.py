"""Shared fixtures: databases (SQLite and PostgreSQL), Redis, the Slack fake and a running bot."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
import uvicorn

from bot.config import OncallConfig, Settings
from bot.db import Database
from bot.models import Incident
from commands.app import Bot, build, create_app

if TYPE_CHECKING:
    from tests.fakes.pagerduty import FakePagerDuty
    from tests.fakes.slack import FakeSlack

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WEBHOOK_TOKEN = "am-token-for-tests"
SIGNING_SECRET = "signing-secret-for-tests"

# Bolt switches to OAuth mode when these are set (platform.md §0 #11); proxies would
# send our loopback traffic elsewhere (#12).
for _var in ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def service_unavailable(what: str, fix: str) -> None:
    """Fail under CI (the services must be there), skip with the reason elsewhere."""
    message = f"{what} is not reachable: {fix}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeClock:
    """Real time plus an offset that tests move forward (reopen windows, deadlines)
    without sleeping; time keeps flowing so retries and pacing still happen."""

    def __init__(self, offset: timedelta = timedelta()) -> None:
        self.offset = offset
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.offset += timedelta(**delta)


def _postgres_database() -> Iterator[str]:
    name = f"oncall_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at {PG_ADMIN_URL} ({exc.__class__.__name__})",
                            "start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """Every test that takes this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'oncall.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """The bot's database, migrated, on each of SQLite and PostgreSQL."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} ({exc.__class__.__name__})",
                            "start it: redis-server --daemonize yes --bind 127.0.0.1 --port 6379")
    return REDIS_URL


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    from tests.fakes.slack import FakeSlack

    fake = FakeSlack()
    fake.start()
    for user, email in (("U0ALICE", "alice@example.com"), ("U0BOB", "bob@example.com"),
                        ("U0CAROL", "carol@example.com")):
        fake.add_user(user, email, user.lower())
    fake.add_usergroup("S0SRE", ["U0BOB", "U0CAROL"])
    try:
        yield fake
    finally:
        fake.stop()


ROUTING_KEY = "R0UTINGKEY0FTHEPAYMENTSSERVICE00"  # the payments service's PagerDuty integration


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDuty]:
    """PagerDuty with one service (ROUTING_KEY) whose policy has one level: Bob. (Tests of
    escalation levels have a fixture of their own.)"""
    from tests.fakes.pagerduty import FakePagerDuty

    with FakePagerDuty() as fake:
        fake.add_user("PBOB", "Bob", "bob@example.com")
        fake.add_escalation_policy("PEP1", [["PBOB"]])
        fake.add_service("PSVC1", ROUTING_KEY, "PEP1")
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def upcoming(now: datetime, weekday: int, hour: int) -> datetime:
    """The first `weekday` (0 = Monday) at `hour`:00 UTC strictly after `now`: tests derive
    their dates from the clock, so they pass on any date."""
    day = now.astimezone(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    day += timedelta(days=(weekday - day.weekday()) % 7)
    return day if day > now else day + timedelta(days=7)


def make_settings(database_url: str, slack: FakeSlack, config: OncallConfig | None = None,
                  **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        slack_bot_token=slack.token, slack_signing_secret=SIGNING_SECRET, slack_api_url=slack.base_url,
        database_url=database_url, alertmanager_webhook_token=WEBHOOK_TOKEN,
        # Tests jump the clock by minutes or hours; a real job is never "mid-call" for that long,
        # so a lease longer than any jump keeps a jump from making a running job look abandoned.
        # (tests/test_crash_safety.py kills real processes with a 1 s lease.)
        job_lease_seconds=3600.0,
        # The fake Slack has no rate limits, and tests open incidents by the dozen in seconds;
        # the limiter's own tests (tests/test_redis_replicas.py) turn it on.
        slack_rate_limit=False,
        config=config or OncallConfig.model_validate({
            "channels": {"announce": "C0INCIDENTS"},
            "responders": [{"match": {"team": "payments"}, "invite": ["U0ALICE", "S0SRE", "nobody@example.com"]}],
        }),
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class RunningBot:
    url: str
    services: Bot
    server: uvicorn.Server
    thread: threading.Thread

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def post_alerts(self, payload: dict, token: str = WEBHOOK_TOKEN) -> httpx.Response:
        with self.client() as http:
            return http.post("/alertmanager", json=payload, headers={"Authorization": f"Bearer {token}"})

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_bot(settings: Settings, clock=None, *, migrate: bool = True) -> RunningBot:  # type: ignore[no-untyped-def]
    services = build(settings, migrate=migrate, **({"clock": clock} if clock else {}))
    services.outbox.poll_seconds = 0.05
    port = free_port()
    config = uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bot", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the bot did not start within 15 s; see the log above")
        time.sleep(0.02)
    return RunningBot(url=f"http://127.0.0.1:{port}", services=services, server=server, thread=thread)


@pytest.fixture
def running() -> Iterator[list[RunningBot]]:
    """Bots a test starts itself (append them): stopped and their databases closed at the end."""
    bots: list[RunningBot] = []
    yield bots
    for bot in bots:
        bot.stop()
        bot.services.db.dispose()


@pytest.fixture
def bot(database_url: str, slack: FakeSlack, clock: FakeClock) -> Iterator[RunningBot]:
    running = start_bot(make_settings(database_url, slack), clock=clock)
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


def fire_side_by_side(replicas: list[Any], threads_each: int = 2) -> None:
    """Every replica's timer runner firing due timers at the same moment, `threads_each` threads
    apiece, until none is left: what two bot processes do after a restart."""
    barrier = threading.Barrier(len(replicas) * threads_each)

    def race(replica: Any) -> None:
        barrier.wait()
        while replica.timers.fire_due():
            pass

    threads = [threading.Thread(target=race, args=(r,)) for r in replicas * threads_each]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def open_with_card(bot: RunningBot, payload: dict[str, Any]) -> Incident:
    """Send an Alertmanager notification and wait until the incident's card is in Slack."""
    reply = bot.post_alerts(payload)
    assert reply.status_code == 200, reply.text
    incident_id = reply.json()["incident_id"]

    def posted() -> Incident | None:
        with bot.services.db.read() as session:
            row = session.get(Incident, incident_id)
            return row if row and row.card_ts else None

    found: Incident = wait_for(posted, what="the incident card")
    return found
