"""The `oncall-bot` command: runbook lint / schema / render, and maintenance windows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.config import OncallConfig
from bot.db import Database
from bot.escalation import active_maintenance
from commands.cli import main
from tests.alerts import alert, group

DATA = Path(__file__).parent / "data" / "runbooks"
SHIPPED = Path(__file__).parent.parent / "bot" / "runbooks"


def oncall_bot() -> str:
    """The installed console script (proves the entry point in pyproject works)."""
    found = shutil.which("oncall-bot", path=str(Path(sys.executable).parent)) or shutil.which("oncall-bot")
    assert found, "the oncall-bot command is not installed: pip install -e ."
    return found


# -- runbook lint ------------------------------------------------------------------------------------

def test_lint_passes_the_shipped_runbooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "lint", "--shipped"]) == 0
    assert capsys.readouterr().out.strip() == f"{len(list(SHIPPED.glob('*.yaml')))} runbooks ok"


def test_lint_reports_file_line_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "lint", str(DATA / "broken")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{DATA / 'broken' / 'actions.yaml'}:10: steps[0].action.type: unknown action 'shell.exec'" in lines[0]
    assert any(line.startswith(f"{DATA / 'broken' / 'dupkey.yaml'}:3: duplicate key 'title'") for line in lines)
    assert any("overlap.yaml" in line and "may select the same alerts" in line for line in lines)
    assert all(line.split(":")[1].isdigit() for line in lines)  # every problem has its line


def test_lint_without_paths_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "lint"]) == 2
    assert "--shipped" in capsys.readouterr().err


def test_the_console_script_lints_through_the_entry_point() -> None:
    good = subprocess.run([oncall_bot(), "runbook", "lint", str(DATA / "good")], capture_output=True, text=True)
    assert good.returncode == 0 and good.stdout.strip().endswith("runbooks ok")
    bad = subprocess.run([oncall_bot(), "runbook", "lint", str(DATA / "broken" / "schema.yaml")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout.startswith(str(DATA / "broken" / "schema.yaml") + ":")


def test_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["anyOf"][0] == {"$ref": "#/$defs/Runbook"}  # a runbook, or a list of them in one file
    assert {"id", "title", "match", "steps"} <= set(schema["$defs"]["Runbook"]["properties"])


# -- runbook render ----------------------------------------------------------------------------------

def write_alert(tmp_path: Path, payload: object) -> Path:
    path = tmp_path / "alert.json"
    path.write_text(json.dumps(payload, ensure_ascii=False))
    return path


def test_render_prints_the_blocks_for_a_webhook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = group(alert("PodRestartLoop", labels={"pod": "api-1", "deployment": "api"}))
    alert_file = str(write_alert(tmp_path, payload))
    assert main(["runbook", "render", str(SHIPPED / "pod-restart-loop.yaml"), "--alert", alert_file,
                 "--namespace", "prod"]) == 0
    message = json.loads(capsys.readouterr().out)
    text = json.dumps(message)
    assert message["blocks"][0]["type"] == "header" and "Pod restart loop" in text
    assert '"action_id": "runbook_step:0"' in text and "allow-list" not in text
    # Without the namespace allowed, the buttons are left out and the steps say why.
    assert main(["runbook", "render", str(SHIPPED / "pod-restart-loop.yaml"), "--alert", alert_file]) == 0
    text = capsys.readouterr().out
    assert "runbook_step:0" not in text and "is not in the allow-list" in text


def test_render_in_japanese_from_a_single_alert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    single = {"labels": {"alertname": "PodRestartLoop", "namespace": "prod", "pod": "api-1", "deployment": "api"},
              "annotations": {}}
    assert main(["runbook", "render", str(SHIPPED / "pod-restart-loop.yaml"), "--alert",
                 str(write_alert(tmp_path, single)), "--locale", "ja"]) == 0
    assert "Pod の再起動ループ" in capsys.readouterr().out


def test_render_without_a_match_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = group(alert("NothingLikeThis"))
    assert main(["runbook", "render", str(SHIPPED / "pod-restart-loop.yaml"),
                 "--alert", str(write_alert(tmp_path, payload))]) == 1
    assert "no runbook matches 'NothingLikeThis'" in capsys.readouterr().err


def test_render_of_a_broken_file_prints_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runbook", "render", str(DATA / "broken" / "actions.yaml"),
                 "--alert", str(write_alert(tmp_path, group()))]) == 1
    assert "unknown action 'shell.exec'" in capsys.readouterr().err


def test_render_of_a_bad_alert_file_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "alert.json"
    path.write_text("{not json")
    assert main(["runbook", "render", str(SHIPPED / "pod-restart-loop.yaml"), "--alert", str(path)]) == 2
    assert "not JSON" in capsys.readouterr().err


# -- maintenance -------------------------------------------------------------------------------------

@pytest.fixture
def db_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("USER", "kenji")
    return database_url


def test_maintenance_add_list_cancel(db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maintenance", "add", "--name", "db upgrade", "--for", "2h", "--match", "service=db|postgres"]) == 0
    added = capsys.readouterr().out
    window_id = int(added.split()[2])
    assert "'db upgrade'" in added

    assert main(["maintenance", "list"]) == 0
    [row] = capsys.readouterr().out.splitlines()
    assert row.split("\t")[:4] == [str(window_id), "active", "db upgrade", '{"service": "db|postgres"}']
    assert row.endswith("cli:kenji")

    db = Database(db_env)
    try:
        now = datetime.now(timezone.utc)
        with db.read() as session:
            assert active_maintenance(session, OncallConfig(), {"service": "postgres"}, now)[0] == "db upgrade"
            assert active_maintenance(session, OncallConfig(), {"service": "api"}, now) is None

        assert main(["maintenance", "cancel", str(window_id)]) == 0
        with db.read() as session:
            assert active_maintenance(session, OncallConfig(), {"service": "postgres"}, now) is None
    finally:
        db.dispose()
    capsys.readouterr()
    assert main(["maintenance", "cancel", str(window_id)]) == 1
    assert "no maintenance window" in capsys.readouterr().err


def test_maintenance_upcoming_window(db_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    start = datetime.now(timezone.utc) + timedelta(days=1)
    assert main(["maintenance", "add", "--name", "tomorrow", "--start", start.isoformat(),
                 "--end", (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")]) == 0
    capsys.readouterr()
    assert main(["maintenance", "list"]) == 0
    assert "\tupcoming\ttomorrow\t{}\t" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--start", "2026-12-01T02:00:00", "--for", "1h"], "no time zone"),
    (["--start", "2026-12-01T02:00:00Z", "--end", "2026-12-01T01:00:00Z"], "must end after it starts"),
    (["--for", "2h", "--match", "service=(db"], "not a valid regular expression"),
    ([], "give --end or --for"),
])
def test_maintenance_add_refuses_bad_input(db_env: str, capsys: pytest.CaptureFixture[str], args: list[str],
                                           message: str) -> None:
    assert main(["maintenance", "add", "--name", "x", *args]) == 2
    assert message in capsys.readouterr().err


def test_serve_stops_with_the_setting_named_when_runbooks_fail_lint(tmp_path: Path) -> None:
    env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "ALERTMANAGER_WEBHOOK_TOKEN": "t",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "RUNBOOKS_PATH": str(DATA / "broken")}
    result = subprocess.run([oncall_bot(), "serve", "--port", "0"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "RUNBOOKS_PATH" in result.stderr and "actions.yaml:10" in result.stderr
