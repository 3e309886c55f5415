"""Untrusted bodies at the HTTP boundary (security review, issue 10 item 1): every webhook reads its
body through one bounded reader (commands/http_body.py), and /slack/events checks Slack's signature
and timestamp before Bolt parses anything. The bot runs in a thread of this process, so its memory
is this process's RSS."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from commands.slack_events import SLACK_MAX_BODY_BYTES
from tests.conftest import WEBHOOK_TOKEN, RunningBot, make_settings, start_bot
from tests.fakes.slack import FakeSlack
from tests.slack_requests import signed_headers, slash_command

BIG = 50 * 1_000_000  # bytes: far past every limit
CHUNK = b"x" * 65_536


@pytest.fixture
def sqlite_bot(tmp_path, slack: FakeSlack) -> Iterator[RunningBot]:  # type: ignore[no-untyped-def]
    running = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack))
    try:
        yield running
    finally:
        running.stop()
        running.services.db.dispose()


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


class _PeakRss:
    """The highest RSS seen while the block runs (sampled every 2 ms)."""

    def __enter__(self) -> _PeakRss:
        self.before = self.peak = _rss_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def growth(self) -> int:
        return self.peak - self.before


def _stream(total: int = BIG) -> Iterator[bytes]:
    """`total` bytes without holding them: the client must not be what uses the memory."""
    for _ in range(total // len(CHUNK)):
        yield CHUNK


def _post_streamed(url: str, headers: dict[str, str]) -> tuple[httpx.Response, float, _PeakRss]:
    with _PeakRss() as rss:
        started = time.monotonic()
        response = httpx.post(url, content=_stream(), headers=headers, timeout=30)
        elapsed = time.monotonic() - started
    return response, elapsed, rss


def _warm_up(bot: RunningBot) -> None:
    # The first request imports and allocates what every later one reuses: not counted.
    body = slash_command("/runbook", "help")
    httpx.post(f"{bot.url}/slack/events", content=body, headers=signed_headers(body), timeout=10)
    httpx.post(f"{bot.url}/pagerduty", content=b"{}", timeout=10)


def _declared_only(bot: RunningBot, path: str, headers: dict[str, str], declared: int = BIG) -> tuple[int, float]:
    """Send the headers of a `declared`-byte POST and none of its body: the answer must come from
    the Content-Length alone (before, the bot sat waiting for the body)."""
    host, port = bot.url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {declared}",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = sock.recv(4096)
        elapsed = time.monotonic() - started
    return int(answer.split(b" ", 2)[1]), elapsed


def _fresh_headers(signature: str = "v0=" + "0" * 64) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"}


# -- /slack/events ------------------------------------------------------------------------------

def test_a_50_mb_unsigned_slack_post_is_refused_without_reading_it(sqlite_bot: RunningBot) -> None:
    _warm_up(sqlite_bot)
    response, elapsed, rss = _post_streamed(f"{sqlite_bot.url}/slack/events",
                                            {"Content-Type": "application/x-www-form-urlencoded"})
    print(f"unsigned 50 MB: {response.status_code} in {elapsed:.2f}s; RSS {rss.before / 1e6:.0f} MB -> peak "
          f"{rss.peak / 1e6:.0f} MB (+{rss.growth / 1e6:.1f} MB)")
    assert response.status_code == 401 and "unsigned" in response.json()["error"]
    assert rss.growth < 20_000_000


def test_a_50_mb_slack_post_with_a_fresh_timestamp_stops_at_the_limit(sqlite_bot: RunningBot) -> None:
    _warm_up(sqlite_bot)
    response, elapsed, rss = _post_streamed(f"{sqlite_bot.url}/slack/events", _fresh_headers())
    print(f"signed-looking 50 MB: {response.status_code} in {elapsed:.2f}s; RSS {rss.before / 1e6:.0f} MB -> peak "
          f"{rss.peak / 1e6:.0f} MB (+{rss.growth / 1e6:.1f} MB)")
    assert response.status_code == 413
    assert str(SLACK_MAX_BODY_BYTES) in response.json()["error"]
    assert rss.growth < 20_000_000


def test_the_event_loop_keeps_answering_during_a_huge_slack_post(sqlite_bot: RunningBot) -> None:
    _warm_up(sqlite_bot)
    slowest, done = [0.0], threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=sqlite_bot.url, timeout=10) as http:
            while not done.is_set():
                started = time.monotonic()
                assert http.get("/healthz").status_code == 200
                slowest[0] = max(slowest[0], time.monotonic() - started)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        response, _, _ = _post_streamed(f"{sqlite_bot.url}/slack/events", _fresh_headers())
    finally:
        done.set()
        thread.join()
    print(f"slowest /healthz during the 50 MB POST: {slowest[0] * 1000:.0f} ms")
    assert response.status_code == 413
    assert slowest[0] < 1.0


@pytest.mark.parametrize("signed, status", [
    (False, 401),  # unsigned: refused on the headers
    (True, 413),  # signed-looking: refused on the Content-Length
])
def test_a_declared_huge_slack_body_is_refused_before_it_is_sent(sqlite_bot: RunningBot, signed: bool,
                                                                 status: int) -> None:
    headers = _fresh_headers() if signed else {"Content-Type": "application/json"}
    answer, elapsed = _declared_only(sqlite_bot, "/slack/events", headers)
    print(f"declared 50 MB to /slack/events: {answer} in {elapsed * 1000:.0f} ms")
    assert (answer, elapsed < 2) == (status, True)


def test_a_body_of_exactly_the_limit_reaches_bolt_and_one_byte_more_is_413(sqlite_bot: RunningBot) -> None:
    def challenge(size: int) -> bytes:
        start = b'{"token":"x","challenge":"c-big","type":"url_verification","pad":"'
        return start + b"p" * (size - len(start) - 2) + b'"}'

    body = challenge(SLACK_MAX_BODY_BYTES)
    assert len(body) == SLACK_MAX_BODY_BYTES
    reply = httpx.post(f"{sqlite_bot.url}/slack/events", content=body,
                       headers={**signed_headers(body), "Content-Type": "application/json"}, timeout=10)
    assert reply.status_code == 200 and reply.json() == {"challenge": "c-big"}  # Bolt got the bytes read here
    body = challenge(SLACK_MAX_BODY_BYTES + 1)
    reply = httpx.post(f"{sqlite_bot.url}/slack/events", content=body,
                       headers={**signed_headers(body), "Content-Type": "application/json"}, timeout=10)
    assert reply.status_code == 413


@pytest.mark.parametrize("timestamp", [b"not-a-number", b"1.7e9", b"-5", b"", b"\xd9\xa1\xd9\xa2",  # Arabic digits
                                       b"9" * 40])
def test_a_malformed_timestamp_is_400_never_500(sqlite_bot: RunningBot, timestamp: bytes) -> None:
    body = slash_command("/incident", "status")
    headers = {**signed_headers(body)}
    headers.pop("X-Slack-Request-Timestamp")
    raw = [(b"X-Slack-Request-Timestamp", timestamp), *((k.encode(), v.encode()) for k, v in headers.items())]
    reply = httpx.post(f"{sqlite_bot.url}/slack/events", content=body, headers=raw, timeout=10)
    assert reply.status_code == 400, reply.text
    assert "X-Slack-Request-Timestamp" in reply.json()["error"]


# The stamp is whole seconds (int() floors by up to 1 s) and the request takes a moment: a stamp
# 301 s ahead may be under 300 s ahead when the bot reads it. 303 s is more than 5 minutes either way.
@pytest.mark.parametrize("offset, word", [(-301, "past"), (-86_400, "past"), (303, "future")])
def test_a_timestamp_more_than_5_minutes_away_is_401(sqlite_bot: RunningBot, offset: int, word: str) -> None:
    body = slash_command("/incident", "status")
    headers = signed_headers(body, timestamp=int(time.time()) + offset)  # correctly signed, but stale
    reply = httpx.post(f"{sqlite_bot.url}/slack/events", content=body, headers=headers, timeout=10)
    assert reply.status_code == 401 and word in reply.json()["error"]


@pytest.mark.parametrize("signature", [b"v0=" + b"0" * 64, b"v1=abc", b"", b"v0=\xe9\xe9", b"garbage"])
def test_a_wrong_or_malformed_signature_is_401(sqlite_bot: RunningBot, signature: bytes) -> None:
    body = slash_command("/incident", "status")
    headers = {**signed_headers(body)}
    headers.pop("X-Slack-Signature")
    raw = [(b"X-Slack-Signature", signature), *((k.encode(), v.encode()) for k, v in headers.items())]
    reply = httpx.post(f"{sqlite_bot.url}/slack/events", content=body, headers=raw, timeout=10)
    assert reply.status_code == 401, reply.text


def test_a_signature_for_another_body_is_401(sqlite_bot: RunningBot) -> None:
    body = slash_command("/incident", "status")
    headers = signed_headers(slash_command("/incident", "help"))
    reply = httpx.post(f"{sqlite_bot.url}/slack/events", content=body, headers=headers, timeout=10)
    assert reply.status_code == 401 and "SLACK_SIGNING_SECRET" in reply.json()["error"]


# -- /pagerduty and /alertmanager: the same reader ---------------------------------------------

def test_a_50_mb_pagerduty_post_stops_at_the_limit(sqlite_bot: RunningBot) -> None:
    _warm_up(sqlite_bot)
    limit = sqlite_bot.services.settings.max_webhook_bytes
    response, elapsed, rss = _post_streamed(f"{sqlite_bot.url}/pagerduty", {"Content-Type": "application/json"})
    print(f"50 MB to /pagerduty: {response.status_code} in {elapsed:.2f}s; RSS {rss.before / 1e6:.0f} MB -> peak "
          f"{rss.peak / 1e6:.0f} MB (+{rss.growth / 1e6:.1f} MB; limit {limit / 1e6:.1f} MB)")
    assert response.status_code == 413 and f"the limit is {limit}" in response.json()["error"]
    assert rss.growth < limit + 20_000_000


@pytest.mark.parametrize("path, headers", [
    ("/pagerduty", {"Content-Type": "application/json"}),
    ("/alertmanager", {"Content-Type": "application/json", "Authorization": f"Bearer {WEBHOOK_TOKEN}"}),
])
def test_a_declared_huge_webhook_body_is_413_before_it_is_sent(sqlite_bot: RunningBot, path: str,
                                                               headers: dict[str, str]) -> None:
    answer, elapsed = _declared_only(sqlite_bot, path, headers)
    print(f"declared 50 MB to {path}: {answer} in {elapsed * 1000:.0f} ms")
    assert (answer, elapsed < 2) == (413, True)


def test_a_pagerduty_body_of_the_limit_is_read_and_one_byte_more_is_413(slack: FakeSlack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    running = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack, max_webhook_bytes=1000,
                                      pagerduty_webhook_secret="pd-secret"))
    try:
        body = json.dumps({"pad": "p" * 1000}).encode()[:1000]
        at_limit = httpx.post(f"{running.url}/pagerduty", content=body, timeout=10)
        over = httpx.post(f"{running.url}/pagerduty", content=body + b" ", timeout=10)
    finally:
        running.stop()
        running.services.db.dispose()
    assert at_limit.status_code == 401  # read whole, then refused for its missing signature
    assert over.status_code == 413 and over.json()["error"] == "body is 1001 bytes or more; the limit is 1000"


@pytest.mark.parametrize("signature", [b"v1=\xe9\xe9", b"v1=abc, v1=\xff", b"v0=\xe9"])
def test_a_non_ascii_pagerduty_signature_is_401_never_500(slack: FakeSlack, tmp_path, signature: bytes) -> None:  # type: ignore[no-untyped-def]
    running = start_bot(make_settings(f"sqlite:///{tmp_path / 'oncall.db'}", slack,
                                      pagerduty_webhook_secret="pd-secret"))
    try:
        reply = httpx.post(f"{running.url}/pagerduty", content=b"{}", timeout=10,
                           headers=[(b"Content-Type", b"application/json"), (b"X-PagerDuty-Signature", signature)])
    finally:
        running.stop()
        running.services.db.dispose()
    assert reply.status_code == 401, reply.text
