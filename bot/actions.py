"""The allow-listed runbook actions: one list of descriptors, each with its parameter model.

Nothing here runs a shell or free-form kubectl. A runbook step names an action from `ACTIONS`
and gives parameters; they are rendered from the alert (bot.runbooks) and then validated by the
action's pydantic model with a `ParamContext` (allow-listed namespaces and URLs, the runbook's
scale bounds). A value that fails validation never reaches an executor.

Executors are async and call the synchronous integration clients through `asyncio.to_thread`.
The integration modules are imported lazily, so this module (and its validation) works without
them, and a missing client becomes an `ActionError` that says what to configure.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo

if TYPE_CHECKING:
    from integrations.alertmanager import AlertmanagerClient
    from integrations.kubernetes import KubernetesClient
    from integrations.prometheus import PrometheusClient

__all__ = [
    "ACTIONS", "ActionContext", "ActionError", "ActionOutput", "ActionSpec", "DnsLabel", "DnsSubdomain", "Kind",
    "ParamContext", "ParamError", "Risk", "RISK_ORDER", "SilenceMatcher", "action_names", "check_param", "check_url",
    "get_action", "parse_duration", "parse_label_selector", "parse_silence_matchers", "run_action", "url_allowed",
    "validate_params",
]

Kind = Literal["diagnostic", "remediation"]
Risk = Literal["low", "medium", "high"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
TEXT_LIMIT = 2800  # what fits a Slack code block in one section (3000) with room for the fences


class ActionError(Exception):
    """An action could not run; the message is shown to the user as is."""


class ParamError(ValueError):
    """Parameters failed validation; the message says which and why (shown on the disabled button)."""


@dataclass(frozen=True)
class ParamContext:
    """What parameter validation checks against. `check_allow_lists=False` is for lint, which
    cannot know the namespaces and URLs that the bot's configuration adds."""

    namespaces: frozenset[str] = frozenset()
    urls: tuple[str, ...] = ()
    scale: tuple[int, int] | None = None  # the runbook's (min, max) replicas; None: k8s.scale refused
    check_allow_lists: bool = True


def _context(info: ValidationInfo) -> ParamContext:
    ctx = (info.context or {}).get("oncall") if isinstance(info.context, dict) else None
    return ctx if isinstance(ctx, ParamContext) else ParamContext()  # no context: fail closed


def _show(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


# -- names and namespaces (RFC 1123) ------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"{_show(value)} is not an RFC 1123 DNS label "
                         "(lowercase letters, digits and '-', 1-63 characters, alphanumeric at both ends)")
    return value


def _dns_subdomain(value: str) -> str:
    if len(value) > 253 or not all(_DNS_LABEL.fullmatch(part) for part in value.split(".")):
        raise ValueError(f"{_show(value)} is not an RFC 1123 DNS subdomain "
                         "(dot-separated DNS labels, at most 253 characters)")
    return value


def _allowed_namespace(value: str, info: ValidationInfo) -> str:
    ctx = _context(info)
    if ctx.check_allow_lists and value not in ctx.namespaces:
        allowed = ", ".join(sorted(ctx.namespaces)) or "none"
        raise ValueError(f"namespace {value!r} is not in the allow-list (allowed: {allowed}); add it to the "
                         "runbook's `namespaces` or to the bot's configuration")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
DnsSubdomain = Annotated[str, AfterValidator(_dns_subdomain)]
Namespace = Annotated[str, AfterValidator(_dns_label), AfterValidator(_allowed_namespace)]


# -- label selectors -------------------------------------------------------------------------------

_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_REQUIREMENT = re.compile(
    r"(?P<bang>!)?\s*(?P<key>[^\s=!(),]+)"
    r"(?:\s*(?P<op>==|!=|=)\s*(?P<value>[^\s=!(),]*)|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?")


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if (prefix and not _dns_subdomain_ok(prefix)) or not _NAME_PART.fullmatch(name):
        raise ValueError(f"{_show(key)} is not a valid label key")
    return key


def _dns_subdomain_ok(value: str) -> bool:
    return len(value) <= 253 and all(_DNS_LABEL.fullmatch(part) for part in value.split("."))


def _label_value(value: str) -> str:
    if not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"{_show(value)} is not a valid label value (at most 63 of A-Z a-z 0-9 - _ .)")
    return value


def _split_outside_parens(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def parse_label_selector(text: str) -> str:
    """Validate a Kubernetes label selector (=, ==, !=, in, notin, exists, !exists) and return it
    in canonical form; anything else is refused rather than passed through."""
    if not text.strip():
        return ""
    canonical = []
    for part in _split_outside_parens(text):
        match = _REQUIREMENT.fullmatch(part.strip())
        if not match:
            raise ValueError(f"{_show(part.strip())} is not a label selector requirement")
        key = _label_key(match["key"])
        if match["bang"]:
            if match["op"] or match["set"]:
                raise ValueError(f"{_show(part.strip())}: '!' takes a key only")
            canonical.append(f"!{key}")
        elif match["op"]:
            op = "!=" if match["op"] == "!=" else "="
            canonical.append(f"{key}{op}{_label_value(match['value'])}")
        elif match["set"]:
            values = [_label_value(v.strip()) for v in match["values"].split(",")]
            canonical.append(f"{key} {match['set']} ({','.join(values)})")
        else:
            canonical.append(key)
    return ",".join(canonical)


LabelSelector = Annotated[str, AfterValidator(parse_label_selector)]


# -- durations -------------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?(?:(\d{1,7})s)?")


def parse_duration(text: str) -> timedelta:
    """`30m`, `1h30m`, `2d`: days, hours, minutes, seconds in that order."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or not match:
        raise ValueError(f"{_show(text)} is not a duration like 30m, 2h or 1h30m")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _duration_between(low: timedelta, high: timedelta) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not low <= parse_duration(value) <= high:
            raise ValueError(f"duration {value!r} is outside {_human(low)}..{_human(high)}")
        return value.strip()
    return check


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size and (unit != "d" or seconds > 86400):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


SilenceDuration = Annotated[str, AfterValidator(_duration_between(timedelta(minutes=1), timedelta(hours=24)))]
QueryRange = Annotated[str, AfterValidator(_duration_between(timedelta(minutes=1), timedelta(days=7)))]
QueryStep = Annotated[str, AfterValidator(_duration_between(timedelta(seconds=1), timedelta(hours=1)))]


# -- URLs ------------------------------------------------------------------------------------------

def _url_parts(url: str) -> tuple[str, str, int, str]:
    if len(url) > 2048 or re.search(r"[\s\\\x00-\x1f\x7f]", url):
        raise ValueError(f"{_show(url)} is not a plain http(s) URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{_show(url)} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ValueError(f"{_show(url)} must be http(s)://host/... without user information")
    path = parts.path or "/"
    if re.search(r"(^|/)(\.|%2e){1,2}(/|$)", path, flags=re.IGNORECASE):
        raise ValueError(f"{_show(url)} has '.' or '..' path segments")
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80), path


def url_allowed(url: str, allowed: str) -> bool:
    """Same scheme, host and port; the path equal to the allowed one or below it."""
    scheme, host, port, path = _url_parts(url)
    a_scheme, a_host, a_port, a_path = _url_parts(allowed)
    prefix = a_path.rstrip("/")
    return (scheme, host, port) == (a_scheme, a_host, a_port) and (
        path == a_path or not prefix or path.startswith(prefix + "/"))


def _allowed_url(value: str, info: ValidationInfo) -> str:
    _url_parts(value)
    ctx = _context(info)
    if ctx.check_allow_lists and not any(url_allowed(value, entry) for entry in ctx.urls):
        raise ValueError(f"URL {_show(value)} is not in the allow-list; add its prefix to the runbook's "
                         "`urls` or to the bot's configuration")
    return value


def check_url(value: str) -> str:
    """A valid allow-list entry (used by the runbook model)."""
    _url_parts(value)
    return value


AllowedUrl = Annotated[str, AfterValidator(_allowed_url)]


# -- Alertmanager silence matchers ---------------------------------------------------------------

@dataclass(frozen=True)
class SilenceMatcher:
    name: str
    value: str
    is_regex: bool
    is_equal: bool

    def api(self) -> dict[str, Any]:
        """The Alertmanager API v2 shape."""
        return {"name": self.name, "value": self.value, "isRegex": self.is_regex, "isEqual": self.is_equal}

    def __str__(self) -> str:
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{op[(self.is_regex, self.is_equal)]}"{escaped}"'


_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\\n]|\\.)*)"\s*(,|$)')


def parse_silence_matchers(text: str) -> list[SilenceMatcher]:
    """`alertname="X", namespace=~"prod-.*"`: quoted values only; an alertname equality is
    required so a silence never hides more than the alert it was made for."""
    body, matchers, pos = text.strip().removeprefix("{").removesuffix("}"), [], 0
    while pos < len(body):
        match = _MATCHER.match(body, pos)
        if not match:
            raise ValueError(f"cannot parse matchers at {_show(body[pos:])}; write name=\"value\", ...")
        name, op, raw, _ = match.groups()
        value = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], raw)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"matcher {name}{op}: invalid regular expression: {exc}") from exc
        matchers.append(SilenceMatcher(name, value, op in ("=~", "!~"), op in ("=", "=~")))
        pos = match.end()
    if len(matchers) > 16:
        raise ValueError("at most 16 matchers")
    if not any(m.name == "alertname" and not m.is_regex and m.is_equal and m.value for m in matchers):
        raise ValueError('matchers must include alertname="<the alert>" so the silence stays narrow')
    return matchers


SilenceMatchers = Annotated[str, AfterValidator(lambda v: ", ".join(map(str, parse_silence_matchers(v))))]


# -- PromQL: read-only, but still bounded and lexically sound ---------------------------------------

def _promql(value: str) -> str:
    if not 1 <= len(value) <= 2000 or re.search(r"[\x00-\x08\x0b-\x1f\x7f]", value):
        raise ValueError("a PromQL query of 1-2000 printable characters")
    closing, stack, quote, i = {")": "(", "]": "[", "}": "{"}, [], None, 0
    while i < len(value):
        char = value[i]
        if quote:
            if char == "\\" and quote != "`":
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            raise ValueError(f"unbalanced {char!r} in the query")
        i += 1
    if quote or stack:
        raise ValueError("unterminated string or bracket in the query")
    return value


PromQL = Annotated[str, AfterValidator(_promql)]
Comment = Annotated[str, Field(max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")]
ObjectKind = Literal["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "Node",
                     "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler"]


def _within_scale(value: int, info: ValidationInfo) -> int:
    bounds = _context(info).scale
    if bounds is None:
        raise ValueError("the runbook sets no `scale: {min, max}` bounds, so k8s.scale is refused")
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"replicas {value} is outside the runbook's bounds {bounds[0]}..{bounds[1]}")
    return value


# -- parameter models --------------------------------------------------------------------------------

class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PodsParams(_Params):
    namespace: Namespace
    selector: LabelSelector = Field("", description="label selector, e.g. app=web; empty lists every pod")


class LogsParams(_Params):
    namespace: Namespace
    pod: DnsSubdomain
    tail_lines: int = Field(100, ge=1, le=5000)
    container: DnsLabel | None = None
    previous: bool = Field(False, description="the last terminated container instance (after a crash)")


class EventsParams(_Params):
    namespace: Namespace
    kind: ObjectKind | None = None
    name: DnsSubdomain | None = None
    limit: int = Field(20, ge=1, le=100)


class DeploymentParams(_Params):
    namespace: Namespace
    deployment: DnsSubdomain


class QueryParams(_Params):
    query: PromQL
    range: QueryRange | None = Field(None, description="e.g. 1h: a graph over that span instead of the value now")
    step: QueryStep | None = None
    title: Comment | None = None


class HttpCheckParams(_Params):
    url: AllowedUrl
    timeout_seconds: float = Field(5.0, gt=0, le=30)
    expect_status: int | None = Field(None, ge=100, le=599)


class UndoParams(DeploymentParams):
    to_revision: int = Field(0, ge=0, description="0: the previous revision")


class ScaleParams(DeploymentParams):
    replicas: Annotated[int, Field(ge=0, le=1000), AfterValidator(_within_scale)]


class DeletePodParams(_Params):
    namespace: Namespace
    pod: DnsSubdomain
    grace_period_seconds: int = Field(30, ge=0, le=600)


class NodeParams(_Params):
    node: DnsSubdomain


class SilenceParams(_Params):
    matchers: SilenceMatchers
    duration: SilenceDuration = "1h"
    comment: Comment = "silenced from a runbook in Slack"


# -- what executors get and return ----------------------------------------------------------------

def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ActionContext:
    """The clients an executor may use; None where the bot is not configured for it."""

    kubernetes: KubernetesClient | None = None
    prometheus: PrometheusClient | None = None
    alertmanager: AlertmanagerClient | None = None
    http_check: Callable[[str, float], Any] | None = None  # None: integrations.http_probe.check
    user: str = ""          # who runs it (Slack id): recorded as the silence's creator
    dry_run: bool = False   # remediations: server-side dry run, nothing persisted
    now: Callable[[], datetime] = field(default=_utcnow)


@dataclass(frozen=True)
class ActionOutput:
    text: str                     # plain text for a code block, at most TEXT_LIMIT characters
    file: bytes | None = None     # the full output (or a PNG graph) when it does not fit
    filename: str | None = None
    summary: str = ""             # one line for the step and the timeline


def _output(text: str, filename: str, summary: str, *, keep: Literal["head", "tail"] = "head") -> ActionOutput:
    """Short output inline; long output as a file, with the head (tables) or tail (logs) inline."""
    if len(text) <= TEXT_LIMIT:
        return ActionOutput(text=text, summary=summary)
    note = f"… ({len(text.splitlines())} lines in total, see {filename})"
    room = TEXT_LIMIT - len(note) - 1
    excerpt = text[:room].rsplit("\n", 1)[0] + "\n" + note if keep == "head" else \
        note + "\n" + text[-room:].split("\n", 1)[-1]
    return ActionOutput(text=excerpt, file=text.encode("utf-8"), filename=filename, summary=summary)


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [headers, *rows])


def _age(seconds: float) -> str:
    """kubectl's short ages: 45s, 12m, 5h, 3d."""
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _require(client: Any, missing: str) -> Any:
    if client is None:
        raise ActionError(missing)
    return client


_NO_KUBERNETES = ("Kubernetes is not configured: set KUBECONFIG (or run the bot in a cluster with a service "
                  "account) and restart it")
_NO_PROMETHEUS = "Prometheus is not configured: set PROMETHEUS_URL and restart the bot"
_NO_ALERTMANAGER = "Alertmanager is not configured: set ALERTMANAGER_URL and restart the bot"


# -- diagnostics ---------------------------------------------------------------------------------------

async def _pods(ctx: ActionContext, p: PodsParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    pods = await asyncio.to_thread(kube.list_pods, p.namespace, p.selector)
    where = f"{p.namespace}" + (f" matching {p.selector}" if p.selector else "")
    if not pods:
        return ActionOutput(text=f"No pods in {where}.", summary=f"no pods in {where}")
    rows = [(pod.name, pod.ready, getattr(pod, "reason", None) or pod.phase, str(pod.restarts),
             _age(pod.age_seconds), pod.node or "<none>") for pod in pods]
    ready = sum(1 for pod in pods if pod.ready.split("/")[0] == pod.ready.split("/")[-1])
    summary = f"{len(pods)} pods in {where}: {ready} ready, {sum(pod.restarts for pod in pods)} restarts"
    return _output(_table(("NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"), rows), f"pods-{p.namespace}.txt",
                   summary)


async def _logs(ctx: ActionContext, p: LogsParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    text = await asyncio.to_thread(kube.pod_logs, p.namespace, p.pod, tail_lines=p.tail_lines,
                                   container=p.container, previous=p.previous)
    which = f"{p.namespace}/{p.pod}" + (f" ({p.container})" if p.container else "")
    which += " previous container" if p.previous else ""
    lines = len(text.splitlines())
    if not text.strip():
        return ActionOutput(text=f"No log lines from {which}.", summary=f"no log lines from {which}")
    return _output(text, f"{p.pod}{'-previous' if p.previous else ''}.log", f"{lines} log lines from {which}",
                   keep="tail")


async def _events(ctx: ActionContext, p: EventsParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    events = await asyncio.to_thread(kube.events, p.namespace, kind=p.kind, name=p.name, limit=p.limit)
    about = "/".join(x for x in (p.kind, p.name) if x) or "the namespace"
    if not events:
        return ActionOutput(text=f"No events for {about} in {p.namespace}.", summary="no events")
    now = ctx.now()
    rows = [(_age((now - e.last_seen).total_seconds()) if e.last_seen else "-", e.type, e.reason, e.object,
             str(e.count), e.message.replace("\n", " ")[:160]) for e in events]
    warnings = sum(1 for e in events if e.type == "Warning")
    return _output(_table(("LAST SEEN", "TYPE", "REASON", "OBJECT", "COUNT", "MESSAGE"), rows),
                   f"events-{p.namespace}.txt", f"{len(events)} events for {about} in {p.namespace}, "
                                                f"{warnings} warnings")


async def _deployment(ctx: ActionContext, p: DeploymentParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    d = await asyncio.to_thread(kube.deployment_status, p.namespace, p.deployment)
    lines = [f"deployment {d.namespace}/{d.name}  revision {d.revision}" + ("  PAUSED" if d.paused else ""),
             f"replicas: {d.desired_replicas} desired, {d.updated_replicas} updated, {d.ready_replicas} ready, "
             f"{d.available_replicas} available", f"images: {', '.join(d.images) or '-'}", "",
             _table(("CONDITION", "STATUS", "REASON", "MESSAGE"),
                    [(c.type, c.status, c.reason or "", (c.message or "")[:120]) for c in d.conditions]), "",
             _table(("REPLICASET", "REVISION", "PODS", "IMAGES"),
                    [(rs.name, str(rs.revision), str(rs.replicas), ", ".join(rs.images)) for rs in d.replica_sets[:5]])]
    state = "rolled out" if d.rolled_out else "not rolled out"
    summary = f"{d.name}: {d.ready_replicas}/{d.desired_replicas} ready, revision {d.revision}, {state}"
    return _output("\n".join(lines), f"deployment-{d.name}.txt", summary)


def _number(value: Any) -> str:
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


async def _query(ctx: ActionContext, p: QueryParams) -> ActionOutput:
    prom = _require(ctx.prometheus, _NO_PROMETHEUS)
    if p.range is None:
        samples = await asyncio.to_thread(prom.instant, p.query)
        rows = [("{" + ", ".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}", _number(s.value))
                for s in samples]
        text = _table(("SERIES", "VALUE"), rows) if rows else "The query returned no data."
        return _output(text, "query.txt", f"{len(samples)} series")
    end = ctx.now()
    span = parse_duration(p.range)
    step = parse_duration(p.step) if p.step else max(timedelta(seconds=15), span / 240)
    series = await asyncio.to_thread(prom.range, p.query, end - span, end, step)
    if not series:
        return ActionOutput(text=f"The query returned no data over the last {p.range}.", summary="no data")
    png = await asyncio.to_thread(prom.render_png, series, p.title or p.query)
    return ActionOutput(text=f"{len(series)} series over the last {p.range} (graph attached)", file=png,
                        filename="graph.png", summary=f"graph of {len(series)} series over {p.range}")


def _default_probe() -> Callable[[str, float], Any]:
    return importlib.import_module("integrations.http_probe").check  # type: ignore[no-any-return]


async def _http_check(ctx: ActionContext, p: HttpCheckParams) -> ActionOutput:
    probe = ctx.http_check or _default_probe()
    result = await asyncio.to_thread(probe, p.url, p.timeout_seconds)
    ok = result.error is None and result.status is not None and (
        result.status == p.expect_status if p.expect_status else result.status < 400)
    lines = [f"GET {p.url}", f"status:  {result.status if result.status is not None else '-'}",
             f"latency: {result.latency_ms:.0f} ms" if result.latency_ms is not None else "latency: -"]
    if getattr(result, "location", None):
        lines.append(f"location: {result.location} (not followed)")
    if result.error:
        lines.append(f"error:   {result.error}")
    verdict = "OK" if ok else "FAILING"
    return ActionOutput(text="\n".join(lines), summary=f"{verdict}: {result.status or result.error}")


# -- remediations --------------------------------------------------------------------------------------

def _k8s(method: str, *args: str, **kwargs: str) -> Callable[[ActionContext, Any], Awaitable[ActionOutput]]:
    async def run(ctx: ActionContext, p: Any) -> ActionOutput:
        kube = _require(ctx.kubernetes, _NO_KUBERNETES)
        call = getattr(kube, method)
        result = await asyncio.to_thread(lambda: call(*(getattr(p, a) for a in args),
                                                      **{k: getattr(p, v) for k, v in kwargs.items()},
                                                      dry_run=ctx.dry_run))
        return ActionOutput(text=result.summary, summary=result.summary)
    return run


async def _silence(ctx: ActionContext, p: SilenceParams) -> ActionOutput:
    am = _require(ctx.alertmanager, _NO_ALERTMANAGER)
    matchers = parse_silence_matchers(p.matchers)
    start = ctx.now()
    end = start + parse_duration(p.duration)
    if ctx.dry_run:
        text = f"dry run: would silence {p.matchers} for {p.duration}"
        return ActionOutput(text=text, summary=text)
    silence_id = await asyncio.to_thread(am.create_silence, [m.api() for m in matchers], start, end,
                                         ctx.user or "oncall-bot", p.comment)
    text = f"silence {silence_id} created for {p.matchers} until {end:%Y-%m-%d %H:%M} UTC"
    return ActionOutput(text=text, summary=text)


# -- the list ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: dict[str, str]   # {en, ja}: what the button does, for people
    kind: Kind
    risk: Risk
    params: type[BaseModel]
    run: Callable[[ActionContext, Any], Awaitable[ActionOutput]]


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("k8s.pods", {"en": "List pods", "ja": "Pod 一覧"}, "diagnostic", "low", PodsParams, _pods),
    ActionSpec("k8s.logs", {"en": "Pod logs", "ja": "Pod のログ"}, "diagnostic", "low", LogsParams, _logs),
    ActionSpec("k8s.events", {"en": "Events", "ja": "イベント"}, "diagnostic", "low", EventsParams, _events),
    ActionSpec("k8s.deployment", {"en": "Deployment status", "ja": "Deployment の状態"}, "diagnostic", "low",
               DeploymentParams, _deployment),
    ActionSpec("prometheus.query", {"en": "Prometheus query", "ja": "Prometheus クエリ"}, "diagnostic", "low",
               QueryParams, _query),
    ActionSpec("http.check", {"en": "HTTP check", "ja": "HTTP チェック"}, "diagnostic", "low", HttpCheckParams,
               _http_check),
    ActionSpec("k8s.rollout_restart", {"en": "Restart deployment", "ja": "Deployment を再起動"}, "remediation",
               "medium", DeploymentParams, _k8s("rollout_restart", "namespace", "deployment")),
    ActionSpec("k8s.rollout_undo", {"en": "Roll back deployment", "ja": "Deployment をロールバック"}, "remediation",
               "medium", UndoParams, _k8s("rollout_undo", "namespace", "deployment", to_revision="to_revision")),
    ActionSpec("k8s.scale", {"en": "Scale deployment", "ja": "Deployment をスケール"}, "remediation", "medium",
               ScaleParams, _k8s("scale", "namespace", "deployment", "replicas")),
    ActionSpec("k8s.delete_pod", {"en": "Delete pod", "ja": "Pod を削除"}, "remediation", "medium",
               DeletePodParams, _k8s("delete_pod", "namespace", "pod", grace_period_seconds="grace_period_seconds")),
    ActionSpec("k8s.cordon", {"en": "Cordon node", "ja": "ノードを cordon"}, "remediation", "high", NodeParams,
               _k8s("cordon", "node")),
    ActionSpec("k8s.uncordon", {"en": "Uncordon node", "ja": "ノードを uncordon"}, "remediation", "medium",
               NodeParams, _k8s("uncordon", "node")),
    ActionSpec("alertmanager.silence", {"en": "Silence alert", "ja": "アラートをサイレンス"}, "remediation", "medium",
               SilenceParams, _silence),
)
_BY_NAME = {spec.name: spec for spec in ACTIONS}


def action_names() -> list[str]:
    return [spec.name for spec in ACTIONS]


def get_action(name: str) -> ActionSpec | None:
    return _BY_NAME.get(name)


def _error_text(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown parameter"
        elif err["type"] == "missing":
            message = "missing"
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)


def validate_params(name: str, raw: Mapping[str, Any], ctx: ParamContext) -> BaseModel:
    """The action's parameter model, or ParamError saying what is wrong."""
    spec = get_action(name)
    if spec is None:
        raise ParamError(f"unknown action {name!r}")
    try:
        return spec.params.model_validate(dict(raw), context={"oncall": ctx})
    except ValidationError as exc:
        raise ParamError(_error_text(exc)) from None


@lru_cache(maxsize=None)
def _field_adapter(name: str, param: str) -> TypeAdapter[Any]:
    info = _BY_NAME[name].params.model_fields[param]
    if not info.metadata:
        return TypeAdapter(info.annotation)
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)])  # type: ignore[arg-type]


def check_param(name: str, param: str, value: Any, ctx: ParamContext) -> str | None:
    """Lint one literal parameter on its own; the reason it is invalid, or None."""
    try:
        _field_adapter(name, param).validate_python(value, context={"oncall": ctx})
    except ValidationError as exc:
        return _error_text(exc)
    return None


def _integration_errors() -> tuple[type[Exception], ...]:
    found = []
    for module, name in (("integrations.kubernetes", "KubernetesError"), ("integrations.prometheus", "PrometheusError"),
                         ("integrations.alertmanager", "AlertmanagerError"), ("integrations.http_probe", "ProbeError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


async def run_action(name: str, params: BaseModel, ctx: ActionContext) -> ActionOutput:
    """Run a validated action; every failure leaves as ActionError with a readable message."""
    spec = get_action(name)
    if spec is None or not isinstance(params, spec.params):
        raise ActionError(f"unknown action {name!r} or parameters of the wrong kind")
    try:
        return await spec.run(ctx, params)
    except ActionError:
        raise
    except _integration_errors() as exc:
        raise ActionError(f"{spec.label['en']} failed: {exc}") from exc
