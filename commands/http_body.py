"""Request bodies read with a limit: the one reader of every webhook (Slack, Alertmanager, PagerDuty).

A body is read chunk by chunk and the reading stops as soon as it passes the limit (or at once when
its Content-Length already does), so an unsigned 400 MB POST costs the bot at most `limit` bytes
of memory, never the whole body.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request

__all__ = ["BodyError", "BodyTooLarge", "read_body"]


class BodyError(Exception):
    """A body that cannot be read: answer `status` with `error`."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


class BodyTooLarge(BodyError):
    """Over the limit: `size` is what was declared or read when the reading stopped (more than `limit`)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(413, f"body is {size} bytes or more; the limit is {limit}")
        self.size, self.limit = size, limit


async def read_body(request: Request, limit: int, *, overflow: Callable[[bytes], None] | None = None,
                    read_up_to: int | None = None) -> bytes:
    """The body, when it is at most `limit` bytes; otherwise BodyTooLarge as soon as it is past that.

    A caller that wants to look at a body too big to keep (Alertmanager names the group in its log)
    passes `overflow`: it gets the part read so far and then every further chunk, until `read_up_to`
    bytes in all have been read (or the body ends); a Content-Length over `read_up_to` is refused
    without reading anything. BodyError(400) when the client goes away mid-body.
    """
    bound = limit if overflow is None else max(limit, read_up_to or limit)
    declared = request.headers.get("content-length", "").lstrip("0")
    if declared.isascii() and declared.isdigit():  # 19 digits or more: past any limit (and int()'s digit cap)
        size = int(declared) if len(declared) < 19 else 10**18
        if size > bound:
            raise BodyTooLarge(size, limit)
    body, size = bytearray(), 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size <= limit:
                body += chunk
                continue
            if overflow is None:
                break
            if body:
                overflow(bytes(body))
                body.clear()
            overflow(chunk)
            if size > bound:
                break
    except ClientDisconnect as exc:
        raise BodyError(400, "client disconnected before the body was complete") from exc
    if size > limit:
        raise BodyTooLarge(size, limit)
    return bytes(body)
