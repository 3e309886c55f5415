"""Slack's rate limits, kept by all replicas together.

Slack limits each Web API method per workspace per app, by tier (Tier 1: 1+/min, Tier 2: 20+/min,
Tier 3: 50+/min, Tier 4: 100+/min), and chat.postMessage to about one message per second per
channel, with short bursts allowed (docs.slack.dev/apis/web-api/rate-limits; the tier of each
method from slackapi/java-slack-sdk MethodsRateLimits.java). N replicas sending as fast as each
may alone would get N times that, and 429s.

`SlackRateLimiter.wait(method, channel)` runs before every call: it reserves the call in the
method's bucket (and the channel's, for messages) through a shared "take" primitive (Redis,
integrations.redis_store.RedisStore.take) and sleeps until the reservation's time. When the
shared primitive fails, the same buckets are kept in this process instead: each replica then
stays within the limits alone, and it is logged that limits are per replica until it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from integrations.errors import IntegrationError

__all__ = ["CHANNEL_BURST", "MAX_WAIT", "METHOD_TIERS", "TIER_PER_MINUTE", "LocalBuckets", "SlackRateLimiter",
           "buckets_for"]

log = logging.getLogger(__name__)

TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
# The methods the bot calls (integrations/slack.py). auth.test and chat.getPermalink are "special"
# (hundreds a minute): counted as Tier 4. chat.postMessage's own limit is per channel (below).
METHOD_TIERS = {
    "auth.test": 4, "chat.getPermalink": 4, "chat.postEphemeral": 4, "chat.update": 3,
    "conversations.archive": 2, "conversations.create": 2, "conversations.history": 3, "conversations.info": 3,
    "conversations.invite": 3, "conversations.list": 2, "conversations.members": 4, "conversations.replies": 3,
    "conversations.setTopic": 2, "usergroups.users.list": 2, "users.info": 4, "users.lookupByEmail": 3,
    "views.open": 4, "views.publish": 4, "views.update": 4,
}
DEFAULT_TIER = 3  # a method not listed: the middle of the table rather than no limit
_BURST_SHARE = 4  # a bucket holds a quarter of its minute: an incident's opening calls go at once
PER_CHANNEL = frozenset({"chat.postMessage", "chat.update"})  # ~1 message per second per channel
CHANNEL_BURST = 3  # a card, a notice and an update may go together
# Seconds a call may be held back. Longer, and the caller is told to come back (a SlackError
# "ratelimited" with that retry_after, which the outbox turns into a later retry) rather than
# holding a worker, or an interaction past Slack's 3 s.
MAX_WAIT = 10.0

Bucket = tuple[str, float, int]  # (name, seconds per call, burst): integrations.redis_store.Bucket
Take = Callable[[Sequence[Bucket], float], Awaitable[float]]


def buckets_for(method: str, channel: str | None) -> list[Bucket]:
    """The buckets one call of `method` draws from."""
    buckets: list[Bucket] = []
    if method != "chat.postMessage":
        per_minute = TIER_PER_MINUTE[METHOD_TIERS.get(method, DEFAULT_TIER)]
        buckets.append((f"slack:method:{method}", 60.0 / per_minute, max(1, per_minute // _BURST_SHARE)))
    if method in PER_CHANNEL and channel:
        buckets.append((f"slack:channel:{channel}", 1.0, CHANNEL_BURST))
    return buckets


class LocalBuckets:
    """The same GCRA as the shared one (integrations.redis_store), for this process alone."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}  # bucket -> the theoretical arrival time of its next call

    async def take(self, buckets: Sequence[Bucket], max_wait: float) -> float:
        now = self._clock()
        tats = [max(self._tat.get(name, now), now) for name, _, _ in buckets]
        wait = max([0.0, *(tat - interval * (max(1, burst) - 1) - now
                           for tat, (_, interval, burst) in zip(tats, buckets, strict=True))])
        if wait <= max_wait:
            for tat, (name, interval, _) in zip(tats, buckets, strict=True):
                self._tat[name] = max(tat, now + wait) + interval
        return wait


class SlackRateLimiter:
    def __init__(self, shared: Take | None = None, *, max_wait: float = MAX_WAIT) -> None:
        """`shared`: the buckets all replicas draw from (None: this process's own)."""
        self._shared, self._local, self.max_wait = shared, LocalBuckets(), max_wait
        self.per_replica = shared is None  # whether limits are, right now, this process's own

    async def wait(self, method: str, channel: str | None) -> float | None:
        """Return (None) once the call may go; or the seconds after which to try it again,
        when that is more than `max_wait` (nothing reserved then)."""
        buckets = buckets_for(method, channel)
        if not buckets:
            return None
        seconds = await self._take(buckets)
        if seconds > self.max_wait:
            log.warning("Slack %s held back: its rate limit allows it in %.1f s", method, seconds,
                        extra={"method": method, "channel": channel, "retry_after": seconds})
            return seconds
        if seconds > 0:
            await asyncio.sleep(seconds)
        return None

    async def _take(self, buckets: Sequence[Bucket]) -> float:
        if self._shared is not None:
            try:
                seconds = await self._shared(buckets, self.max_wait)
            except IntegrationError as exc:
                if not self.per_replica:
                    log.warning("Slack rate limits are per replica now (%s): N replicas together may send up to "
                                "N times Slack's limits until it answers", exc, extra={"error": str(exc)})
                    self.per_replica = True
            else:
                if self.per_replica:
                    log.info("Slack rate limits are shared by all replicas again")
                    self.per_replica = False
                return seconds
        return await self._local.take(buckets, self.max_wait)
