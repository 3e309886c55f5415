"""The allow-listed runbook actions: one list of descriptors, each with its parameter model and
its executor.

Nothing here runs a shell or free-form kubectl. A runbook step names an action from `ACTIONS`
and gives parameters; they are rendered from the alert (bot.runbook_templates) and then
validated by the action's pydantic model (bot.action_params) with a `ParamContext` (allow-listed
namespaces and URLs, the runbook's scale bounds). A value that fails validation never reaches an
executor: bot.action_runner validates, and runs only what it validated.

Executors are async and call the synchronous integration clients through `asyncio.to_thread`.
The integration modules are imported lazily, so this module works without them, and a missing
client becomes an `ActionError` that says what to configure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from bot.action_params import (
    DeletePodParams,
    DeploymentParams,
    EventsParams,
    HttpCheckParams,
    LogsParams,
    NodeParams,
    PodsParams,
    QueryParams,
    ScaleParams,
    SilenceParams,
    UndoParams,
)
from bot.param_syntax import parse_duration, parse_silence_matchers
from integrations import http_probe

if TYPE_CHECKING:
    from integrations.alertmanager import AlertmanagerClient
    from integrations.http_probe import ProbeResult
    from integrations.kubernetes import KubernetesClient, RemediationResult
    from integrations.prometheus import PrometheusClient

__all__ = [
    "ACTIONS", "ActionContext", "ActionError", "ActionOutput", "ActionSpec", "RISK_ORDER", "Risk", "SilenceCreated",
    "action_names", "get_action", "risk_of",
]

Kind = Literal["diagnostic", "remediation"]
Risk = Literal["low", "medium", "high"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}
_RISKS: tuple[Risk, ...] = ("low", "medium", "high")  # in RISK_ORDER's order
TEXT_LIMIT = 2800  # what fits a Slack code block in one section (3000) with room for the fences


class ActionError(Exception):
    """An action could not run; the message is shown to the user as is."""


# -- what executors get and return ----------------------------------------------------------------

def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ActionContext:
    """The clients an executor may use; None where the bot is not configured for it."""

    kubernetes: KubernetesClient | None = None
    prometheus: PrometheusClient | None = None
    alertmanager: AlertmanagerClient | None = None
    http_check: Callable[[str, float], ProbeResult] | None = None  # None: integrations.http_probe.check
    user: str = ""          # who runs it (Slack id): recorded as the silence's creator
    about: str = ""         # what the run is for, as text with a link: a silence's comment names it
    dry_run: bool = False   # remediations: server-side dry run, nothing persisted
    now: Callable[[], datetime] = field(default=_utcnow)


@dataclass(frozen=True)
class SilenceCreated:
    """The silence an `alertmanager.silence` run created, as Alertmanager was asked for it."""

    silence_id: str
    matchers: str        # as validated: 'alertname="X", instance="10.0.0.1"'
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


@dataclass(frozen=True)
class ActionOutput:
    text: str                     # plain text for a code block, at most TEXT_LIMIT characters
    file: bytes | None = None     # the full output (or a PNG graph) when it does not fit
    filename: str | None = None
    summary: str = ""             # one line for the step and the timeline
    silence: SilenceCreated | None = None  # the facts of a silence it created (bot.silences records them)


def _output(text: str, filename: str, summary: str, *, keep: Literal["head", "tail"] = "head") -> ActionOutput:
    """Short output inline; long output as a file, with the head (tables) or tail (logs) inline."""
    if len(text) <= TEXT_LIMIT:
        return ActionOutput(text=text, summary=summary)
    note = f"… ({len(text.splitlines())} lines in total, see {filename})"
    room = TEXT_LIMIT - len(note) - 1
    excerpt = text[:room].rsplit("\n", 1)[0] + "\n" + note if keep == "head" else \
        note + "\n" + text[-room:].split("\n", 1)[-1]
    return ActionOutput(text=excerpt, file=text.encode("utf-8"), filename=filename, summary=summary)


def _table(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
                     for row in [headers, *rows])


def _age(seconds: float) -> str:
    """kubectl's short ages: 45s, 12m, 5h, 3d."""
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


_Client = TypeVar("_Client")


def _require(client: _Client | None, missing: str) -> _Client:
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


async def _http_check(ctx: ActionContext, p: HttpCheckParams) -> ActionOutput:
    probe = ctx.http_check or http_probe.check
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

def _remediated(result: RemediationResult) -> ActionOutput:
    return ActionOutput(text=result.summary, summary=result.summary)


async def _rollout_restart(ctx: ActionContext, p: DeploymentParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    return _remediated(await asyncio.to_thread(kube.rollout_restart, p.namespace, p.deployment, dry_run=ctx.dry_run))


async def _rollout_undo(ctx: ActionContext, p: UndoParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    return _remediated(await asyncio.to_thread(kube.rollout_undo, p.namespace, p.deployment,
                                               to_revision=p.to_revision, dry_run=ctx.dry_run))


async def _scale(ctx: ActionContext, p: ScaleParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    return _remediated(await asyncio.to_thread(kube.scale, p.namespace, p.deployment, p.replicas,
                                               dry_run=ctx.dry_run))


async def _delete_pod(ctx: ActionContext, p: DeletePodParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    return _remediated(await asyncio.to_thread(kube.delete_pod, p.namespace, p.pod,
                                               grace_period_seconds=p.grace_period_seconds, dry_run=ctx.dry_run))


async def _cordon(ctx: ActionContext, p: NodeParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    return _remediated(await asyncio.to_thread(kube.cordon, p.node, dry_run=ctx.dry_run))


async def _uncordon(ctx: ActionContext, p: NodeParams) -> ActionOutput:
    kube = _require(ctx.kubernetes, _NO_KUBERNETES)
    return _remediated(await asyncio.to_thread(kube.uncordon, p.node, dry_run=ctx.dry_run))


async def _silence(ctx: ActionContext, p: SilenceParams) -> ActionOutput:
    am = _require(ctx.alertmanager, _NO_ALERTMANAGER)
    matchers = parse_silence_matchers(p.matchers)
    start = ctx.now()
    end = start + parse_duration(p.duration)
    if ctx.dry_run:
        text = f"dry run: would silence {p.matchers} for {p.duration}"
        return ActionOutput(text=text, summary=text)
    # createdBy: whoever runs it (an approved request: the approver); the comment names what for.
    created_by = ctx.user or "oncall-bot"
    comment = f"{p.comment} · {ctx.about}" if ctx.about else p.comment
    silence_id = await asyncio.to_thread(am.create_silence, [m.api() for m in matchers], start, end,
                                         created_by, comment)
    text = f"silence {silence_id} created for {p.matchers} until {end:%Y-%m-%d %H:%M} UTC"
    return ActionOutput(text=text, summary=text, silence=SilenceCreated(silence_id, p.matchers, start, end,
                                                                        created_by, comment))


# -- risk ---------------------------------------------------------------------------------------------

def _scale_risk_floor(p: ScaleParams) -> Risk | None:
    """Scaling to 0 stops the service: high, whatever the installation sets for k8s.scale."""
    return "high" if p.replicas == 0 else None


# -- the list ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActionSpec:
    name: str
    label: dict[str, str]   # {en, ja}: what the button does, for people
    kind: Kind
    risk: Risk              # the default; an installation may set its own (`remediations.risk`)
    params: type[BaseModel]
    run: Callable[[ActionContext, Any], Awaitable[ActionOutput]]
    # The least risk these validated parameters carry, whatever the installation says (None: no more
    # than the action's); see risk_of.
    risk_floor: Callable[[Any], Risk | None] | None = None


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
               "low", DeploymentParams, _rollout_restart),
    ActionSpec("k8s.rollout_undo", {"en": "Roll back deployment", "ja": "Deployment をロールバック"}, "remediation",
               "high", UndoParams, _rollout_undo),  # a forced rollback: the seeds want an expert's judgement
    ActionSpec("k8s.scale", {"en": "Scale deployment", "ja": "Deployment をスケール"}, "remediation", "medium",
               ScaleParams, _scale, risk_floor=_scale_risk_floor),
    ActionSpec("k8s.delete_pod", {"en": "Delete pod", "ja": "Pod を削除"}, "remediation", "medium",
               DeletePodParams, _delete_pod),
    ActionSpec("k8s.cordon", {"en": "Cordon node", "ja": "ノードを cordon"}, "remediation", "high", NodeParams,
               _cordon),
    ActionSpec("k8s.uncordon", {"en": "Uncordon node", "ja": "ノードを uncordon"}, "remediation", "medium",
               NodeParams, _uncordon),
    ActionSpec("alertmanager.silence", {"en": "Silence alert", "ja": "アラートをサイレンス"}, "remediation", "low",
               SilenceParams, _silence),
)
_BY_NAME = {spec.name: spec for spec in ACTIONS}


def action_names() -> list[str]:
    return [spec.name for spec in ACTIONS]


def get_action(name: str) -> ActionSpec | None:
    return _BY_NAME.get(name)


def risk_of(spec: ActionSpec, params: BaseModel | None, step_risk: str | None = None,
            overrides: Mapping[str, str] | None = None) -> Risk:
    """The risk of running `spec` with these validated parameters. It decides who may approve
    (bot.policy.may_approve) and is shown on the step before anyone clicks, so the runbook
    (bot.runbooks.prepare_steps) and the approval request (commands.approvals) both ask here and
    never disagree.

    The installation's level for the action (`remediations.risk`: it may lower or raise it), else
    the action's own; then only raised: by what the parameters do (`risk_floor`: scaling to 0 is
    high) and by the runbook step's `risk`. Fails closed: a level it does not know, or parameters
    that are not the action's validated model when its risk depends on them, make it high."""
    levels = [(overrides or {}).get(spec.name, spec.risk), step_risk]
    if spec.risk_floor is not None:
        levels.append(spec.risk_floor(params) if isinstance(params, spec.params) else "high")
    known = [level for level in levels if level is not None]
    if any(level not in RISK_ORDER for level in known):
        return "high"
    return _RISKS[max(RISK_ORDER[level] for level in known)]
