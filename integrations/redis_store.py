"""Redis: what replicas share that must be fast, and nothing the bot needs to be correct.

Two primitives, both keyed under one prefix (REDIS_KEY_PREFIX) and knowing nothing of incidents:
`first_time(key, ttl)` (SET NX PX: one replica in all sees a key first) and `take(buckets,
max_wait)` (a GCRA rate limiter run as one Lua script on Redis's own clock, so every replica
draws from the same buckets whatever its own clock says).

Redis is optional and may go away: every failure comes out as `RedisUnavailable`, logged once
with the fix; after one, calls fail at once (no network) until `RETRY_EVERY` seconds passed,
then one call tries again, and "Redis reachable again" is logged when it answers. Timeouts are
short (`TIMEOUT`), so a dead or black-holed Redis never stalls a request for long. Callers fall
back to what they did without Redis (the database, an in-process bucket).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from integrations.errors import IntegrationError

__all__ = ["RETRY_EVERY", "TIMEOUT", "Bucket", "RedisStore", "RedisUnavailable"]

log = logging.getLogger(__name__)

TIMEOUT = 0.5  # seconds for a connect or a reply: Slack wants an answer within 3 s
RETRY_EVERY = 3.0  # seconds between attempts while Redis is down

# (name, seconds per call, burst): a bucket refills one call every `seconds per call` and holds
# at most `burst` calls, which may go at once.
Bucket = tuple[str, float, int]

_T = TypeVar("_T")

# GCRA (the "generic cell rate algorithm"): per bucket, one number, the theoretical arrival time
# (TAT) of the next call. A call at `at` conforms when at >= TAT - tolerance, tolerance being
# (burst - 1) intervals; it then moves TAT to max(TAT, at) + interval. The call is reserved at
# the latest time any of its buckets allows, in all of them at once, unless that is more than
# max_wait away (then nothing is reserved). Lua numbers become integers in Redis replies: the wait
# goes back as a string. TIME inside a script that writes is fine since Redis 5 (effects replication).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max_wait = tonumber(ARGV[1])
local wait, tats = 0, {}
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local until_allowed = tat - tonumber(ARGV[2 * i + 1]) - now
  if until_allowed > wait then wait = until_allowed end
end
if wait > max_wait then return tostring(wait) end
for i, key in ipairs(KEYS) do
  local tat = math.max(tats[i], now + wait) + tonumber(ARGV[2 * i])
  redis.call('SET', key, tostring(tat), 'PX', math.ceil((tat - now) * 1000) + 1000)
end
return tostring(wait)
"""


class RedisUnavailable(IntegrationError):
    """Redis did not answer (or is known to be down): do without it."""

    retryable = True


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "oncall-bot:", timeout: float = TIMEOUT,
                 retry_every: float = RETRY_EVERY) -> None:
        self.prefix, self.retry_every = prefix, retry_every
        parts = urlsplit(url)  # where, for the log: host, port and database, never a password
        self.where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"
        # No retries inside redis-py (its default backs off for seconds): our caller has a fallback.
        self._client = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout,
                                         retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._gcra = self._client.register_script(_GCRA)
        self._down_cause: str | None = None  # set while Redis is down: why
        self._next_try = 0.0

    @property
    def up(self) -> bool:
        """As far as the last call could tell."""
        return self._down_cause is None

    async def first_time(self, key: str, ttl: timedelta) -> bool:
        """True for the first caller of all replicas to name `key` within `ttl`."""
        done = await self._run(lambda: self._client.set(self.prefix + key, b"1", nx=True,
                                                        px=max(1, int(ttl.total_seconds() * 1000))))
        return bool(done)

    async def take(self, buckets: Sequence[Bucket], max_wait: float) -> float:
        """Reserve one call in every bucket: the seconds to wait before making it (0: now). When
        that would be more than `max_wait`, nothing is reserved and the seconds are returned."""
        keys = [self.prefix + name for name, _, _ in buckets]
        args: list[float] = [max_wait]
        for _, interval, burst in buckets:
            args += [interval, interval * (max(1, burst) - 1)]
        return float(await self._run(lambda: self._gcra(keys=keys, args=args)))

    async def check(self) -> bool:
        """Whether Redis answers (a PING, at most every `retry_every` seconds while it is down)."""
        try:
            await self._run(self._client.ping)
        except RedisUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _run(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """The one boundary: redis-py's errors become `RedisUnavailable`, and the up/down state
        (with its two log lines) changes only here."""
        now = time.monotonic()
        if self._down_cause is not None:
            if now < self._next_try:
                raise RedisUnavailable(f"Redis unreachable at {self.where} ({self._down_cause}): check REDIS_URL")
            self._next_try = now + self.retry_every  # this call tries; the others still fail at once
        try:
            result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._went_down(exc) from exc
        if self._down_cause is not None:
            log.warning("Redis reachable again at %s: coordinating through it again", self.where,
                        extra={"redis": self.where, "down_for": self._down_cause})
            self._down_cause = None
        return result

    def _went_down(self, exc: BaseException) -> RedisUnavailable:
        cause = f"{exc.__class__.__name__}: {str(exc)[:300]}"
        if self._down_cause is None:
            log.error("Redis unreachable at %s (%s): check REDIS_URL and that Redis is up; until it answers, "
                      "replicas coordinate through the database only and Slack rate limits are per replica",
                      self.where, cause, extra={"redis": self.where, "error": cause})
            self._next_try = time.monotonic() + self.retry_every
        self._down_cause = cause
        return RedisUnavailable(f"Redis unreachable at {self.where} ({cause}): check REDIS_URL")
