"""integrations.prometheus against the real Prometheus (the Debian binary) scraping a metrics target
this test serves over HTTP; also through `bot.actions.run_action("prometheus.query", ...)`.
"""

from __future__ import annotations

import asyncio
import math
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bot.action_params import ParamContext
from bot.action_runner import run_action, validate_params
from bot.actions import ActionContext, ActionError, ActionOutput
from integrations.prometheus import PrometheusClient, PrometheusError, Sample, Series, from_environment
from tests.fakes.processes import RunningProcess, free_port, start_prometheus

METRICS = (b"# TYPE http_requests_total counter\n"
           b'http_requests_total{code="200",handler="/api"} 1027\n'
           b'http_requests_total{code="500",handler="/api"} 3\n'
           b"# TYPE odd_value gauge\n"
           b'odd_value{kind="nan"} NaN\n'
           b'odd_value{kind="inf"} +Inf\n')
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKEN = "Bearer s3cret"


class _Target(BaseHTTPRequestHandler):
    """The scrape target, plus answers that are not Prometheus's, plus an authenticating proxy
    in front of the real Prometheus (`/secured/...`)."""

    prometheus_url = ""

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/metrics":
            return self._send(200, METRICS, "text/plain; version=0.0.4")
        if self.path.startswith("/html/"):
            return self._send(404, b"<html><body>Not Found</body></html>", "text/html")
        if self.path.startswith("/starting/"):  # what Prometheus answers before it is ready
            return self._send(503, b"Service Unavailable\n", "text/plain; charset=utf-8")
        if self.path.startswith("/secured/"):
            if self.headers.get("Authorization") != TOKEN:
                return self._send(401, b"Unauthorized\n", "text/plain")
            upstream = httpx.get(self.prometheus_url + self.path.removeprefix("/secured"))
            return self._send(upstream.status_code, upstream.content, upstream.headers["content-type"])
        self._send(404, b"no", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def prometheus(target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    running = start_prometheus([target], tmp_path_factory.mktemp("prometheus"))
    _Target.prometheus_url = running.url
    try:
        with PrometheusClient(running.url) as client:
            deadline = time.monotonic() + 30
            while not client.instant("http_requests_total"):
                assert time.monotonic() < deadline, f"Prometheus never scraped {target}; see {running.log}"
                time.sleep(0.2)
        yield running
    finally:
        running.stop()


def _series_with_points(client: PrometheusClient, query: str, points: int = 3) -> tuple[list[Series], datetime,
                                                                                        datetime]:
    """A fresh Prometheus has scraped only a few times: wait until each series has some history."""
    deadline = time.monotonic() + 20
    while True:
        end = datetime.now(UTC).replace(microsecond=0)  # the API has millisecond precision
        start = end - timedelta(minutes=1)
        series = client.range(query, start, end, timedelta(seconds=1))
        if (series and all(len(s.points) >= points for s in series)) or time.monotonic() > deadline:
            return series, start, end
        time.sleep(0.5)


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC) and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def _run(params: dict[str, object], ctx: ActionContext) -> ActionOutput:
    return asyncio.run(run_action("prometheus.query", validate_params("prometheus.query", params, ParamContext()),
                                  ctx))


# -- instant queries -----------------------------------------------------------------------------

def test_instant_vector_has_one_sample_per_series_with_the_scrape_labels(prometheus: RunningProcess,
                                                                         target: str) -> None:
    with PrometheusClient(prometheus.url) as client:
        samples = sorted(client.instant("http_requests_total"), key=lambda s: s.labels["code"])
    assert [s.value for s in samples] == [1027.0, 3.0]
    assert samples[0].labels == {"__name__": "http_requests_total", "code": "200", "handler": "/api",
                                 "instance": target, "job": "test"}


def test_scalar_and_vector_literals(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        assert client.instant("1") == [Sample({}, 1.0)]  # a number literal is a scalar result
        assert client.instant("scalar(vector(1))") == [Sample({}, 1.0)]
        assert client.instant("vector(1)") == [Sample({}, 1.0)]
        [now] = client.instant("time()")  # a scalar from Prometheus's clock
        assert abs(now.value - time.time()) < 60
        assert client.instant('"just text"') == []  # a string result has no value to show
        assert client.instant("absent_metric_name") == []


def test_nan_and_infinities_survive_as_floats(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        values = {s.labels["kind"]: s.value for s in client.instant("odd_value")}
        [negative] = client.instant('-odd_value{kind="inf"}')
        [division] = client.instant("vector(0) / 0")
    assert math.isnan(values["nan"]) and values["inf"] == math.inf
    assert negative.value == -math.inf and math.isnan(division.value)


def test_a_range_selector_in_an_instant_query_gives_the_newest_point(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        samples = client.instant('http_requests_total{code="500"}[1m]')
    assert [(s.labels["code"], s.value) for s in samples] == [("500", 3.0)]


# -- range queries and graphs --------------------------------------------------------------------------

def test_range_returns_utc_points_inside_the_window(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        series, start, end = _series_with_points(client, "http_requests_total")
    assert sorted(s.labels["code"] for s in series) == ["200", "500"]
    for item in series:
        times = [t for t, _ in item.points]
        assert times == sorted(times) and all(start <= t <= end and t.tzinfo == UTC for t in times)
        assert {v for _, v in item.points} == {1027.0 if item.labels["code"] == "200" else 3.0}


def test_range_renders_a_png_graph(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        series, _, _ = _series_with_points(client, "http_requests_total or odd_value")
        png = client.render_png(series, "リクエスト数 / requests per code")
    assert len(series) == 4  # NaN and +Inf series included; they must not break the drawing
    assert _png_size(png) == (1000, 450) and len(png) > 10_000


def test_a_span_over_11000_points_widens_the_step(prometheus: RunningProcess) -> None:
    end = datetime.now(UTC)
    with PrometheusClient(prometheus.url) as client:
        [series] = client.range("vector(1)", end - timedelta(days=30), end, timedelta(seconds=1))
    steps = {(b - a).total_seconds() for (a, _), (b, _) in zip(series.points, series.points[1:], strict=False)}
    assert 10_000 < len(series.points) <= 11_000 and steps == {236.0}  # ceil(30 days / 10999)


def test_naive_datetimes_are_utc_whatever_the_host_zone(prometheus: RunningProcess,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # 9 hours off UTC: a naive time read as local would be off
    time.tzset()
    try:
        with PrometheusClient(prometheus.url) as client:
            [series] = client.range("vector(1)", (end - timedelta(minutes=2)).replace(tzinfo=None),
                                    end.replace(tzinfo=None), timedelta(minutes=1))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert [t for t, _ in series.points] == [end - timedelta(minutes=2), end - timedelta(minutes=1), end]


def test_render_png_copes_with_many_series_cjk_and_dollar_signs() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    series = [Series({"__name__": "up", "pod": f"web-{n}", "note": "$1 円"},
                     [(start + timedelta(hours=h), float(n * h)) for h in range(48)]) for n in range(25)]
    series.append(Series({}, [(start, math.nan), (start + timedelta(hours=1), math.inf)]))
    # "$1 ... $2" is mathtext to matplotlib and would raise a ParseException if it were parsed.
    title = 'label_replace(up, "x", "$1", "job", "$2^{") ' + "サービスの応答時間 " * 30
    png = PrometheusClient.render_png(series, title)
    assert _png_size(png) == (1000, 450)
    assert _png_size(PrometheusClient.render_png([], "no data")) == (1000, 450)


# -- errors name the cause and the fix ---------------------------------------------------------------

def test_a_bad_query_carries_prometheus_message(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client, pytest.raises(PrometheusError) as caught:
        client.instant("sum(")
    assert "(bad_data, HTTP 400)" in str(caught.value) and "parse error: unclosed left parenthesis" in str(caught.value)
    assert "fix the PromQL" in str(caught.value)


def test_a_query_that_cannot_be_evaluated_is_422(prometheus: RunningProcess) -> None:
    two_series = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(1), "b", "y", "", "")'
    query = f"({two_series}) + on() vector(1)"
    with PrometheusClient(prometheus.url) as client, pytest.raises(PrometheusError) as caught:
        client.instant(query)
    assert "(execution, HTTP 422)" in str(caught.value) and "many-to-one matching" in str(caught.value)


def test_prometheus_evaluation_timeout_is_503_with_a_fix(prometheus: RunningProcess) -> None:
    # A one-microsecond evaluation limit: Prometheus itself gives up, before any HTTP timeout.
    with PrometheusClient(prometheus.url, query_timeout=0.000001) as client, \
            pytest.raises(PrometheusError) as caught:
        client.instant("count_over_time(vector(1)[7d:1s])")
    assert "(timeout, HTTP 503)" in str(caught.value) and "query timed out" in str(caught.value)
    assert "narrow the selectors or the range" in str(caught.value)


def test_unreachable_prometheus_names_the_setting() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusClient(url, timeout=2) as client, pytest.raises(PrometheusError) as caught:
        client.instant("up")
    assert f"cannot reach Prometheus at {url}" in str(caught.value) and "check PROMETHEUS_URL" in str(caught.value)


def test_a_url_that_is_not_prometheus_names_the_setting(target: str) -> None:
    with PrometheusClient(f"http://{target}/html") as client, pytest.raises(PrometheusError) as caught:
        client.instant("up")
    assert "HTTP 404" in str(caught.value) and "not Prometheus's JSON API; check PROMETHEUS_URL" in str(caught.value)


def test_a_prometheus_that_is_starting_says_retry(target: str) -> None:
    with PrometheusClient(f"http://{target}/starting") as client, pytest.raises(PrometheusError, match="not ready"):
        client.range("up", datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC),
                     timedelta(minutes=1))


def test_headers_reach_prometheus_behind_an_authenticating_proxy(prometheus: RunningProcess, target: str) -> None:
    with PrometheusClient(f"http://{target}/secured") as client, pytest.raises(PrometheusError) as caught:
        client.instant("vector(1)")
    assert "refused access (HTTP 401)" in str(caught.value) and "credentials" in str(caught.value)
    with PrometheusClient(f"http://{target}/secured", headers={"Authorization": TOKEN}) as client:
        assert client.instant("vector(7)") == [Sample({}, 7.0)]


def test_from_environment(prometheus: RunningProcess) -> None:
    assert from_environment({}) is None and from_environment({"PROMETHEUS_URL": "  "}) is None
    client = from_environment({"PROMETHEUS_URL": prometheus.url + "/"})
    assert client is not None
    with client:
        assert client.base_url == prometheus.url and client.instant("2") == [Sample({}, 2.0)]


# -- through the prometheus.query action -------------------------------------------------------------------

def test_the_action_answers_an_instant_query_as_a_table(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        output = _run({"query": "sum by (code) (http_requests_total)"}, ActionContext(prometheus=client))
    assert output.text.splitlines() == ["SERIES         VALUE", '{code="200"}   1027', '{code="500"}   3']
    assert output.summary == "2 series" and output.file is None


def test_the_action_answers_a_range_query_with_a_graph(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        _series_with_points(client, "http_requests_total", points=2)
        output = _run({"query": "http_requests_total", "range": "5m", "step": "1s", "title": "要求数"},
                      ActionContext(prometheus=client))
    assert output.text == "2 series over the last 5m (graph attached)" and output.filename == "graph.png"
    assert output.file is not None and _png_size(output.file) == (1000, 450)


def test_the_action_turns_prometheus_errors_into_action_errors(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        with pytest.raises(ActionError, match=r"^Prometheus query failed: .*expected type range vector"):
            _run({"query": "rate(http_requests_total)"}, ActionContext(prometheus=client))
        empty = _run({"query": "no_such_metric", "range": "10m"}, ActionContext(prometheus=client))
    assert empty.text == "The query returned no data over the last 10m." and empty.file is None
    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2) as down, \
            pytest.raises(ActionError, match="check PROMETHEUS_URL"):
        _run({"query": "up"}, ActionContext(prometheus=down))
    with pytest.raises(ActionError, match="set PROMETHEUS_URL"):
        _run({"query": "up"}, ActionContext())
