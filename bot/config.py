"""Settings: environment variables (secrets, endpoints) and the optional YAML policy file.

The names of the environment variables and the YAML keys are the public interface.
`load_settings()` fails with a `ConfigError` that names the setting and the fix;
`oncall-bot serve` prints it and exits before anything starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from bot.actions import ACTIONS, Risk, get_action
from bot.escalation_policy import EscalationPolicy, PagerDutyConfig, check_regexes, labels_match
from bot.param_syntax import DnsLabel, check_node_pattern, check_url
from bot.yaml_lines import YamlDocument, YamlSyntaxError, dotted, load_yaml

__all__ = [
    "APPROVER_KINDS",
    "SEVERITIES",
    "ConfigError",
    "HeartbeatPolicy",
    "RemediationPolicy",
    "RunbookPolicy",
    "StormPolicy",
    "OncallConfig",
    "PostmortemPolicy",
    "Settings",
    "Severity",
    "load_settings",
    "load_config_file",
]

Severity = Literal["P1", "P2", "P3", "P4"]
SEVERITIES: tuple[Severity, ...] = ("P1", "P2", "P3", "P4")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and says how to fix it.

    For a config file, `problems` holds one `FILE:LINE: path: message` line per problem and
    `summary` the line that follows them; the message is all of them, one per line."""

    def __init__(self, summary: str, problems: Sequence[str] = ()) -> None:
        super().__init__("\n".join([*problems, summary]))
        self.summary, self.problems = summary, list(problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeverityOverride(_Strict):
    """Alerts whose labels all match (full-match regular expressions) get this severity."""

    match: dict[str, str] = Field(min_length=1, description="label name -> regular expression")
    severity: Severity

    @field_validator("match")
    @classmethod
    def _regexes_compile(cls, value: dict[str, str]) -> dict[str, str]:
        return check_regexes(value)

    def matches(self, labels: dict[str, str]) -> bool:
        return labels_match(self.match, labels)


def _default_severity_map() -> dict[str, Severity]:
    return {"critical": "P1", "error": "P2", "warning": "P3", "info": "P4"}


class SeverityPolicy(_Strict):
    label: str = Field("severity", description="the alert label that carries the severity")
    map: dict[str, Severity] = Field(
        default_factory=_default_severity_map,
        description="label value (case-insensitive) -> incident severity",
    )
    default: Severity = Field("P3", description="severity when the label is missing or unknown")
    overrides: list[SeverityOverride] = Field(default_factory=list, description="first match wins")

    def severity_of(self, labels: dict[str, str]) -> Severity:
        for override in self.overrides:
            if override.matches(labels):
                return override.severity
        value = labels.get(self.label, "").strip().lower()
        return {k.lower(): v for k, v in self.map.items()}.get(value, self.default)


# Slack's rules: ids are upper-case C… (public) or G… (private); names are lowercase.
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")
_CHANNEL_NAME = re.compile(r"#?[a-z0-9_-]{1,80}")

# The languages the shipped runbooks and the bot's own texts are written in (bot.runbook_format.localized).
LOCALES = ("en", "ja")


def _known_locale(value: str) -> str:
    if value not in LOCALES:
        raise ValueError(f"unknown locale {value!r}: the bot's texts and shipped runbooks exist in "
                         f"{', '.join(LOCALES)}")
    return value


def _default_dedicated_for() -> list[Severity]:
    return ["P1", "P2"]


class ChannelPolicy(_Strict):
    announce: str = Field(
        "incidents",
        description="channel (id like C0123 or name) where new incidents are announced and "
        "where incidents without their own channel get a thread",
    )
    dedicated_for: list[Severity] = Field(
        default_factory=_default_dedicated_for, description="severities that get their own channel"
    )
    name_template: str = Field(
        "inc-{date}-{seq}-{alertname}",
        description="placeholders: {date} (yyyymmdd), {seq}, {alertname}, {severity}, {service}, "
        "{namespace}; lowercased, other characters become '-', cut to 80",
    )
    private: bool = Field(False, description="create private channels")
    private_when: list[dict[str, str]] = Field(
        default_factory=list, description="incidents whose labels match one of these (label -> full-match regular "
        "expression, e.g. {alertname: SecurityIncident}) are private, like those declared private: a private "
        "channel whatever their severity, an announcement without details, `/incident list` hiding their title "
        "from people outside the channel")

    @field_validator("private_when")
    @classmethod
    def _private_matchers(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for match in value:
            if not match:
                raise ValueError("an empty match would make every incident private; name a label "
                                 "(`{alertname: '.*'}` if that is what you want)")
            check_regexes(match)
        return value

    def private_for(self, labels: dict[str, str]) -> bool:
        """Whether an incident with these labels is private by a `private_when` rule."""
        return any(labels_match(match, labels) for match in self.private_when)

    @field_validator("announce")
    @classmethod
    def _channel_id_or_name(cls, value: str) -> str:
        if _CHANNEL_ID.fullmatch(value) or _CHANNEL_NAME.fullmatch(value):
            return value
        raise ValueError(f"{value!r} is neither a channel id (C… or G…, as in the channel's details) nor a "
                         "channel name (lowercase letters, digits, '-' and '_', at most 80, optional '#')")

    @field_validator("name_template")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        unknown = set(re.findall(r"{(\w*)}", value)) - {
            "date", "seq", "alertname", "severity", "service", "namespace",
        }
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)} in name_template")
        if "{seq}" not in value:
            raise ValueError("name_template must contain {seq} so that channel names stay unique")
        return value


class ResponderRule(_Strict):
    """Who to invite when an incident's labels match (full-match regular expressions)."""

    match: dict[str, str] = Field(default_factory=dict, description="label -> regex; empty matches all")
    invite: list[str] = Field(
        min_length=1, description="Slack user ids (U…/W…), user group ids (S…) or e-mail addresses"
    )

    @field_validator("invite")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        for who in value:
            if not (re.fullmatch(r"[UWS][A-Z0-9]{2,}", who) or re.fullmatch(r"[^@\s]+@[^@\s]+", who)):
                raise ValueError(f"{who!r} is neither a Slack user/user-group id nor an e-mail address")
        return value

    def matches(self, labels: dict[str, str]) -> bool:
        return labels_match(self.match, labels)


class IncidentPolicy(_Strict):
    auto_resolve: bool = Field(True, description="resolve the incident when Alertmanager says the group resolved")
    reopen_window_minutes: int = Field(
        30, ge=0, description="a group firing again within this window reopens the same incident"
    )
    declared_alertname: str = Field(
        "ManualIncident", min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the alertname label of incidents declared in Slack (`/incident new`, the Declare incident "
        "shortcut): what runbooks, responders, routes and `private_when` match them by")


class RunbookPolicy(_Strict):
    """Allow-lists that every runbook gets on top of its own, and the language runbooks are posted in."""

    namespaces: list[DnsLabel] = Field(default_factory=list,
                                       description="Kubernetes namespaces actions may touch")
    urls: list[Annotated[str, AfterValidator(check_url)]] = Field(
        default_factory=list, description="URL prefixes http.check may GET (http(s)://host/...)")
    nodes: list[Annotated[str, AfterValidator(check_node_pattern)]] = Field(
        default_factory=list, description="node names or globs (worker-*) k8s.cordon/k8s.uncordon may touch; "
        "empty: those steps are disabled")
    locale: Annotated[str, AfterValidator(_known_locale)] = Field(
        "en", json_schema_extra={"enum": list(LOCALES)}, description="language of the posted runbook (en, ja); "
        "a step's output answers in the clicking user's Slack locale")


# The actions a `remediations.risk` entry may name: those that run only once approved.
REMEDIATIONS = tuple(spec.name for spec in ACTIONS if spec.kind == "remediation")


def _remediation_name(value: str) -> str:
    if value not in REMEDIATIONS:
        why = (f"{value} is a diagnostic: it runs without approval, so it has no risk to set" if get_action(value)
               else f"unknown action {value!r}")
        raise ValueError(f"{why}; the remediations are {', '.join(REMEDIATIONS)}")
    return value


APPROVER_KINDS = ("commander", "responders", "channel")


class RemediationPolicy(_Strict):
    """Who may approve a remediation, for how long a request stands, and how many may run."""

    enabled: bool = Field(True, description="kill switch: false refuses every remediation request")
    expiry_minutes: int = Field(15, ge=1, le=1440, description="a request not approved within this expires")
    self_approve_low: bool = Field(False, description="the requester may approve their own low-risk request")
    experts: list[str] = Field(default_factory=list, description="Slack user ids (U…/W…) or user group ids "
                               "(S…) who may approve high-risk remediations; none: high risk cannot be approved")
    approvers: list[str] = Field(
        default_factory=lambda: ["commander", "responders"],
        description="who may approve low and medium risk remediations (a second person; experts always may): "
        "`commander` (the incident's), `responders` (the people the bot called in: the matching `responders` "
        "rule's and whoever PagerDuty had on call), `channel` (anyone in the incident's channel: opt in, since "
        "anyone may join a public channel), Slack user ids (U…/W…) and user group ids (S…). Empty: only experts")
    budget_per_incident: int = Field(3, ge=0, description="remediations one incident may request (not denied "
                                     "or expired)")
    budget_per_day: int = Field(20, ge=0, description="remediations all incidents may request in 24 hours")
    risk: dict[Annotated[str, AfterValidator(_remediation_name)], Risk] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"enum": list(REMEDIATIONS)}},
        description="action -> low | medium | high: this installation's risk for a remediation, lower or higher "
        f"than the default ({', '.join(f'{s.name} {s.risk}' for s in ACTIONS if s.kind == 'remediation')}). "
        "A runbook step's `risk` can still only raise it, and scaling to 0 replicas is high whatever this says")

    @field_validator("experts")
    @classmethod
    def _slack_ids(cls, value: list[str]) -> list[str]:
        for who in value:
            if not re.fullmatch(r"[UWS][A-Z0-9]{2,}", who):
                raise ValueError(f"{who!r} is neither a Slack user id (U…/W…) nor a user group id (S…)")
        return value

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str]) -> list[str]:
        for who in value:
            if who not in APPROVER_KINDS and not re.fullmatch(r"[UWS][A-Z0-9]{2,}", who):
                raise ValueError(f"{who!r} is not one of {', '.join(APPROVER_KINDS)}, a Slack user id (U…/W…) "
                                 "or a user group id (S…)")
        return value


class PostmortemPolicy(_Strict):
    """What follows `/incident postmortem`."""

    archive_after_days: int = Field(7, ge=0, le=365, description="archive the incident's channel this many days "
                                    "after it moved to postmortem; 0: never archive it")


class HeartbeatPolicy(_Strict):
    """Alertmanager's always-firing alert as a heartbeat (bot.heartbeat): when it stops arriving,
    alerts are not reaching the bot, and the bot pages and says so in the announce channel."""

    alertname: str = Field("Watchdog", min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                           description="the heartbeat alert's alertname (kube-prometheus: Watchdog); its "
                           "groups open no incident")
    missing_after_minutes: int = Field(10, gt=0, le=10_080, description="page when no heartbeat arrived for "
                                       "this long; must exceed the repeat_interval of its Alertmanager route")
    enabled: bool | Literal["auto"] = Field(
        "auto", description="auto: watch it once the first heartbeat has arrived (a bot whose Alertmanager "
        "sends none never pages); true: also page when none arrives within missing_after_minutes of the "
        "bot's first start; false: no heartbeat: an alert of that name is an ordinary alert")

    @property
    def active(self) -> bool:
        """Whether alerts named `alertname` are heartbeats at all."""
        return self.enabled is not False


class StormPolicy(_Strict):
    """Storm mode (bot.storm): Slack creates about 20 channels a minute, so while alert groups
    open incidents faster than this rate, new groups join one storm incident instead."""

    max_new_incidents: int = Field(10, description="incidents (1 to 1000) that may open within per_minutes "
                                   "before new groups join the storm incident (Slack creates ~20 channels a minute)")
    per_minutes: int = Field(5, description="the window (1 to 1440 minutes) the rate is counted over")
    enabled: bool = Field(True, description="false: every group opens its own incident, however many arrive")

    @field_validator("max_new_incidents")
    @classmethod
    def _rate(cls, value: int) -> int:
        if not 1 <= value <= 1_000:
            raise ValueError(f"must be 1 to 1000 incidents, not {value} (at 0 every group would join a storm)")
        return value

    @field_validator("per_minutes")
    @classmethod
    def _window(cls, value: int) -> int:
        if not 1 <= value <= 1_440:
            raise ValueError(f"must be 1 to 1440 minutes (a day), not {value}")
        return value


class OncallConfig(_Strict):
    """The optional YAML file named by ONCALL_CONFIG."""

    severity: SeverityPolicy = Field(default_factory=SeverityPolicy)
    channels: ChannelPolicy = Field(default_factory=ChannelPolicy)
    responders: list[ResponderRule] = Field(default_factory=list, description="every matching rule invites")
    incidents: IncidentPolicy = Field(default_factory=IncidentPolicy)
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    pagerduty: PagerDutyConfig = Field(default_factory=PagerDutyConfig)
    runbooks: RunbookPolicy = Field(default_factory=RunbookPolicy)
    remediations: RemediationPolicy = Field(default_factory=RemediationPolicy)
    postmortem: PostmortemPolicy = Field(default_factory=PostmortemPolicy)
    heartbeat: HeartbeatPolicy = Field(default_factory=HeartbeatPolicy)
    storm: StormPolicy = Field(default_factory=StormPolicy)

    def responders_for(self, labels: dict[str, str]) -> list[str]:
        invite: list[str] = []
        for rule in self.responders:
            if rule.matches(labels):
                invite += [who for who in rule.invite if who not in invite]
        return invite


class Settings(BaseModel):
    """Everything the process reads from its environment."""

    model_config = ConfigDict(frozen=True)

    slack_bot_token: str
    slack_signing_secret: str
    slack_api_url: str = "https://slack.com/api/"
    # SLACK_TIMEOUT_SECONDS: a call without an answer by then is retried by the outbox, which
    # first looks for what the unanswered call may have done (a channel, a message).
    slack_timeout_seconds: int = Field(default=15, ge=1, le=120)
    # SLACK_RATE_LIMIT: keep to Slack's limits (method tiers, ~1 message a second per channel):
    # shared through Redis by the replicas, else this process's own. Off only for a Slack
    # stand-in without limits (the tests' fake, a benchmark of the bot's own latency).
    slack_rate_limit: bool = True
    database_url: str = "sqlite:///oncall.db"
    redis_url: str | None = None
    redis_key_prefix: str = "oncall-bot:"  # REDIS_KEY_PREFIX: one Redis shared by several deployments
    alertmanager_webhook_token: str
    max_webhook_bytes: int = 10 * 1_048_576  # 10 MiB: 1,000 alerts with long annotations fit
    job_lease_seconds: float = 15.0  # ONCALL_JOB_LEASE_SECONDS: how soon a dead worker's job is taken over
    pagerduty_routing_key: str | None = None
    pagerduty_api_token: str | None = None
    pagerduty_events_url: str = "https://events.pagerduty.com"
    pagerduty_api_url: str = "https://api.pagerduty.com"
    pagerduty_webhook_secret: str | None = None
    pagerduty_from_email: str | None = None
    pagerduty_ca_file: str | None = None  # a private CA (proxies, the test fake)
    runbooks_path: str | None = None  # directories of runbook YAML files, ':'-separated
    kubeconfig: str | None = None  # else in-cluster, else ~/.kube/config when it exists
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    config: OncallConfig = Field(default_factory=OncallConfig)

    @model_validator(mode="after")
    def _normalise(self) -> Settings:
        if not self.slack_api_url.endswith("/"):
            object.__setattr__(self, "slack_api_url", self.slack_api_url + "/")
        return self


_REQUIRED = {
    "SLACK_BOT_TOKEN": "the bot token (xoxb-…) from your Slack app's OAuth & Permissions page",
    "SLACK_SIGNING_SECRET": "the signing secret from your Slack app's Basic Information page",
    "ALERTMANAGER_WEBHOOK_TOKEN": "a random string; put the same in Alertmanager's webhook "
    "`http_config.authorization.credentials`",
}


def load_config_file(path: str | Path) -> OncallConfig:
    """The validated file, or a ConfigError with every problem on a line of its own."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"ONCALL_CONFIG={path}: cannot read the file ({exc.strerror}); fix the path") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"ONCALL_CONFIG={path}: not UTF-8 text; save the file as UTF-8") from exc
    try:
        document = load_yaml(text)
    except YamlSyntaxError as exc:
        raise _file_error(path, [f"{path}:{exc.line}: invalid YAML: {exc.message}"]) from exc
    problems = [(line, f"{dotted(key)}: duplicate key (the later value would silently win); keep one")
                for key, line in document.duplicates]
    try:
        config = OncallConfig.model_validate({} if document.data is None else document.data)
    except ValidationError as exc:
        problems += _located(document, exc.errors())
    if problems:
        raise _file_error(path, [f"{path}:{line}: {what}" for line, what in sorted(problems, key=lambda p: p[0])])
    return config


def _file_error(path: str | Path, problems: list[str]) -> ConfigError:
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return ConfigError(f"ONCALL_CONFIG={path}: {count}; see `oncall-bot config schema` for the format", problems)


def _located(document: YamlDocument, errors: list[ErrorDetails]) -> list[tuple[int, str]]:
    """(line, "path: message") per located path; a union's members' complaints share one line."""
    found: dict[tuple[int, str], list[str]] = {}
    for error in errors:
        path, line = document.locate(error["loc"])
        if error["type"] == "missing" and len(path) == len(error["loc"]) - 1:
            path = tuple(error["loc"])  # the key to add is named, on the line of its parent
        messages = found.setdefault((line, dotted(path)), [])
        if (message := _message(error)) not in messages:
            messages.append(message)
    return [(line, f"{where}: {' or '.join(messages)}") for (line, where), messages in found.items()]


def _message(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (a typo?)"
    if error["type"] == "missing":
        return "required key is missing"
    return error["msg"].removeprefix("Value error, ")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    for name, what in _REQUIRED.items():
        if not env.get(name):
            raise ConfigError(f"{name} is not set: set it to {what}")
    if not env["SLACK_BOT_TOKEN"].startswith("xoxb-"):
        raise ConfigError("SLACK_BOT_TOKEN must be a bot token starting with 'xoxb-' (not a user or app token)")
    url = env.get("DATABASE_URL") or "sqlite:///oncall.db"
    if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
        raise ConfigError(
            f"DATABASE_URL={url.split('@')[-1]!r} is not supported: use sqlite:///path.db or "
            "postgresql://user@host:5432/db"
        )
    config = load_config_file(env["ONCALL_CONFIG"]) if env.get("ONCALL_CONFIG") else OncallConfig()
    return Settings(
        slack_bot_token=env["SLACK_BOT_TOKEN"],
        slack_signing_secret=env["SLACK_SIGNING_SECRET"],
        slack_api_url=env.get("SLACK_API_URL") or "https://slack.com/api/",
        slack_timeout_seconds=_whole_seconds(env, "SLACK_TIMEOUT_SECONDS", 15),
        slack_rate_limit=_on_off(env, "SLACK_RATE_LIMIT", True),
        database_url=url,
        redis_url=env.get("REDIS_URL") or None,
        redis_key_prefix=env.get("REDIS_KEY_PREFIX") or "oncall-bot:",
        alertmanager_webhook_token=env["ALERTMANAGER_WEBHOOK_TOKEN"],
        job_lease_seconds=float(env.get("ONCALL_JOB_LEASE_SECONDS") or 15.0),
        config=config,
        **_pagerduty_settings(env),
        **_runbook_settings(env),
    )


def _on_off(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or ("on" if default else "off")).strip().lower()
    if raw not in ("on", "off", "true", "false", "1", "0"):
        raise ConfigError(f"{name}={raw!r} must be on or off")
    return raw in ("on", "true", "1")


def _whole_seconds(env: dict[str, str], name: str, default: int, *, most: int = 120) -> int:
    raw = env.get(name) or str(default)
    try:
        seconds = int(raw)
    except ValueError:
        seconds = 0
    if not 1 <= seconds <= most:
        raise ConfigError(f"{name}={raw!r} must be a whole number of seconds from 1 to {most}: e.g. {default}")
    return seconds


def _pagerduty_settings(env: dict[str, str]) -> dict[str, str | None]:
    """PAGERDUTY_*: all optional; without a routing key nobody is paged (the card says so)."""
    values = {name.lower(): env.get(name) or None for name in (
        "PAGERDUTY_ROUTING_KEY", "PAGERDUTY_API_TOKEN", "PAGERDUTY_EVENTS_URL", "PAGERDUTY_API_URL",
        "PAGERDUTY_WEBHOOK_SECRET", "PAGERDUTY_FROM_EMAIL", "PAGERDUTY_CA_FILE")}
    key = values["pagerduty_routing_key"]
    if key is not None and len(key) != 32:
        raise ConfigError("PAGERDUTY_ROUTING_KEY must be the 32-character integration key of an Events API v2 "
                          "integration (PagerDuty: Service → Integrations)")
    for name in ("PAGERDUTY_EVENTS_URL", "PAGERDUTY_API_URL"):
        url = values[name.lower()]
        if url is not None and not url.startswith("https://"):
            raise ConfigError(f"{name}={url!r}: PagerDuty is only reached over https://; fix the URL")
    if values["pagerduty_api_token"] and not values["pagerduty_from_email"]:
        raise ConfigError("PAGERDUTY_FROM_EMAIL is not set: set it to the e-mail of a PagerDuty user; "
                          "escalations through the REST API need it with an account-level PAGERDUTY_API_TOKEN")
    return {k: v for k, v in values.items() if v is not None}


def _runbook_settings(env: dict[str, str]) -> dict[str, str]:
    """RUNBOOKS_PATH, KUBECONFIG, PROMETHEUS_URL, ALERTMANAGER_URL: all optional; an action whose
    system is not configured says so when clicked."""
    values = {name.lower(): env[name] for name in ("RUNBOOKS_PATH", "KUBECONFIG", "PROMETHEUS_URL",
                                                   "ALERTMANAGER_URL") if env.get(name)}
    for name in ("PROMETHEUS_URL", "ALERTMANAGER_URL"):
        url = values.get(name.lower())
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name}={url!r} is not an http(s) URL; e.g. http://prometheus:9090")
    return values
