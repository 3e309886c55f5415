"""Settings and the YAML policy: defaults, overrides and errors that name the fix."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

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


@pytest.mark.parametrize(("text", "named"), [
    ("channels: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels deep"),
    ("channels:\n  announce: C1\x00\n", "not allowed in YAML"),
    ("x: " + "9" * 5000 + "\n", "digits"),
])
def test_a_hostile_config_file_is_refused_quickly_with_the_line(tmp_path, text: str,  # type: ignore[no-untyped-def]
                                                                 named: str) -> None:
    path = tmp_path / "oncall.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=named) as caught:
        load_config_file(path)
    assert f"{path}:" in str(caught.value)


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


OPENED = datetime.now(UTC)
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


# -- wrong configuration is refused, one problem a line, with the line -------------------------------

BAD_CONFIG = """\
channels:
  announce: "not a channel!"
runbooks:
  namespaces: [prod-eu, Prod_NS]
  urls:
    - https://status.example.com/health
    - "ftp://x"
    - "https:///no-host"
  locale: fr
escalation:
  P2:
    ack_minutes: 0
    update_minutes: 10081
    page_after_minutes: 20000
    levels:
      - {name: L2, after_minutes: 0, pagerduty_level: 1}
      - {name: L3, after_minutes: 10081, pagerduty_level: 2}
incidents:
  auto_resolve: true
  auto_resolve: false
"""


def bad_config_lines(path: object) -> list[str]:
    return [
        f"{path}:2: channels.announce: 'not a channel!' is neither a channel id (C… or G…, as in the channel's "
        "details) nor a channel name (lowercase letters, digits, '-' and '_', at most 80, optional '#')",
        f"{path}:4: runbooks.namespaces[1]: 'Prod_NS' is not an RFC 1123 DNS label (lowercase letters, digits and "
        "'-', 1-63 characters, alphanumeric at both ends)",
        f"{path}:7: runbooks.urls[1]: 'ftp://x' must be http(s)://host/... without user information",
        f"{path}:8: runbooks.urls[2]: 'https:///no-host' must be http(s)://host/... without user information",
        f"{path}:9: runbooks.locale: unknown locale 'fr': the bot's texts and shipped runbooks exist in en, ja",
        f"{path}:12: escalation.P2.ack_minutes: must be 1 to 10080 minutes (a week), or null for none",
        f"{path}:13: escalation.P2.update_minutes: must be 1 to 10080 minutes (a week), or null for none",
        f"{path}:14: escalation.P2.page_after_minutes: must be 0 (at once) to 10080 minutes, 'ack_deadline' or "
        "null (never page)",
        f"{path}:17: escalation.P2.levels[1].after_minutes: must be 0 to 10080 minutes (a week)",
        f"{path}:20: incidents.auto_resolve: duplicate key (the later value would silently win); keep one",
    ]


def test_every_problem_is_one_line_with_file_and_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "oncall.yaml"
    path.write_text(BAD_CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert caught.value.problems == bad_config_lines(path)
    assert caught.value.summary == \
        f"ONCALL_CONFIG={path}: 10 problems; see `oncall-bot config schema` for the format"


def test_config_check_prints_every_problem_and_fails(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "oncall.yaml"
    path.write_text(BAD_CONFIG)
    result = subprocess.run([sys.executable, "-m", "commands.cli", "config", "check", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [*bad_config_lines(path), "oncall-bot: configuration error: "
                                          f"ONCALL_CONFIG={path}: 10 problems; see `oncall-bot config schema` "
                                          "for the format"]


def test_serve_with_a_bad_config_prints_the_same_and_stops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "oncall.yaml"
    path.write_text(BAD_CONFIG)
    env = {"PATH": "/usr/bin:/bin", **ENV, "ONCALL_CONFIG": str(path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'oncall.db'}"}
    result = subprocess.run([sys.executable, "-m", "commands.cli", "serve", "--port", "0"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[:10] == bad_config_lines(path)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "oncall.db").exists()  # stopped before anything started


@pytest.mark.parametrize(("text", "line"), [
    ("channels:\n  announce: C0INC\n  private: true\n  private: false\n", "4: channels.private: duplicate key"),
    ("runbooks:\n  namespaces: [a, b\nchannels: {}\n", "3: invalid YAML: expected ',' or ']', but got ':'"),
    ("incidents:\n  auto_resolve: true\n  reopen_minutes: 5\n", "3: incidents.reopen_minutes: unknown key (a typo?)"),
    ("escalation:\n  P1:\n    levels:\n      - {name: L2, after_minutes: 0}\n",
     "4: escalation.P1.levels[0].pagerduty_level: required key is missing"),
    ("- channels\n", "1: (top): Input should be a valid dictionary"),
    ("a: 1\n---\nb: 2\n", "2: invalid YAML: but found another document"),
])
def test_each_problem_names_its_line(tmp_path, text: str, line: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "oncall.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:{line}")


def test_valid_values_at_the_limits_are_accepted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "oncall.yaml"
    path.write_text("""\
channels: {announce: "#inc_alerts-1"}
runbooks:
  namespaces: [prod-eu, "0"]
  urls: ["https://status.example.com/", "http://10.0.0.1:8080/health"]
  locale: ja
escalation:
  P1: {ack_minutes: 1, page_after_minutes: 0, update_minutes: 10080}
  P2: {levels: [{name: L2, after_minutes: 0, pagerduty_level: 1}, {name: L3, after_minutes: 10080,
       pagerduty_level: 2}]}
""")
    config = load_config_file(path)
    assert config.runbooks.locale == "ja" and config.escalation.P1.page_minutes == 0
    assert config.escalation.P2.levels[1].after_minutes == 10080
    for announce in ("C0INCIDENTS", "G01ABC", "incidents", "#incidents", "a" * 80):
        assert OncallConfig.model_validate({"channels": {"announce": announce}}).channels.announce == announce
    for announce in ("Incidents", "c-" + "a" * 79, "#", "inc idents", "D0DIRECT"):
        with pytest.raises(ValueError, match="neither a channel id"):
            OncallConfig.model_validate({"channels": {"announce": announce}})


def test_a_yaml_merge_key_that_is_overridden_is_not_a_duplicate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "oncall.yaml"
    path.write_text("channels:\n  <<: {announce: C0ONE, private: true}\n  announce: C0TWO\n"
                    "runbooks:\n  locale: ja\n  locale: en\n")
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    assert [p.split(": ", 1)[1] for p in caught.value.problems] == \
        ["runbooks.locale: duplicate key (the later value would silently win); keep one"]
    path.write_text("channels:\n  <<: {announce: C0ONE, private: true}\n  announce: C0TWO\n")
    assert load_config_file(path).channels.model_dump(include={"announce", "private"}) == \
        {"announce": "C0TWO", "private": True}
    path.write_text("base: &b {auto_resolve: false, reopen_window_minutes: 5}\n")  # unknown top-level key
    with pytest.raises(ConfigError, match="base: unknown key"):
        load_config_file(path)


def test_the_shipped_defaults_pass_the_new_limits() -> None:
    policy = OncallConfig().escalation
    assert all(1 <= (getattr(policy, s).ack_minutes or 1) <= 10080 for s in ("P1", "P2", "P3", "P4"))
