"""The one error every integration raises: what failed, and whether trying again can help.

Each module in integrations/ converts its library's exceptions into a subclass of
`IntegrationError` at its boundary, so nothing outside integrations/ catches httpx, slack_sdk,
pagerduty or kubernetes exceptions, and the outbox turns any of them into a retry (or not) in
one place.
"""

from __future__ import annotations

__all__ = ["IntegrationError"]


class IntegrationError(Exception):
    """A call to an outside system that failed. `retryable`: the same call may succeed later
    (no answer, throttled, server trouble); `retry_after`: the seconds the system asked us to
    wait (Retry-After), None when it did not say."""

    retryable: bool = False
    retry_after: float | None = None
