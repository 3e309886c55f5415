"""The diagnostics' other systems, for real: Prometheus (the Debian binary scraping a target this
test serves), Alertmanager (the Debian binary) for silences, and plain HTTP servers for http.check.
Checked both through the integration clients and through `bot.actions.run_action`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bot.actions import ActionContext, ActionError, ParamContext, run_action, validate_params
from integrations.alertmanager import AlertmanagerClient, AlertmanagerError
from integrations.http_probe import ProbeError, check
from integrations.prometheus import PrometheusClient, PrometheusError
from tests.fakes.processes import RunningProcess, free_port, start_alertmanager, start_prometheus

METRICS = (b"# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n"
           b'http_requests_total{code="200",handler="/api"} 1027\n'
           b'http_requests_total{code="500",handler="/api"} 3\n')


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/metrics":
            return self._send(200, METRICS, {"Content-Type": "text/plain; version=0.0.4"})
        if self.path == "/ok":
            return self._send(200, b"fine")
        if self.path == "/broken":
            return self._send(500, b"oops")
        if self.path == "/moved":
            return self._send(302, b"", {"Location": "https://elsewhere.example.com/"})
        if self.path == "/slow":
            time.sleep(2)
            return self._send(200, b"late")
        if self.path == "/huge":
            return self._send(200, b"x" * (1024 * 1024))
        self._send(404, b"no")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the probe stops reading after its limit


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def prometheus(target: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    running = start_prometheus([target], tmp_path_factory.mktemp("prometheus"))
    try:
        with PrometheusClient(running.url) as client:
            deadline = time.monotonic() + 30
            while not client.instant("http_requests_total"):
                assert time.monotonic() < deadline, f"Prometheus never scraped {target}; see {running.log}"
                time.sleep(0.2)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    config = "route: {receiver: nobody}\nreceivers: [{name: nobody}]\n"
    running = start_alertmanager(config, tmp_path_factory.mktemp("alertmanager"))
    try:
        yield running
    finally:
        running.stop()


def run(name: str, params: dict[str, object], ctx: ActionContext, allow: ParamContext | None = None):  # type: ignore[no-untyped-def]
    model = validate_params(name, params, allow or ParamContext())
    return asyncio.run(run_action(name, model, ctx))


# -- Prometheus ------------------------------------------------------------------------------------

def test_instant_vector_and_scalar(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        samples = sorted(client.instant("http_requests_total"), key=lambda s: s.labels["code"])
        assert [(s.labels["code"], s.value) for s in samples] == [("200", 1027.0), ("500", 3.0)]
        assert samples[0].labels["job"] == "test"
        [scalar] = client.instant("scalar(sum(http_requests_total))")
        assert scalar.labels == {} and scalar.value == 1030.0
        [nan] = client.instant("vector(0) / 0")
        assert nan.value != nan.value  # NaN survives as a float


def test_range_is_one_series_per_label_set_and_renders_a_png(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        deadline = time.monotonic() + 15
        while True:  # a freshly started Prometheus has scraped only once or twice
            end = datetime.now(timezone.utc)
            series = client.range("http_requests_total", end - timedelta(minutes=1), end, timedelta(seconds=1))
            if all(len(s.points) >= 2 for s in series) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert len(series) == 2 and all(len(s.points) >= 2 for s in series)
        assert all(v == 1027.0 for _, v in next(s for s in series if s.labels["code"] == "200").points)
        png = client.render_png(series, "リクエスト数 " + "x" * 200)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_a_huge_span_widens_the_step_instead_of_being_refused(prometheus: RunningProcess) -> None:
    end = datetime.now(timezone.utc)
    with PrometheusClient(prometheus.url) as client:
        [series] = client.range("vector(1)", end - timedelta(days=30), end, timedelta(seconds=1))
    assert 10_000 < len(series.points) <= 11_000


def test_a_bad_query_carries_prometheus_message(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client, pytest.raises(PrometheusError, match="bad_data.*parse error"):
        client.instant("sum(")


def test_unreachable_prometheus_names_the_setting() -> None:
    with PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client, \
            pytest.raises(PrometheusError, match="PROMETHEUS_URL"):
        client.instant("up")


def test_not_prometheus_names_the_setting(target: str) -> None:
    with PrometheusClient(f"http://{target}/ok") as client, pytest.raises(PrometheusError, match="PROMETHEUS_URL"):
        client.instant("up")


def test_the_query_action_answers_a_table_or_a_graph(prometheus: RunningProcess) -> None:
    with PrometheusClient(prometheus.url) as client:
        ctx = ActionContext(prometheus=client)
        table = run("prometheus.query", {"query": 'sum by (code) (http_requests_total)'}, ctx)
        assert "1027" in table.text and 'code="500"' in table.text and table.summary == "2 series"
        graph = run("prometheus.query", {"query": "http_requests_total", "range": "5m"}, ctx)
        assert graph.file is not None and graph.file.startswith(b"\x89PNG") and graph.filename == "graph.png"
        with pytest.raises(ActionError, match="range vector"):  # well-formed, but Prometheus refuses it
            run("prometheus.query", {"query": "rate(http_requests_total)"}, ctx)


# -- Alertmanager silences ------------------------------------------------------------------------------

MATCHERS = [{"name": "alertname", "value": "HighLatency", "isRegex": False, "isEqual": True},
            {"name": "namespace", "value": "prod-.*", "isRegex": True, "isEqual": True}]


def test_create_read_and_expire_a_silence(alertmanager: RunningProcess) -> None:
    now = datetime.now(timezone.utc)
    with AlertmanagerClient(alertmanager.url) as client:
        silence_id = client.create_silence(MATCHERS, now, now + timedelta(hours=1), "U0ALICE", "from a runbook")
        silence = client.get_silence(silence_id)
        assert silence["status"]["state"] == "active" and silence["createdBy"] == "U0ALICE"
        assert {m["name"]: m["isRegex"] for m in silence["matchers"]} == {"alertname": False, "namespace": True}
        client.expire_silence(silence_id)
        assert client.get_silence(silence_id)["status"]["state"] == "expired"
        with pytest.raises(AlertmanagerError, match="404"):
            client.get_silence("00000000-0000-0000-0000-000000000000")


def test_a_silence_alertmanager_refuses_carries_its_reason(alertmanager: RunningProcess) -> None:
    now = datetime.now(timezone.utc)
    with AlertmanagerClient(alertmanager.url) as client, pytest.raises(AlertmanagerError, match="HTTP 400"):
        client.create_silence(MATCHERS, now, now - timedelta(hours=1), "U0ALICE", "ends before it starts")


def test_unreachable_alertmanager_names_the_setting() -> None:
    with AlertmanagerClient(f"http://127.0.0.1:{free_port()}") as client, \
            pytest.raises(AlertmanagerError, match="ALERTMANAGER_URL"):
        client.get_silence("x")


def test_the_silence_action_creates_a_narrow_silence(alertmanager: RunningProcess) -> None:
    with AlertmanagerClient(alertmanager.url) as client:
        output = run("alertmanager.silence", {"matchers": 'alertname="HighLatency", namespace="prod"',
                                              "duration": "2h"}, ActionContext(alertmanager=client, user="U0BOB"))
        silence_id = output.text.split()[1]
        silence = client.get_silence(silence_id)
    assert silence["createdBy"] == "U0BOB" and silence["status"]["state"] == "active"
    ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00"))
    assert timedelta(hours=1, minutes=59) < ends - datetime.now(timezone.utc) <= timedelta(hours=2)


# -- http.check --------------------------------------------------------------------------------------

def test_probe_reports_status_and_latency(target: str) -> None:
    ok = check(f"http://{target}/ok", 5)
    assert ok.status == 200 and ok.error is None and ok.latency_ms is not None and ok.latency_ms < 5000
    assert check(f"http://{target}/broken", 5).status == 500


def test_probe_does_not_follow_redirects(target: str) -> None:
    moved = check(f"http://{target}/moved", 5)
    assert moved.status == 302 and moved.location == "https://elsewhere.example.com/"


def test_probe_failures_are_results(target: str) -> None:
    slow = check(f"http://{target}/slow", 0.5)
    assert slow.status is None and slow.error == "timed out after 0.5s"
    refused = check(f"http://127.0.0.1:{free_port()}/", 2)
    assert refused.status is None and refused.error == "connection refused"


def test_probe_reads_a_bounded_body(target: str) -> None:
    huge = check(f"http://{target}/huge", 5)
    assert huge.status == 200 and huge.error is None


def test_probe_refuses_other_schemes() -> None:
    with pytest.raises(ProbeError):
        check("file:///etc/passwd", 1)


def test_the_http_check_action_against_the_allow_list(target: str) -> None:
    allow = ParamContext(urls=(f"http://{target}/",))
    ok = run("http.check", {"url": f"http://{target}/ok"}, ActionContext(), allow)
    assert ok.summary == "OK: 200" and "latency:" in ok.text
    failing = run("http.check", {"url": f"http://{target}/broken"}, ActionContext(), allow)
    assert failing.summary == "FAILING: 500"
    with pytest.raises(ValueError, match="allow-list"):
        run("http.check", {"url": "http://example.org/"}, ActionContext(), allow)


def test_prometheus_scrapes_over_real_http(prometheus: RunningProcess) -> None:
    # The fixture's readiness is itself the check that the scrape happened; this pins the target up.
    targets = httpx.get(f"{prometheus.url}/api/v1/targets").json()["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]
