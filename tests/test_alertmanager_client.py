"""integrations.alertmanager's silence client against the real Alertmanager (the Debian binary),
and the `alertmanager.silence` action through `bot.actions.run_action`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from bot.action_params import ParamContext
from bot.action_runner import run_action, validate_params
from bot.actions import ActionContext, ActionError, ActionOutput
from integrations.alertmanager import AlertmanagerClient, AlertmanagerError, from_environment
from tests.fakes.processes import RunningProcess, free_port, start_alertmanager

MATCHERS = [{"name": "alertname", "value": "HighLatency", "isRegex": False, "isEqual": True},
            {"name": "namespace", "value": "prod-.*", "isRegex": True, "isEqual": True},
            {"name": "severity", "value": "info", "isRegex": False, "isEqual": False}]


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    config = "route: {receiver: nobody}\nreceivers: [{name: nobody}]\n"
    running = start_alertmanager(config, tmp_path_factory.mktemp("alertmanager"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(alertmanager: RunningProcess) -> Iterator[AlertmanagerClient]:
    with AlertmanagerClient(alertmanager.url) as am:
        yield am


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _all_silences(alertmanager: RunningProcess) -> list[dict[str, Any]]:
    """Alertmanager's own listing, read without the client under test."""
    return list(httpx.get(f"{alertmanager.url}/api/v2/silences").json())


def _silence(params: dict[str, object], ctx: ActionContext) -> ActionOutput:
    model = validate_params("alertmanager.silence", params, ParamContext())
    return asyncio.run(run_action("alertmanager.silence", model, ctx))


# -- the client ----------------------------------------------------------------------------------

def test_create_read_back_and_expire(client: AlertmanagerClient, alertmanager: RunningProcess) -> None:
    starts = datetime.now(UTC).replace(microsecond=0)
    silence_id = client.create_silence(MATCHERS, starts, starts + timedelta(hours=1), "U0ALICE", "runbook step 2")
    silence = client.get_silence(silence_id)
    assert silence["id"] == silence_id and silence["status"]["state"] == "active"
    assert (silence["createdBy"], silence["comment"]) == ("U0ALICE", "runbook step 2")
    assert sorted(silence["matchers"], key=lambda m: m["name"]) == MATCHERS
    assert _time(silence["endsAt"]) == starts + timedelta(hours=1)
    assert silence_id in {s["id"] for s in _all_silences(alertmanager)}

    client.expire_silence(silence_id)
    expired = client.get_silence(silence_id)
    assert expired["status"]["state"] == "expired" and _time(expired["endsAt"]) <= datetime.now(UTC)
    client.expire_silence(silence_id)  # again: already over, not an error


def test_a_future_silence_is_pending(client: AlertmanagerClient) -> None:
    starts = datetime.now(UTC) + timedelta(hours=2)
    silence_id = client.create_silence(MATCHERS[:1], starts, starts + timedelta(hours=1), "U0ALICE", "maintenance")
    assert client.get_silence(silence_id)["status"]["state"] == "pending"


def test_times_in_other_zones_and_naive_times_are_sent_as_utc(client: AlertmanagerClient) -> None:
    tokyo = timezone(timedelta(hours=9))
    starts = datetime.now(tokyo).replace(microsecond=0)
    ends = (starts + timedelta(minutes=30)).astimezone(UTC).replace(tzinfo=None)  # naive, meant as UTC
    silence = client.get_silence(client.create_silence(MATCHERS[:1], starts, ends, "U0ALICE", "zones"))
    assert _time(silence["endsAt"]) == starts + timedelta(minutes=30)


@pytest.mark.parametrize(("matchers", "says"), [
    ([{"name": "alertname", "value": "(", "isRegex": True, "isEqual": True}],
     r'HTTP 400\): silence invalid: invalid label matcher 0: invalid regular expression "\("'),
    ([{"name": "", "value": "x", "isRegex": False, "isEqual": True}],
     r'HTTP 400\): silence invalid: invalid label matcher 0: invalid label name ""'),
    ([{"name": "alertname", "value": ".*", "isRegex": True, "isEqual": True}],
     r"HTTP 400\): silence invalid: at least one matcher must not match the empty string"),
    ([], r"HTTP 422\): matchers in body should have at least 1 items"),
])
def test_a_bad_matcher_carries_alertmanager_message(client: AlertmanagerClient, matchers: list[dict[str, Any]],
                                                    says: str) -> None:
    now = datetime.now(UTC)
    with pytest.raises(AlertmanagerError, match=says) as caught:
        client.create_silence(matchers, now, now + timedelta(hours=1), "U0ALICE", "bad")
    assert str(caught.value).endswith("fix the matchers or the start and end times")


def test_an_end_before_the_start_is_refused(client: AlertmanagerClient) -> None:
    now = datetime.now(UTC)
    with pytest.raises(AlertmanagerError, match=r"HTTP 400.*start time must be before end time"):
        client.create_silence(MATCHERS[:1], now, now - timedelta(hours=1), "U0ALICE", "backwards")


def test_unknown_silences(client: AlertmanagerClient) -> None:
    unknown = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(AlertmanagerError, match=r"HTTP 404.*a wrong silence id"):
        client.get_silence(unknown)
    with pytest.raises(AlertmanagerError, match="a wrong silence id"):  # Alertmanager answers DELETE with 500
        client.expire_silence(unknown)
    with pytest.raises(AlertmanagerError, match=r"HTTP 422.*must be of type uuid.*; check the silence id"):
        client.get_silence("not-a-uuid")
    with pytest.raises(AlertmanagerError, match="not an Alertmanager silence id"):
        client.get_silence("../silences")  # never sent: it would reach the listing endpoint


def test_unreachable_alertmanager_names_the_setting() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with AlertmanagerClient(url, timeout=2) as am, pytest.raises(AlertmanagerError) as caught:
        am.get_silence("00000000-0000-0000-0000-000000000000")
    assert f"cannot reach Alertmanager at {url}" in str(caught.value)
    assert "check ALERTMANAGER_URL" in str(caught.value)


class _HttpsOnly(BaseHTTPRequestHandler):
    """A proxy that sends plain HTTP to HTTPS, as ingress controllers do."""

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(308)
        self.send_header("Location", f"https://alertmanager.example.com{self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirecting_url_names_the_setting() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HttpsOnly)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with AlertmanagerClient(f"http://127.0.0.1:{server.server_address[1]}") as am, \
                pytest.raises(AlertmanagerError) as caught:
            am.get_silence("00000000-0000-0000-0000-000000000000")
    finally:
        server.shutdown()
        server.server_close()
    assert "redirects to 'https://alertmanager.example.com/api/v2/silence/" in str(caught.value)
    assert str(caught.value).endswith("check ALERTMANAGER_URL")


def test_from_environment(alertmanager: RunningProcess) -> None:
    assert from_environment({}) is None and from_environment({"ALERTMANAGER_URL": ""}) is None
    am = from_environment({"ALERTMANAGER_URL": alertmanager.url + "/"})
    assert am is not None
    with am:
        assert am.base_url == alertmanager.url
        now = datetime.now(UTC)
        assert am.get_silence(am.create_silence(MATCHERS[:1], now, now + timedelta(minutes=5), "env", "env"))


# -- through the alertmanager.silence action ----------------------------------------------------------------

def test_the_action_creates_a_narrow_silence(client: AlertmanagerClient) -> None:
    now = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)  # the action's clock: a pending silence in 2030
    output = _silence({"matchers": 'alertname="DiskFull", namespace=~"prod-.*"', "duration": "2h",
                       "comment": "disk cleanup running"}, ActionContext(alertmanager=client, user="U0BOB",
                                                                          now=lambda: now))
    assert output.text.endswith('for alertname="DiskFull", namespace=~"prod-.*" until 2030-05-01 14:00 UTC')
    silence = client.get_silence(output.text.split()[1])
    assert (silence["createdBy"], silence["comment"]) == ("U0BOB", "disk cleanup running")
    assert (_time(silence["startsAt"]), _time(silence["endsAt"])) == (now, now + timedelta(hours=2))
    assert sorted((m["name"], m["value"], m["isRegex"], m["isEqual"]) for m in silence["matchers"]) == [
        ("alertname", "DiskFull", False, True), ("namespace", "prod-.*", True, True)]


def test_a_dry_run_creates_nothing(client: AlertmanagerClient, alertmanager: RunningProcess) -> None:
    before = len(_all_silences(alertmanager))
    output = _silence({"matchers": 'alertname="DiskFull"'}, ActionContext(alertmanager=client, dry_run=True))
    assert output.text == 'dry run: would silence alertname="DiskFull" for 1h'
    assert len(_all_silences(alertmanager)) == before


def test_the_action_reports_what_alertmanager_refuses(client: AlertmanagerClient) -> None:
    # Python's re accepts a lookahead; Alertmanager's RE2 does not, so only Alertmanager can refuse it.
    with pytest.raises(ActionError, match=r"^Silence alert failed: Alertmanager refused .*invalid regular expression"):
        _silence({"matchers": 'alertname="DiskFull", namespace=~"(?=prod)"'}, ActionContext(alertmanager=client))
    with pytest.raises(ActionError, match="set ALERTMANAGER_URL"):
        _silence({"matchers": 'alertname="DiskFull"'}, ActionContext())
