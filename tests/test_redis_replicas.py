"""Replicas sharing Redis (issue 13 §2): a Slack delivery is acted on once whichever replica gets
it, N replicas together keep to Slack's rate limits, and with Redis gone the bot coordinates
through the database, says so on /readyz (still ready) and comes back by itself.

Real Redis on 127.0.0.1:6379 (each test under its own key prefix, deleted at the end), both
databases, the Slack fake (which records when each call arrived); Redis is cut with a TCP relay
(tests/fakes/tcp_proxy.py) or is a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from bot.models import SlackDelivery
from commands.health import REDIS_DOWN
from integrations.redis_store import RedisStore
from integrations.slack import SlackClient, SlackError, make_web_client
from integrations.slack_rate import CHANNEL_BURST, SlackRateLimiter
from tests.conftest import RunningBot, free_port, make_settings, start_bot, wait_for
from tests.fakes.slack import FakeSlack
from tests.fakes.tcp_proxy import TcpProxy
from tests.slack_requests import signed_headers

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """This test's own Redis keys; only they are deleted afterwards."""
    mine = f"test-{uuid.uuid4().hex[:12]}:"
    yield mine
    client = redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{mine}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(port).start()
    yield proxy
    proxy.stop()


def replicas(database_url: str, slack: FakeSlack, running: list[RunningBot], redis_url: str,
             prefix: str) -> tuple[RunningBot, RunningBot]:
    """Two bots sharing one database and one Redis, as two pods would."""
    settings = make_settings(database_url, slack, redis_url=redis_url, redis_key_prefix=prefix, slack_rate_limit=True)
    pair = (start_bot(settings), start_bot(settings))
    running.extend(pair)
    return pair


def mention(slack: FakeSlack) -> dict[str, Any]:
    """An app_mention Events API delivery (JSON) for a message that is in the fake's channel."""
    said = slack.post_as("C0INCIDENTS", "U0ALICE", "<@UBOT> help")
    return {"token": "legacy", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}", "event_time": int(time.time()),
            "authorizations": [{"team_id": "T0001", "user_id": "UBOT", "is_bot": True}],
            "event": {"type": "app_mention", "user": "U0ALICE", "text": "<@UBOT> help", "ts": said.ts,
                      "channel": "C0INCIDENTS", "event_ts": said.ts}}


def deliver(bots: list[RunningBot], envelope: dict[str, Any]) -> None:
    """The same signed delivery to each bot at the same moment, the later ones as Slack's retries."""
    body = json.dumps(envelope).encode()
    barrier, statuses = threading.Barrier(len(bots)), []

    def send(bot: RunningBot, retry: int) -> None:
        headers = {**signed_headers(body), "Content-Type": "application/json"}
        if retry:
            headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
        barrier.wait()
        statuses.append(httpx.post(f"{bot.url}/slack/events", content=body, headers=headers, timeout=10).status_code)

    threads = [threading.Thread(target=send, args=(bot, retry)) for retry, bot in enumerate(bots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert statuses == [200] * len(bots)


def answers(slack: FakeSlack, envelope: dict[str, Any]) -> int:
    """How often the bot answered this mention (its help, in the mention's thread)."""
    ts = envelope["event"]["ts"]
    return sum(1 for c in slack.calls_to("chat.postMessage") if c.args.get("thread_ts") == ts and c.response.get("ok"))


def acted_once(slack: FakeSlack, bots: list[RunningBot], envelope: dict[str, Any]) -> None:
    """Exactly one answer: the first waited for, then a later mention answered by every replica's
    turn (sent after the duplicates were acked), so a duplicate had its time to show."""
    wait_for(lambda: answers(slack, envelope) >= 1, what="the answer to the mention")
    sentinel = mention(slack)
    deliver(bots, sentinel)
    wait_for(lambda: answers(slack, sentinel) >= 1, what="the answer to the later mention")
    time.sleep(0.3)
    assert (answers(slack, envelope), answers(slack, sentinel)) == (1, 1)


def deliveries(bot: RunningBot) -> list[str]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(SlackDelivery.key)))


def readyz(bot: RunningBot) -> httpx.Response:
    return httpx.get(f"{bot.url}/readyz", timeout=10)


# -- (a) one delivery, two replicas ------------------------------------------------------------------

def test_one_event_delivered_to_two_replicas_is_acted_on_once_through_redis(
        database_url: str, slack: FakeSlack, running: list[RunningBot], redis_url: str, prefix: str) -> None:
    first, second = replicas(database_url, slack, running, redis_url, prefix)
    envelope = mention(slack)
    deliver([first, second], envelope)  # at once: the original to one, Slack's retry to the other
    deliver([second, first], envelope)  # and again, later: a replayed delivery
    acted_once(slack, [first, second], envelope)
    # Redis decided, not the database: the key is there, and no SlackDelivery row was written.
    with redis.from_url(redis_url) as direct:
        assert direct.exists(f"{prefix}slack:event:{envelope['event_id']}") == 1
    assert deliveries(first) == []
    reply = readyz(first)
    assert reply.status_code == 200 and reply.json()["redis"] == "ok", reply.text


# -- (b) Redis away, and back ------------------------------------------------------------------------

def test_redis_down_dedup_goes_through_the_database_and_readyz_says_so_until_it_returns(
        database_url: str, slack: FakeSlack, running: list[RunningBot], redis_url: str, prefix: str,
        redis_proxy: TcpProxy, caplog: pytest.LogCaptureFixture) -> None:
    first, second = replicas(database_url, slack, running, f"redis://127.0.0.1:{redis_proxy.port}/0", prefix)
    assert readyz(first).json()["redis"] == "ok"

    redis_proxy.cut()
    envelope = mention(slack)
    with caplog.at_level(logging.WARNING, logger="integrations.redis_store"):
        deliver([first, second], envelope)
        deliver([second, first], envelope)
        acted_once(slack, [first, second], envelope)
        assert f"event:{envelope['event_id']}" in deliveries(first)  # the database decided
        for bot in (first, second):
            reply = readyz(bot)
            assert reply.status_code == 200, reply.text
            assert (reply.json()["status"], reply.json()["redis"]) == ("degraded", REDIS_DOWN)
            assert any("REDIS_URL" in w for w in reply.json()["warnings"])
        down = [r for r in caplog.records if r.getMessage().startswith("Redis unreachable at")]
        assert len(down) == 2, [r.getMessage() for r in down]  # once per replica, not once per request
        assert "check REDIS_URL" in down[0].getMessage()

        redis_proxy.restore()
        for bot in (first, second):  # each retries within a few seconds, by itself
            wait_for(lambda bot=bot: readyz(bot).json()["redis"] == "ok", timeout=15, what="redis ok again")
        assert sum(r.getMessage().startswith("Redis reachable again") for r in caplog.records) == 2
    assert readyz(first).json()["status"] == "ready"
    later = mention(slack)  # and dedup is Redis's again
    deliver([first, second], later)
    acted_once(slack, [first, second], later)
    assert f"event:{later['event_id']}" not in deliveries(first)


# -- (c) Slack's rate limits, shared -----------------------------------------------------------------

def client(slack: FakeSlack, store: RedisStore) -> SlackClient:
    return SlackClient(make_web_client(slack.token, slack.base_url), limiter=SlackRateLimiter(store.take))


async def post_many(slack_client: SlackClient, channel: str, name: str, count: int) -> None:
    for n in range(count):
        await slack_client.post_message(channel, f"{name}-{n}")


def arrivals(slack: FakeSlack, channel: str) -> list[float]:
    return sorted(c.at for c in slack.calls_to("chat.postMessage") if c.args.get("channel") == channel)


async def two_replicas_post_then_create(slack: FakeSlack, stores: tuple[RedisStore, RedisStore], tag: str) -> float:
    """Replicas A and B post 10 messages each to one channel, at the same time; then A opens a
    Tier 2 bucket's burst of channels (20/min: 5 at once). The seconds B's next one is held back."""
    a, b = client(slack, stores[0]), client(slack, stores[1])
    await asyncio.gather(post_many(a, "C0INCIDENTS", "a", 10), post_many(b, "C0INCIDENTS", "b", 10))
    for n in range(5):
        await a.create_channel(f"{tag}-a-{n}")
    started = time.monotonic()
    await b.create_channel(f"{tag}-b")
    return time.monotonic() - started


def test_two_replicas_sharing_redis_post_about_one_message_a_second_to_a_channel(
        slack: FakeSlack, redis_url: str, prefix: str) -> None:
    async def run() -> float:
        stores = (RedisStore(redis_url, prefix=prefix), RedisStore(redis_url, prefix=prefix))
        try:
            return await two_replicas_post_then_create(slack, stores, "shared")
        finally:
            for store in stores:
                await store.aclose()

    held_back = asyncio.run(run())
    times = arrivals(slack, "C0INCIDENTS")
    assert len(times) == 20
    texts = [c.args["text"] for c in slack.calls_to("chat.postMessage")]
    assert sum(t.startswith("a-") for t in texts) == sum(t.startswith("b-") for t in texts) == 10  # both posted
    # A burst of CHANNEL_BURST, then one a second: the 20th ~17 s after the first (loaded machines
    # only stretch that). Any 5 s hold at most 5 + the burst (+1: a late arrival bunching up).
    assert times[-1] - times[0] >= (20 - CHANNEL_BURST) * 0.9, times
    assert max(sum(1 for t in times if start <= t < start + 5) for start in times) <= 5 + CHANNEL_BURST + 1
    assert held_back >= 2.0, held_back  # 3 s per channel after the burst, whichever replica asks


def test_with_redis_down_each_replica_limits_itself(slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    async def run() -> float:
        stores = (RedisStore(dead), RedisStore(dead))
        try:
            return await two_replicas_post_then_create(slack, stores, "local")
        finally:
            for store in stores:
                await store.aclose()

    with caplog.at_level(logging.WARNING, logger="integrations.slack_rate"):
        held_back = asyncio.run(run())
    calls = slack.calls_to("chat.postMessage")
    for name in ("a", "b"):  # each process alone: its burst, then one a second
        own = sorted(c.at for c in calls if c.args["text"].startswith(f"{name}-"))
        assert len(own) == 10 and own[-1] - own[0] >= (10 - CHANNEL_BURST) * 0.9, own
    times = arrivals(slack, "C0INCIDENTS")
    assert times[-1] - times[0] < (20 - CHANNEL_BURST) * 0.75, times  # not shared: faster than one bucket
    assert held_back < 1.5, held_back  # B's own Tier 2 bucket is full
    assert sum("per replica now" in r.getMessage() for r in caplog.records) == 2  # once per replica


def test_a_call_held_back_longer_than_max_wait_is_handed_back_as_ratelimited_not_slept_on(
        slack: FakeSlack, redis_url: str, prefix: str) -> None:
    """Beyond max_wait the caller gets Slack's own vocabulary (a retryable "ratelimited" with
    retry_after), which the outbox turns into a later retry instead of a worker asleep."""
    async def run() -> SlackError:
        store = RedisStore(redis_url, prefix=prefix)
        try:
            limited = SlackClient(make_web_client(slack.token, slack.base_url),
                                  limiter=SlackRateLimiter(store.take, max_wait=0.5))
            for n in range(5):  # Tier 2: a burst of 5, then one every 3 s
                await limited.create_channel(f"burst-{n}")
            with pytest.raises(SlackError) as caught:
                await limited.create_channel("one-too-many")
            return caught.value
        finally:
            await store.aclose()

    error = asyncio.run(run())
    assert (error.error, error.retryable) == ("ratelimited", True)
    assert error.retry_after is not None and 2.0 <= error.retry_after <= 3.0, error.retry_after
    assert [c.args["name"] for c in slack.calls_to("conversations.create")] == [f"burst-{n}" for n in range(5)]


def test_one_bot_without_redis_keeps_to_slacks_limits_on_its_own(
        slack: FakeSlack, tmp_path: Any) -> None:
    """The default: no Redis, and still no burst into the announce channel when seven incidents
    open at once (Slack allows about one message a second per channel): the process's own buckets."""
    from tests.alerts import alert, group

    bot = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack, slack_rate_limit=True))
    try:
        for n in range(7):
            assert bot.post_alerts(group(alert(labels={"instance": f"i{n}"}),
                                         group_key=f'{{}}:{{instance="i{n}"}}')).status_code == 200
        times = wait_for(lambda: len(t := arrivals(slack, "C0INCIDENTS")) == 7 and t, timeout=30,
                         what="the seven announcements")
    finally:
        bot.stop()
        bot.services.db.dispose()
    # A burst, then one a second: a 1 s window ending on the next arrival holds the burst and that one.
    assert max(sum(1 for t in times if start <= t < start + 1) for start in times) <= CHANNEL_BURST + 1, times
    assert times[-1] - times[0] >= (7 - CHANNEL_BURST) * 0.9, times  # then about one a second
