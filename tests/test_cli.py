"""The `oncall-bot` command: runbook lint / schema / render, maintenance windows and jobs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from bot.config import OncallConfig
from bot.db import Database
from bot.escalation import active_maintenance
from bot.models import Job, JobStatus
from bot.outbox import Outbox, PermanentError, enqueue
from commands.cli import main
from tests.alerts import alert, group
from tests.conftest import FakeClock, free_port

DATA = Path(__file__).parent / "data" / "runbooks"
SHIPPED = Path(__file__).parent.parent / "bot" / "runbooks"
WEB = DATA / "good" / "web.yaml"  # two runbooks: web-down (priority 10, namespaces prod-eu/us) and web-any
PROBLEM_LINE = re.compile(r"^\S+:\d+: (error|warning): \S")


def oncall_bot() -> str:
    """The installed console script (proves the entry point in pyproject works)."""
    found = shutil.which("oncall-bot", path=str(Path(sys.executable).parent)) or shutil.which("oncall-bot")
    assert found, "the oncall-bot command is not installed: .venv/bin/pip install -e ."
    return found


# -- runbook lint ------------------------------------------------------------------------------------

def test_lint_passes_the_shipped_runbooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "lint", "--shipped"]) == 0
    assert capsys.readouterr().out == f"{len(list(SHIPPED.glob('*.yaml')))} runbooks ok\n"


def test_lint_prints_file_line_severity_message_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    schema = DATA / "broken" / "schema.yaml"
    assert main(["runbook", "lint", str(schema)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{schema}:1: error: id: 'Web_Down' is not an id: lowercase letters, digits and '-', at most 64 characters",
        f"{schema}:5: error: match.labels.namespace: invalid regular expression '(': missing ), unterminated "
        "subpattern at position 0",
        f"{schema}:7: error: steps[0]: missing field 'title'",
        f"{schema}:8: error: steps[0]: unknown field 'titel'",
        f"{schema}:11: error: steps[1].title: a per-language map needs an 'en' entry (the fallback)",
    ]


def test_lint_walks_a_directory(capsys: pytest.CaptureFixture[str]) -> None:
    broken = DATA / "broken"
    assert main(["runbook", "lint", str(broken)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert all(PROBLEM_LINE.match(line) for line in lines), lines
    assert lines[0].startswith(f"{broken / 'actions.yaml'}:10: error: steps[0].action.type: unknown action "
                               "'shell.exec'")
    assert f"{broken / 'dupkey.yaml'}:3: error: duplicate key 'title'" in lines
    assert f"{broken / 'yaml-error.yaml'}:5: error: invalid YAML: expected ',' or ']', but got ':'" in lines
    assert f"{broken / 'params.yaml'}:23: warning: steps[2].risk: low is below k8s.rollout_undo's own risk " \
           "high, which applies" in lines
    assert any(line.startswith(f"{broken / 'overlap.yaml'}:7: error: match may select the same alerts as runbook "
                               "'latency-a'") for line in lines)
    assert {Path(line.split(":")[0]).name for line in lines} == {p.name for p in broken.glob("*.yaml")}


def test_warnings_pass_unless_strict(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "warnings" / "unguaranteed.yaml"
    warning = (f"{path}:14: warning: steps[0].action.params.selector: label 'app' is not guaranteed by the match; "
               "require it in match.labels, list it in expects, or give a default")
    assert main(["runbook", "lint", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [warning, "1 runbook ok, 1 warning"]
    assert main(["runbook", "lint", "--strict", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [warning]


def test_team_runbooks_are_not_checked_against_the_shipped_ones(capsys: pytest.CaptureFixture[str]) -> None:
    # web-any matches Web.* at priority 0, as a shipped runbook's regex might: the bot lets the
    # team's win, so linting both must not call it a clash.
    assert main(["runbook", "lint", str(DATA / "good"), "--shipped"]) == 0
    assert capsys.readouterr().out == f"{2 + len(list(SHIPPED.glob('*.yaml')))} runbooks ok\n"


def test_lint_of_nothing_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "lint", str(tmp_path)]) == 1
    assert f"no runbooks (*.yaml, *.yml) in {tmp_path}" in capsys.readouterr().err
    assert main(["runbook", "lint", str(tmp_path / "typo")]) == 1
    assert capsys.readouterr().out == f"{tmp_path / 'typo'}:1: error: no such file or directory\n"
    assert main(["runbook", "lint"]) == 2
    assert "--shipped" in capsys.readouterr().err


def test_lint_reads_yml_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nested").mkdir()
    shutil.copy(DATA / "warnings" / "unguaranteed.yaml", tmp_path / "nested" / "api.yml")
    (tmp_path / "notes.txt").write_text("not a runbook")
    assert main(["runbook", "lint", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 runbook ok, 1 warning"


def test_the_console_script_runs_the_cli() -> None:
    good = subprocess.run([oncall_bot(), "runbook", "lint", str(DATA / "good")], capture_output=True, text=True,
                          timeout=60)
    assert (good.returncode, good.stdout) == (0, "2 runbooks ok\n")
    bad = subprocess.run([oncall_bot(), "runbook", "lint", str(DATA / "broken" / "schema.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stdout.startswith(f"{DATA / 'broken' / 'schema.yaml'}:1: error: ")


# -- runbook schema ----------------------------------------------------------------------------------

def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["anyOf"][0] == {"$ref": "#/$defs/Runbook"}  # a runbook, or a list of them in one file
    runbook = schema["$defs"]["Runbook"]
    assert {"id", "title", "match", "steps", "namespaces"} <= set(runbook["properties"])
    assert {"id", "title", "match", "steps"} <= set(runbook["required"])
    assert "k8s.logs" in schema["$defs"]["ActionRef"]["properties"]["type"]["enum"]


# -- runbook render ----------------------------------------------------------------------------------

def write_json(tmp_path: Path, payload: object) -> str:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    return str(path)


def render(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main(["runbook", "render", *args]) == 0
    return json.loads(capsys.readouterr().out)


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["accessory"]["action_id"]: b["accessory"] for b in message["blocks"] if "accessory" in b}


WEB_LABELS = {"namespace": "prod-eu", "service": "web", "pod": "web-1"}


def test_render_prints_the_blocks_of_the_best_match(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = group(alert("WebDown", labels=WEB_LABELS, annotations={"runbook_url": "https://wiki.example.com/web"}))
    message = render(capsys, str(WEB), "--alert", write_json(tmp_path, payload))
    assert set(message) == {"blocks"}
    assert message["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": "Web down", "emoji": True}}
    assert "`web-down` · 5 steps · :book: <https://wiki.example.com/web|Runbook>" in json.dumps(message,
                                                                                                ensure_ascii=False)
    found = buttons(message)
    assert found["runbook_step:0"] == {"type": "button", "text": {"type": "plain_text", "text": "Run", "emoji": True},
                                       "action_id": "runbook_step:0", "value": "step-0"}
    assert found["runbook_step:3"]["text"]["text"] == "Request approval"  # k8s.scale: a remediation


def test_render_picks_the_runbook_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alert_file = write_json(tmp_path, group(alert("WebDown", labels=WEB_LABELS)))
    message = render(capsys, str(WEB), "--alert", alert_file, "--runbook", "web-any")
    assert message["blocks"][0]["text"]["text"] == "Any web alert" and not buttons(message)
    assert main(["runbook", "render", str(WEB), "--alert", alert_file, "--runbook", "nope"]) == 1
    assert "no runbook 'nope' (it has web-down, web-any)" in capsys.readouterr().err


def test_render_in_japanese_from_a_single_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    single = {"labels": {"alertname": "WebDown", **WEB_LABELS}, "annotations": {}}
    message = render(capsys, str(WEB), "--alert", write_json(tmp_path, single), "--locale", "ja")
    assert message["blocks"][0]["text"]["text"] == "ウェブ停止"
    assert buttons(message)["runbook_step:0"]["text"]["text"] == "実行"
    assert "5 ステップ" in json.dumps(message, ensure_ascii=False)


def test_render_takes_the_first_firing_alert_of_a_webhook(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    payload = group(alert("WebDown", status="resolved", labels={**WEB_LABELS, "pod": "web-1"}),
                    alert("WebDown", labels={**WEB_LABELS, "pod": "web-2"}))
    text = json.dumps(render(capsys, str(WEB), "--alert", write_json(tmp_path, payload)))
    assert "pod=web-2" in text and "web-1" not in text


def test_render_uses_the_runbooks_allow_lists_only(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONCALL_CONFIG", str(tmp_path / "no-such-config.yaml"))  # not read
    alert_file = write_json(tmp_path, group(alert("WebDown", labels={**WEB_LABELS, "namespace": "prod-asia"})))
    message = render(capsys, str(WEB), "--alert", alert_file)
    assert set(buttons(message)) == {"runbook_step:2", "runbook_step:4"}  # http.check and the silence
    assert json.dumps(message).count("namespace 'prod-asia' is not in the allow-list (allowed: prod-eu, prod-us)") == 3


def test_a_long_runbook_renders_as_several_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = "\n".join(f"  - {{id: s{i}, title: Step {i}, text: Do {i}.}}" for i in range(60))
    path = tmp_path / "long.yaml"
    path.write_text(f"id: long\ntitle: Long\nmatch: {{alertname: Long}}\nsteps:\n{steps}\n")
    messages = render(capsys, str(path), "--alert", write_json(tmp_path, {"labels": {"alertname": "Long"}}))
    assert isinstance(messages, list) and len(messages) == 2
    assert all(set(m) == {"blocks"} and len(m["blocks"]) <= 50 for m in messages)
    assert messages[1]["blocks"][0]["elements"][0]["text"] == "*Long* · continued (2/2)"


def test_render_without_a_match_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "render", str(WEB), "--alert", write_json(tmp_path, group(alert("NothingLikeThis")))]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{WEB}: no runbook matches alertname 'NothingLikeThis'" in captured.err


def test_render_of_a_file_that_fails_lint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "broken" / "actions.yaml"
    assert main(["runbook", "render", str(path), "--alert", write_json(tmp_path, group())]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{path}:10: error: steps[0].action.type: unknown action 'shell.exec'")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    (json.dumps({**group(), "version": "3"}), "not an Alertmanager webhook v4: version:"),
    (json.dumps({"alertname": "WebDown"}), "expected an Alertmanager webhook or one alert"),
])
def test_render_of_a_bad_alert_file_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                             message: str) -> None:
    path = tmp_path / "alert.json"
    path.write_text(content)
    assert main(["runbook", "render", str(WEB), "--alert", str(path)]) == 2
    assert f"oncall-bot: {path}: {message}" in capsys.readouterr().err


# -- maintenance -------------------------------------------------------------------------------------

def migrated(url: str) -> str:
    """The bot's database as `oncall-bot serve` leaves it: the CLI never creates or migrates one."""
    db = Database(url)
    try:
        db.migrate()
    finally:
        db.dispose()
    return url


@pytest.fixture
def db_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", migrated(database_url))
    monkeypatch.setenv("USER", "kenji")
    return database_url


def rows(capsys: pytest.CaptureFixture[str]) -> list[list[str]]:
    assert main(["maintenance", "list"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == "id\tstate\tname\tmatch\tstart\tend\tcreated_by"
    return [line.split("\t") for line in lines]


def test_maintenance_add_list_cancel(db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maintenance", "add", "--name", "db upgrade", "--for", "2h", "--match", "service=db|postgres",
                 "--match", "team=pay.*"]) == 0
    added = capsys.readouterr().out
    window_id = int(added.split()[2])
    assert added.startswith(f"maintenance window {window_id} added: 'db upgrade' ")
    assert added.endswith(' match {"service": "db|postgres", "team": "pay.*"}\n')

    [row] = rows(capsys)
    assert row[:4] == [str(window_id), "active", "db upgrade", '{"service": "db|postgres", "team": "pay.*"}']
    assert row[6] == "cli:kenji"

    db = Database(db_env)
    try:
        now = datetime.now(UTC)
        with db.read() as session:
            name, ends = active_maintenance(session, OncallConfig(), {"service": "postgres", "team": "payments"}, now)
            assert name == "db upgrade" and timedelta(minutes=119) < ends - now <= timedelta(hours=2)
            assert active_maintenance(session, OncallConfig(), {"service": "api", "team": "payments"}, now) is None
            assert active_maintenance(session, OncallConfig(), {"service": "db"}, now) is None  # no team

        assert main(["maintenance", "cancel", str(window_id)]) == 0
        assert capsys.readouterr().out == \
            f"maintenance window {window_id} 'db upgrade' cancelled; 0 held page(s) released\n"
        with db.read() as session:
            assert active_maintenance(session, OncallConfig(), {"service": "db", "team": "pay"}, now) is None
    finally:
        db.dispose()
    assert main(["maintenance", "list"]) == 0
    assert capsys.readouterr().out.startswith("no active or upcoming maintenance windows")
    assert main(["maintenance", "cancel", str(window_id)]) == 1
    assert f"maintenance window {window_id} was already cancelled at " in capsys.readouterr().err
    assert main(["maintenance", "cancel", "9999"]) == 1
    assert "maintenance window 9999 does not exist (see `oncall-bot maintenance list`)" in capsys.readouterr().err


def test_maintenance_upcoming_window_in_another_time_zone(db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    tokyo = timezone(timedelta(hours=9))
    start = (datetime.now(UTC) + timedelta(days=1)).replace(second=0, microsecond=0)
    assert main(["maintenance", "add", "--name", "tomorrow", "--start", start.astimezone(tokyo).isoformat(),
                 "--end", (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")]) == 0
    added = capsys.readouterr().out
    assert f"{start:%Y-%m-%dT%H:%MZ} to {start + timedelta(hours=1):%Y-%m-%dT%H:%MZ}, every incident" in added
    assert main(["maintenance", "add", "--name", "now", "--for", "30m"]) == 0
    capsys.readouterr()
    (now_row, later_row) = rows(capsys)
    assert now_row[1:4] == ["active", "now", "{}"]
    assert later_row[1:6] == ["upcoming", "tomorrow", "{}", f"{start:%Y-%m-%dT%H:%MZ}",
                              f"{start + timedelta(hours=1):%Y-%m-%dT%H:%MZ}"]

    db = Database(db_env)
    try:
        with db.read() as session:
            during = active_maintenance(session, OncallConfig(), {}, start + timedelta(minutes=59))
            assert during == ("tomorrow", start + timedelta(hours=1))
            assert active_maintenance(session, OncallConfig(), {}, start + timedelta(hours=1)) is None
    finally:
        db.dispose()


def test_maintenance_defaults_to_oncall_db_here(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("USER", "aiko")
    migrated("sqlite:///oncall.db")  # the bot ran here
    assert main(["maintenance", "add", "--name", "here", "--for", "1h"]) == 0
    assert capsys.readouterr().err == \
        f"oncall-bot: using the database sqlite:///oncall.db ({tmp_path / 'oncall.db'}; DATABASE_URL is not set)\n"
    assert [row[2] for row in rows(capsys)] == ["here"]


@pytest.mark.parametrize("args, message", [
    (["--start", "2026-12-01T02:00:00", "--for", "1h"], "--start '2026-12-01T02:00:00' has no time zone"),
    (["--start", "tomorrow", "--for", "1h"], "--start 'tomorrow' is not an ISO 8601 time"),
    (["--end", "2099-12-01 02:00"], "--end '2099-12-01 02:00' has no time zone"),
    (["--start", "2099-12-01T02:00:00Z", "--end", "2099-12-01T01:00:00Z"], "the window must end after it starts"),
    (["--start", "2020-12-01T02:00:00Z", "--end", "2020-12-01T04:00:00+00:00"], "would end in the past"),
    (["--for", "2 hours"], "'2 hours' is not a duration like 30m, 2h or 1h30m"),
    (["--for", "2h", "--match", "service=(db"], "match['service'] is not a valid regular expression"),
    (["--for", "2h", "--match", "service"], "--match 'service': write LABEL=REGEX"),
    (["--for", "2h", "--match", "my service=db"], "--match 'my service=db': write LABEL=REGEX"),
    (["--for", "2h", "--match", "service=db", "--match", "service=redis"], "--match names 'service' twice"),
])
def test_maintenance_add_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    database = tmp_path / "oncall.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    assert main(["maintenance", "add", "--name", "x", *args]) == 2
    assert message in capsys.readouterr().err
    assert not database.exists()  # checked before the database is touched


def test_maintenance_add_needs_exactly_one_end(capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["--for", "1h", "--end", "2099-01-01T00:00:00Z"]):
        with pytest.raises(SystemExit) as exited:
            main(["maintenance", "add", "--name", "x", *args])
        assert exited.value.code == 2
    assert "--end" in capsys.readouterr().err


def test_maintenance_names_an_unusable_database(capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://oncall:hunter2@127.0.0.1:1/oncall")
    assert main(["maintenance", "list"]) == 2
    assert capsys.readouterr().err == ("oncall-bot: DATABASE_URL=postgresql://oncall:***@127.0.0.1:1/oncall: cannot "
                                       "connect (connection refused); start PostgreSQL or fix DATABASE_URL\n")


def test_serve_stops_with_the_setting_named_when_runbooks_fail_lint(tmp_path: Path) -> None:
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "ALERTMANAGER_WEBHOOK_TOKEN": "t",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "RUNBOOKS_PATH": str(DATA / "broken")}
    result = subprocess.run([oncall_bot(), "serve", "--port", "0"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "RUNBOOKS_PATH" in result.stderr and "actions.yaml:10" in result.stderr


# -- which database, and never one by accident --------------------------------------------------------

DATABASE_COMMANDS = [["maintenance", "list"], ["maintenance", "add", "--name", "x", "--for", "1h"],
                     ["maintenance", "cancel", "1"], ["jobs", "list"], ["jobs", "list", "--failed"],
                     ["jobs", "retry", "1"], ["jobs", "retry", "--all-failed"]]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_a_command_run_elsewhere_creates_no_database(tmp_path: Path, command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run([oncall_bot(), *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (f"oncall-bot: DATABASE_URL=sqlite:///oncall.db: no database at {tmp_path / 'oncall.db'}; "
                             "run this from the bot's directory or set DATABASE_URL to the bot's database\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["jobs", "list"], ["maintenance", "list"], ["serve", "--port", "0"]],
                         ids=" ".join)
def test_an_unreachable_database_is_one_line_naming_database_url(tmp_path: Path, command: list[str]) -> None:
    closed = free_port()  # bound and closed again: nothing listens there
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "ALERTMANAGER_WEBHOOK_TOKEN": "t",
           "DATABASE_URL": f"postgresql://oncall:hunter2@127.0.0.1:{closed}/oncall"}
    result = subprocess.run([oncall_bot(), *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1:] == [
        f"oncall-bot: DATABASE_URL=postgresql://oncall:***@127.0.0.1:{closed}/oncall: cannot connect (connection "
        "refused); start PostgreSQL or fix DATABASE_URL"]
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_a_database_without_the_bots_schema_is_refused_not_migrated(database_url: str,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(database_url)
    try:
        db.ping()  # the database exists (SQLite: an empty file), as someone else's would
        monkeypatch.setenv("DATABASE_URL", database_url)
        for command in (["jobs", "list"], ["maintenance", "add", "--name", "x", "--for", "1h"]):
            assert main(command) == 2
            assert capsys.readouterr().err.endswith(
                ": not the bot's database (it has no oncall-bot tables); point DATABASE_URL at the database "
                "`oncall-bot serve` uses\n")
        with db.read() as session:
            assert inspect(session.connection()).get_table_names() == []
    finally:
        db.dispose()


# -- jobs list / retry --------------------------------------------------------------------------------

def run_outbox(url: str, clock: FakeClock, handlers: dict[str, Any]) -> None:
    db = Database(url)
    try:
        asyncio.run(Outbox(db, handlers, clock=clock).run_due())
    finally:
        db.dispose()


def add_jobs(url: str, clock: FakeClock) -> tuple[int, int, int]:
    """Two jobs that fail permanently, and one due in an hour (it stays pending)."""
    db = Database(url)
    try:
        with db.session() as session:
            jobs = [enqueue(session, "slack.announce", now=clock(), incident_id=7),
                    enqueue(session, "slack.card", now=clock(), incident_id=8),
                    enqueue(session, "slack.notice", now=clock(), incident_id=9, run_at=clock() + timedelta(hours=1))]
            session.flush()
            ids = tuple(job.id for job in jobs if job is not None)
    finally:
        db.dispose()
    assert len(ids) == 3
    return ids  # type: ignore[return-value]


async def refused(job: Any) -> None:
    raise PermanentError(f"channel_not_found: C0GONE\nfor job {job.id}")


def test_jobs_list_and_retry(db_env: str, clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
    announce, card, notice = add_jobs(db_env, clock)
    run_outbox(db_env, clock, {"slack.announce": refused, "slack.card": refused})

    assert main(["jobs", "list"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("oncall-bot: using the database ")
    header, *lines = out.splitlines()
    assert header.split() == ["id", "kind", "incident", "status", "attempts", "run_at", "last", "error"]
    cells = [line.split(None, 6) for line in lines]
    assert [c[:5] for c in cells] == [[str(announce), "slack.announce", "7", "failed", "1"],
                                      [str(card), "slack.card", "8", "failed", "1"],
                                      [str(notice), "slack.notice", "9", "pending", "0"]]
    assert cells[0][6] == f"channel_not_found: C0GONE for job {announce}"  # one line per job
    assert len({line.index("slack.") for line in lines} | {header.index("kind")}) == 1  # aligned columns

    assert main(["jobs", "list", "--failed"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]] == [str(announce), str(card)]

    assert main(["jobs", "retry", str(notice)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"oncall-bot: job {notice} is pending, not failed: only failed jobs are retried (a pending job is "
        "retried by the bot itself)")
    assert main(["jobs", "retry", "9999"]) == 1
    assert "job 9999 does not exist (see `oncall-bot jobs list`)" in capsys.readouterr().err

    before = clock()
    assert main(["jobs", "retry", str(announce)]) == 0
    assert capsys.readouterr().out == \
        f"job {announce} (slack.announce) pending again after 1 attempt; the bot runs it at its next poll\n"
    retried = job_row(db_env, announce)
    assert (retried.status, retried.attempts, retried.finished_at) == (JobStatus.PENDING, 1, None)
    assert before <= retried.run_at <= clock()

    ran: list[int] = []

    async def fixed(job: Any) -> None:
        ran.append(job.id)

    run_outbox(db_env, clock, {"slack.announce": fixed, "slack.card": refused})
    assert ran == [announce]
    assert (job_row(db_env, announce).status, job_row(db_env, announce).attempts) == (JobStatus.DONE, 2)
    assert job_row(db_env, card).status == JobStatus.FAILED  # not retried: not asked to

    assert main(["jobs", "retry", "--all-failed"]) == 0
    assert capsys.readouterr().out == f"1 failed job pending again: {card}\n"
    assert main(["jobs", "retry", "--all-failed"]) == 0
    assert capsys.readouterr().out == "0 failed jobs pending again\n"
    assert main(["jobs", "list", "--failed"]) == 0
    assert capsys.readouterr().out == "no failed jobs\n"


def test_jobs_retry_needs_an_id_or_all_failed(capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["3", "--all-failed"]):
        with pytest.raises(SystemExit) as exited:
            main(["jobs", "retry", *args])
        assert exited.value.code == 2
    assert "--all-failed" in capsys.readouterr().err


def job_row(url: str, job_id: int) -> Job:
    db = Database(url)
    try:
        with db.read() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job
    finally:
        db.dispose()
