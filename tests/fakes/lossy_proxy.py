"""A TCP proxy in front of a real HTTP/1.1 server (the real Alertmanager) that can lose one
exchange the way a network does: the request reaches the server, which acts on it, and its
answer never comes back (`lose_answer`), or the request itself is lost on the way
(`lose_request`). Either way the client's connection is closed with no response, which is what
a caller sees when a connection drops mid-call: it cannot know whether the server acted.

Everything else is relayed byte for byte, request by request on each kept-alive connection.
`exchanges` records (method, path, what happened) for tests to assert on.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = ["LossyProxy"]


@dataclass
class _Rule:
    method: str
    path: str  # a prefix of the request's path
    lose: str  # "answer" | "request"
    times: int


@dataclass
class LossyProxy:
    upstream_port: int
    upstream_host: str = "127.0.0.1"
    exchanges: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, relayed|lost_*)
    _rules: list[_Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: socket.socket | None = None
    _stopping: bool = False

    def start(self) -> LossyProxy:
        self._server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, name="lossy-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def lose_answer(self, method: str, path: str, *, times: int = 1) -> None:
        """The next `times` requests `method path…` reach the server; their answers are dropped."""
        with self._lock:
            self._rules.append(_Rule(method, path, "answer", times))

    def lose_request(self, method: str, path: str, *, times: int = 1) -> None:
        """The next `times` requests `method path…` never reach the server."""
        with self._lock:
            self._rules.append(_Rule(method, path, "request", times))

    def _take(self, method: str, path: str) -> str | None:
        with self._lock:
            for rule in self._rules:
                if rule.method == method and path.startswith(rule.path):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule.lose
        return None

    # -- relaying ----------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopping:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        upstream_reader: BinaryIO | None = None
        try:
            reader = client.makefile("rb")
            while True:
                request = _read_message(reader, response=False)
                if request is None:
                    return  # the client closed its kept-alive connection
                method, path = _request_line(request)
                lose = self._take(method, path)
                if lose == "request":
                    self.exchanges.append((method, path, "lost_request"))
                    return  # closed without forwarding: the server never sees it
                if upstream is None or upstream_reader is None:
                    upstream = socket.create_connection((self.upstream_host, self.upstream_port), timeout=30)
                    upstream_reader = upstream.makefile("rb")
                upstream.sendall(request)
                response = _read_message(upstream_reader, response=True, method=method)
                if response is None:
                    return
                if lose == "answer":
                    self.exchanges.append((method, path, "lost_answer"))
                    return  # the server acted and answered; the client never hears it
                self.exchanges.append((method, path, "relayed"))
                client.sendall(response)
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()
            if upstream is not None:
                upstream.close()


def _request_line(request: bytes) -> tuple[str, str]:
    method, _, rest = request.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
    return method, rest.partition(" ")[0]


def _read_message(reader: BinaryIO, *, response: bool, method: str = "") -> bytes | None:
    """One whole HTTP/1.1 message (head and body, as sent), or None at the end of the stream."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = reader.readline(65536)
        if not line:
            return None
        if head == b"" and line in (b"\r\n", b"\n"):
            continue  # a stray CRLF between messages
        head += line
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    status = int(head.split(b" ", 2)[1]) if response else 0
    if response and (method == "HEAD" or 100 <= status < 200 or status in (204, 304)):
        return head
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = reader.readline(65536)
            body += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = reader.readline(65536)
                    body += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return head + body
            body += reader.read(size + 2)  # the chunk and its CRLF
    if "content-length" in headers:
        return head + reader.read(int(headers["content-length"]))
    return head + (reader.read() if response else b"")  # a response without a length ends with the connection
