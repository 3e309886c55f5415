"""One HTTP GET, measured: the `http.check` diagnostic's view of a service.

Redirects are not followed (a redirect could lead outside the URL allow-list); the 3xx and its
Location are reported instead. At most `BODY_LIMIT` bytes of the body are read. Network
failures are results, not exceptions: "connection refused" is what the responder needs to see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

__all__ = ["ProbeError", "ProbeResult", "check"]

BODY_LIMIT = 64 * 1024


class ProbeError(ValueError):
    """The probe was asked for something it does not do (a non-http(s) URL)."""


@dataclass(frozen=True)
class ProbeResult:
    status: int | None
    latency_ms: float | None
    error: str | None = None
    location: str | None = None  # where a 3xx pointed


def check(url: str, timeout: float) -> ProbeResult:
    if not url.startswith(("http://", "https://")):
        raise ProbeError(f"only http(s) URLs can be checked, not {url[:100]!r}")
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            with client.stream("GET", url, headers={"User-Agent": "oncall-bot http.check"}) as response:
                read = 0
                for chunk in response.iter_bytes():
                    read += len(chunk)
                    if read >= BODY_LIMIT:
                        break
                latency = (time.perf_counter() - started) * 1000
                return ProbeResult(response.status_code, latency, location=response.headers.get("location"))
    except httpx.TimeoutException:
        return ProbeResult(None, None, f"timed out after {timeout:g}s")
    except httpx.ConnectError as exc:
        return ProbeResult(None, None, _reason(exc))
    except httpx.HTTPError as exc:
        return ProbeResult(None, None, f"{exc.__class__.__name__}: {exc}"[:300])


def _reason(exc: httpx.ConnectError) -> str:
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if "name" in text.lower() and "resolution" in text.lower() or "not known" in text.lower():
        return "host not found (DNS)"
    return f"cannot connect: {text}"[:300]
