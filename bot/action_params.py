"""What a runbook action accepts: one pydantic model per action, validated with a `ParamContext`.

The models combine the value syntax of bot.param_syntax with what only the context knows: the
allow-listed namespaces and URLs (the runbook's plus the configuration's), the nodes the
configuration lets cordon/uncordon touch, and the runbook's scale bounds. A value that fails
validation never reaches an executor (bot.actions). A URL is validated in its normalised form,
which is also the value the model keeps and `http.check` fetches.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from bot.param_syntax import (
    Comment,
    DnsLabel,
    DnsSubdomain,
    LabelSelector,
    ObjectKind,
    PromQL,
    QueryRange,
    QueryStep,
    SilenceDuration,
    SilenceMatchers,
    normalize_url,
    short_repr,
    url_allowed,
)

__all__ = [
    "DeletePodParams", "DeploymentParams", "EventsParams", "HttpCheckParams", "LogsParams", "NodeParams",
    "ParamContext", "ParamError", "PodsParams", "QueryParams", "ScaleParams", "SilenceParams", "UndoParams",
]


class ParamError(ValueError):
    """Parameters failed validation; the message says which and why (shown on the disabled button)."""


@dataclass(frozen=True)
class ParamContext:
    """What parameter validation checks against. `check_allow_lists=False` is for lint, which
    cannot know the namespaces, URLs and nodes that the bot's configuration adds."""

    namespaces: frozenset[str] = frozenset()
    urls: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()  # glob patterns (the configuration's runbooks.nodes); empty: no node
    scale: tuple[int, int] | None = None  # the runbook's (min, max) replicas; None: k8s.scale refused
    check_allow_lists: bool = True


def _context(info: ValidationInfo) -> ParamContext:
    ctx = (info.context or {}).get("oncall") if isinstance(info.context, dict) else None
    return ctx if isinstance(ctx, ParamContext) else ParamContext()  # no context: fail closed


# -- allow-lists and bounds ------------------------------------------------------------------------

def _allowed_namespace(value: str, info: ValidationInfo) -> str:
    ctx = _context(info)
    if ctx.check_allow_lists and value not in ctx.namespaces:
        allowed = ", ".join(sorted(ctx.namespaces)) or "none"
        raise ValueError(f"namespace {value!r} is not in the allow-list (allowed: {allowed}); add it to the "
                         "runbook's `namespaces` or to the bot's configuration")
    return value


def _allowed_url(value: str, info: ValidationInfo) -> str:
    value = normalize_url(value)  # dot segments resolved: what is checked below is what http.check fetches
    ctx = _context(info)
    if ctx.check_allow_lists and not any(url_allowed(value, entry) for entry in ctx.urls):
        raise ValueError(f"URL {short_repr(value)} is not in the allow-list; add its prefix to the runbook's "
                         "`urls` or to the bot's configuration")
    return value


def _allowed_node(value: str, info: ValidationInfo) -> str:
    ctx = _context(info)
    if not ctx.check_allow_lists:
        return value
    if not ctx.nodes:
        raise ValueError("cordon/uncordon is disabled: no node allow-list; set `runbooks.nodes` (glob patterns "
                         "like worker-*) in the bot's configuration (ONCALL_CONFIG) to allow it")
    if not any(fnmatchcase(value, pattern) for pattern in ctx.nodes):
        raise ValueError(f"node {value!r} is not in the node allow-list (allowed: {', '.join(ctx.nodes)}); "
                         "add a pattern to `runbooks.nodes` in the bot's configuration")
    return value


def _within_scale(value: int, info: ValidationInfo) -> int:
    bounds = _context(info).scale
    if bounds is None:
        raise ValueError("the runbook sets no `scale: {min, max}` bounds, so k8s.scale is refused")
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"replicas {value} is outside the runbook's bounds {bounds[0]}..{bounds[1]}")
    return value


Namespace = Annotated[DnsLabel, AfterValidator(_allowed_namespace)]
AllowedUrl = Annotated[str, AfterValidator(_allowed_url)]
AllowedNode = Annotated[DnsSubdomain, AfterValidator(_allowed_node)]


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
    node: AllowedNode


class SilenceParams(_Params):
    matchers: SilenceMatchers
    duration: SilenceDuration = "1h"
    comment: Comment = "silenced from a runbook in Slack"
