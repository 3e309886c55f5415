"""One HTTP GET, measured: the `http.check` diagnostic's view of a service.

Redirects are not followed (a redirect could lead outside the URL allow-list); the 3xx and its
Location are reported instead. At most `BODY_LIMIT` bytes of the body are read. Network
failures are results, not exceptions: "connection refused" is what the responder needs to see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from integrations.errors import IntegrationError

__all__ = ["BODY_LIMIT", "ProbeError", "ProbeResult", "check"]

BODY_LIMIT = 64 * 1024


class ProbeError(IntegrationError, ValueError):
    """The probe was asked for something it does not do (a non-http(s) URL, a timeout <= 0)."""


@dataclass(frozen=True)
class ProbeResult:
    status: int | None
    latency_ms: float | None      # request sent to body read (up to BODY_LIMIT)
    error: str | None = None
    location: str | None = None   # where a 3xx pointed; not followed


def check(url: str, timeout: float) -> ProbeResult:
    """GET `url` once; `timeout` bounds the whole probe, not just each network wait."""
    _validate(url, timeout)
    started = time.perf_counter()
    status: int | None = None
    try:
        with (httpx.Client(timeout=timeout, follow_redirects=False) as client,
              client.stream("GET", url, headers={"User-Agent": "oncall-bot http.check"}) as response):
            status = response.status_code
            _read_bounded(response, started + timeout)
            return ProbeResult(status, _since(started), location=response.headers.get("location"))
    except (_SlowBody, httpx.TimeoutException):
        # With a status, the headers came in time and the body did not.
        where = " while reading the body" if status else ""
        return ProbeResult(status, None, f"timed out after {timeout:g}s{where}")
    except httpx.ConnectError as exc:
        return ProbeResult(None, None, _reason(exc))
    except httpx.HTTPError as exc:
        return ProbeResult(status, None, f"{exc.__class__.__name__}: {exc}"[:300])


class _SlowBody(Exception):
    """The body did not arrive within the probe's deadline."""


def _validate(url: str, timeout: float) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:  # not an httpx.HTTPError: it would escape the probe otherwise
        raise ProbeError(f"{url[:100]!r} is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ProbeError(f"only http(s)://host/... URLs can be checked, not {url[:100]!r}")
    if not timeout > 0:
        raise ProbeError(f"the timeout must be positive, not {timeout!r}")


def _read_bounded(response: httpx.Response, deadline: float) -> None:
    """Raw bytes, so a compressed body cannot expand past the limit in memory. A server that
    trickles its body would pass each read's timeout; the deadline bounds the total."""
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read >= BODY_LIMIT:
            return
        if time.perf_counter() > deadline:
            raise _SlowBody


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _reason(exc: httpx.ConnectError) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "resolution" in text:
        return "host not found (DNS)"
    if "certificate" in text or "ssl" in text:
        return f"TLS handshake failed: {exc}"[:300]
    return f"cannot connect: {exc}"[:300]
