"""integrations.http_probe against real HTTP(S) servers on 127.0.0.1, and the `http.check` action."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import trustme

from bot.action_params import ParamContext, ParamError
from bot.action_runner import run_action, validate_params
from bot.actions import ActionContext, ActionOutput
from integrations.http_probe import BODY_LIMIT, ProbeError, ProbeResult, check
from tests.fakes.processes import free_port

GZIP_BOMB = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)  # ~200 KB on the wire, 200 MB inflated


class _Service(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    paths: ClassVar[list[str]] = []  # every path requested, to prove what was (not) fetched

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.paths.append(self.path)
        if self.path == "/ok":
            time.sleep(0.2)
            return self._send(200, b"fine")
        if self.path == "/broken":
            return self._send(500, b"oops")
        if self.path == "/moved":
            return self._send(302, b"", {"Location": "/after-redirect"})
        if self.path == "/slow":
            time.sleep(3)
            return self._send(200, b"late")
        if self.path == "/stall":
            return self._stall()
        if self.path == "/trickle":
            return self._trickle()
        if self.path == "/endless":
            return self._endless()
        if self.path == "/bomb":
            return self._send(200, GZIP_BOMB, {"Content-Encoding": "gzip"})
        self._send(404, b"no")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._write(body)

    def _stall(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.end_headers()
        self.wfile.flush()
        time.sleep(3)

    def _trickle(self) -> None:
        """Headers at once, then a byte every 0.2 s: each read is quick, the whole is not."""
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        for _ in range(100):
            if not self._write(b"x"):
                return
            time.sleep(0.2)

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"%x\r\n%s\r\n" % (8192, b"y" * 8192)
        while self._write(chunk):
            pass

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False  # the probe stopped reading, as it should


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, *_: object) -> None:
        pass  # the refused TLS handshakes and dropped connections are the point of these tests


def _serve(server: _Server) -> Iterator[str]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield str(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    for port in _serve(_Server(("127.0.0.1", 0), _Service)):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def tls_service() -> Iterator[str]:
    """HTTPS with a certificate from a CA the probe does not trust."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    server = _Server(("127.0.0.1", 0), _Service)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for port in _serve(server):
        yield f"https://127.0.0.1:{port}"


def _timed(url: str, timeout: float) -> tuple[ProbeResult, float]:
    started = time.monotonic()
    result = check(url, timeout)
    return result, time.monotonic() - started


def _action(params: dict[str, object], allow: tuple[str, ...]) -> ActionOutput:
    model = validate_params("http.check", params, ParamContext(urls=allow))
    return asyncio.run(run_action("http.check", model, ActionContext()))


# -- results -------------------------------------------------------------------------------------

def test_200_with_its_latency(service: str) -> None:
    result = check(f"{service}/ok", 5)
    assert result.status == 200 and result.error is None and result.location is None
    assert result.latency_ms is not None and 200 <= result.latency_ms < 3000  # the service sleeps 0.2 s


def test_500_is_a_status_not_an_error(service: str) -> None:
    result = check(f"{service}/broken", 5)
    assert (result.status, result.error) == (500, None) and result.latency_ms is not None


def test_a_redirect_is_reported_not_followed(service: str) -> None:
    _Service.paths.clear()
    result = check(f"{service}/moved", 5)
    assert result.status == 302 and result.location == "/after-redirect" and result.error is None
    assert _Service.paths == ["/moved"]  # the Location was never requested


def test_a_slow_answer_times_out_with_the_limit_in_the_message(service: str) -> None:
    result, took = _timed(f"{service}/slow", 0.5)
    assert result == ProbeResult(None, None, "timed out after 0.5s") and took < 2


def test_a_trickling_body_is_bounded_by_the_same_timeout(service: str) -> None:
    # Every read arrives well within 1 s, so only a deadline over the whole probe ends it early.
    result, took = _timed(f"{service}/trickle", 1)
    assert result.status == 200 and result.error == "timed out after 1s while reading the body" and took < 2.5


def test_a_body_that_stalls_times_out_with_the_status_kept(service: str) -> None:
    result, took = _timed(f"{service}/stall", 0.5)
    assert result == ProbeResult(200, None, "timed out after 0.5s while reading the body") and took < 2


def test_an_endless_body_is_read_only_up_to_the_limit(service: str) -> None:
    result, took = _timed(f"{service}/endless", 5)
    assert (result.status, result.error) == (200, None) and took < 3
    assert BODY_LIMIT == 64 * 1024


def test_a_compressed_body_is_not_inflated(service: str) -> None:
    tracemalloc.start()
    try:
        result = check(f"{service}/bomb", 5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (result.status, result.error) == (200, None)
    assert peak < 16 * 1024 * 1024  # decoding even one 64 KiB chunk of this body would take ~64 MB


def test_a_closed_port_is_connection_refused() -> None:
    result = check(f"http://127.0.0.1:{free_port()}/health", 2)
    assert result == ProbeResult(None, None, "connection refused")


def test_an_untrusted_certificate_is_a_tls_error(tls_service: str) -> None:
    result = check(f"{tls_service}/ok", 5)
    assert result.status is None and result.error is not None
    assert result.error.startswith("TLS handshake failed") and "CERTIFICATE_VERIFY_FAILED" in result.error


# -- misuse -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/", "http://", "127.0.0.1:8080/health",
                                 "http://[::1/"])
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(ProbeError):
        check(url, 1)


def test_the_timeout_must_be_positive(service: str) -> None:
    with pytest.raises(ProbeError, match="positive"):
        check(f"{service}/ok", 0)


# -- through the http.check action ------------------------------------------------------------------------

def test_the_action_reports_ok_and_failing(service: str) -> None:
    allow = (f"{service}/",)
    ok = _action({"url": f"{service}/ok"}, allow)
    assert ok.summary == "OK: 200" and ok.text.splitlines()[:2] == [f"GET {service}/ok", "status:  200"]
    assert _action({"url": f"{service}/broken"}, allow).summary == "FAILING: 500"
    assert _action({"url": f"{service}/broken", "expect_status": 500}, allow).summary == "OK: 500"


def test_the_action_shows_where_a_redirect_pointed(service: str) -> None:
    moved = _action({"url": f"{service}/moved", "expect_status": 302}, (f"{service}/",))
    assert moved.summary == "OK: 302" and "location: /after-redirect (not followed)" in moved.text


def test_the_action_shows_network_failures(service: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    refused = _action({"url": f"{closed}/"}, (f"{closed}/",))
    assert refused.summary == "FAILING: connection refused" and "error:   connection refused" in refused.text
    slow = _action({"url": f"{service}/slow", "timeout_seconds": 0.5}, (f"{service}/",))
    assert slow.summary == "FAILING: timed out after 0.5s"


def test_the_action_fetches_the_url_it_checked(service: str) -> None:
    """The allow-list is checked on the normalised URL, and that URL is the one requested."""
    _Service.paths.clear()
    ok = _action({"url": f"{service}/health/../%6Fk"}, (f"{service}/",))
    assert ok.summary == "OK: 200" and ok.text.splitlines()[0] == f"GET {service}/ok"
    assert _Service.paths == ["/ok"]


@pytest.mark.parametrize("path", ["/health/..;/ok", "/health/%2e%2e%2fok", "/health/%2e%2e/ok"])
def test_walk_arounds_of_a_prefix_are_refused_before_any_request(service: str, path: str) -> None:
    _Service.paths.clear()
    with pytest.raises(ParamError):
        _action({"url": f"{service}{path}"}, (f"{service}/health/",))
    assert _Service.paths == []
