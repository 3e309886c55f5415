"""Settings and the YAML policy: defaults, overrides and errors that name the fix."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from bot.config import ConfigError, OncallConfig, load_config_file, load_settings
from bot.models import Incident
from commands.slack_sync import channel_name

ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "ALERTMANAGER_WEBHOOK_TOKEN": "t"}


def test_default_severity_mapping_and_label_overrides() -> None:
    policy = OncallConfig.model_validate({"severity": {"overrides": [
        {"match": {"service": "payments|checkout", "env": "prod"}, "severity": "P1"}]}}).severity
    assert [policy.severity_of({"severity": s}) for s in ("critical", "ERROR", "warning", "info")] == \
        ["P1", "P2", "P3", "P4"]
    assert policy.severity_of({}) == "P3"
    assert policy.severity_of({"severity": "info", "service": "checkout", "env": "prod"}) == "P1"
    assert policy.severity_of({"severity": "info", "service": "checkout-v2", "env": "prod"}) == "P4"


def test_responders_union_of_matching_rules() -> None:
    config = OncallConfig.model_validate({"responders": [
        {"invite": ["U0ALL"]},
        {"match": {"team": "db"}, "invite": ["S0DBA", "dba@example.com", "U0ALL"]},
    ]})
    assert config.responders_for({"team": "db"}) == ["U0ALL", "S0DBA", "dba@example.com"]
    assert config.responders_for({"team": "web"}) == ["U0ALL"]


@pytest.mark.parametrize(("env", "named"), [
    ({}, "SLACK_BOT_TOKEN is not set"),
    ({**ENV, "SLACK_BOT_TOKEN": "xoxp-user"}, "must be a bot token"),
    ({k: v for k, v in ENV.items() if k != "SLACK_SIGNING_SECRET"}, "SLACK_SIGNING_SECRET is not set"),
    ({k: v for k, v in ENV.items() if k != "ALERTMANAGER_WEBHOOK_TOKEN"}, "ALERTMANAGER_WEBHOOK_TOKEN is not set"),
    ({**ENV, "DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL="),
    ({**ENV, "ONCALL_CONFIG": "/nonexistent.yaml"}, "cannot read the file"),
])
def test_missing_or_invalid_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(env)


def test_invalid_yaml_config_names_the_field_and_the_fix(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "oncall.yaml"
    path.write_text("severity:\n  map: {critical: P9}\nchannels:\n  name_template: 'inc-{alertname}'\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert "severity.map.critical" in message and "channels.name_template" in message
    assert "oncall-bot config schema" in message


def test_serve_stops_at_start_with_the_setting_named() -> None:
    result = subprocess.run([sys.executable, "-m", "commands.cli", "serve"], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN is not set" in result.stderr


def test_config_schema_command_prints_json_schema() -> None:
    result = subprocess.run([sys.executable, "-m", "commands.cli", "config", "schema"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert '"reopen_window_minutes"' in result.stdout and '"dedicated_for"' in result.stdout


OPENED = datetime.now(timezone.utc)
DAY = f"{OPENED:%Y%m%d}"


def _incident(**fields: object) -> Incident:
    base: dict[str, object] = dict(id=42, title="t", alertname="ServiceDown", severity="P1", created_at=OPENED)
    return Incident(**{**base, **fields})


@pytest.mark.parametrize(("alertname", "expected"), [
    ("ServiceDown", "inc-DAY-42-servicedown"),
    ("Disk Space/Low!!", "inc-DAY-42-disk-space-low"),
    ("サービス停止", "inc-DAY-42"),
    ("A" * 200, "inc-DAY-42-" + "a" * 64),
])
def test_channel_names_follow_slack_rules(alertname: str, expected: str) -> None:
    name = channel_name("inc-{date}-{seq}-{alertname}", _incident(alertname=alertname))
    assert name == expected.replace("DAY", DAY)
    assert len(name) <= 80
