"""Runbooks as code: the YAML format, loading, matching, templating and lint. No I/O beyond
reading the runbook files.

A runbook matches alerts by alertname and labels and lists steps; a step may name an
allow-listed action (bot.actions) whose parameters are Jinja templates over the alert. They are
rendered in a sandbox over `labels`, `annotations` and `alertname` only, then validated by the
action's model; a step whose parameters fail is shown disabled with the reason.

The loader runs the same checks as `lint`, so a runbook the linter rejects is never served.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema,
    model_validator,
)

from bot import actions
from bot.actions import RISK_ORDER, ParamContext, ParamError, Risk

__all__ = [
    "SHIPPED_DIR", "ActionRef", "LintProblem", "Match", "PreparedStep", "RegexMatcher", "Runbook", "RunbookError",
    "RunbookSet", "ScaleBounds", "Step", "Text", "lint", "load_runbooks", "localized", "param_context",
    "paths_from_env", "prepare_steps", "render_params", "runbook_schema",
]

SHIPPED_DIR = Path(__file__).parent / "runbooks"
TEMPLATE_VARIABLES = ("labels", "annotations", "alertname")
_MAX_RENDERED = 4096


# -- text in several languages ----------------------------------------------------------------------

_LANG = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")


def _text(value: Any) -> Any:
    """One clear message instead of pydantic's per-union-member errors."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return value
    if isinstance(value, dict) and value:
        for lang, text in value.items():
            if not isinstance(lang, str) or not _LANG.fullmatch(lang):
                raise ValueError(f"{lang!r} is not a language code like en or ja")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"the {lang!r} text must be a non-empty string")
        if "en" not in value:
            raise ValueError("a per-language map needs an 'en' entry (the fallback)")
        return dict(value)
    raise ValueError("must be a string or a map of language to string, like {en: ..., ja: ...}")


Text = Annotated[str | dict[str, str], BeforeValidator(_text)]


def localized(text: str | Mapping[str, str] | None, locale: str | None) -> str:
    """The text in the Slack locale's language ("ja-JP" → ja), else English."""
    if text is None or isinstance(text, str):
        return text or ""
    tag = (locale or "en").replace("_", "-")
    for key in (tag, tag.split("-")[0].lower(), "en"):
        if key in text:
            return text[key]
    return next(iter(text.values()), "")


# -- matching -----------------------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_REGEX_META = set("\\.^$*+?{}[]()|")


def _label_name(value: str) -> str:
    if not _LABEL_NAME.fullmatch(value) or value.startswith("__"):
        raise ValueError(f"{value!r} is not an alert label name")
    return value


LabelName = Annotated[str, AfterValidator(_label_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegexMatcher(_Strict):
    regex: str = Field(description="a regular expression that must match the whole value")

    def matches(self, value: str) -> bool:
        return _compiled(self.regex).fullmatch(value) is not None


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _matcher(value: Any) -> Any:
    if isinstance(value, str | RegexMatcher):
        return value
    if isinstance(value, dict) and list(value) == ["regex"] and isinstance(value["regex"], str):
        try:
            _compiled(value["regex"])
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value['regex']!r}: {exc}") from None
        return RegexMatcher(regex=value["regex"])
    raise ValueError("must be a value (exact match) or {regex: <full-match regular expression>}")


Matcher = Annotated[str | RegexMatcher, BeforeValidator(_matcher)]


def _matches(matcher: str | RegexMatcher, value: str) -> bool:
    return matcher.matches(value) if isinstance(matcher, RegexMatcher) else matcher == value


class Match(_Strict):
    alertname: Matcher
    labels: dict[LabelName, Matcher] = Field(default_factory=dict, description="label -> value or {regex: ...}")
    priority: int = Field(0, description="the highest priority wins; then the most specific match")

    @model_validator(mode="after")
    def _no_alertname_label(self) -> Match:
        if "alertname" in self.labels:
            raise ValueError("put the alertname in match.alertname, not in match.labels")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        # A missing label counts as empty, as in Prometheus.
        return _matches(self.alertname, labels.get("alertname", "")) and all(
            _matches(m, labels.get(name, "")) for name, m in self.labels.items())

    @property
    def specificity(self) -> tuple[int, int]:
        """(matchers, exact matchers): more matchers, then more exact ones, is more specific."""
        every = [self.alertname, *self.labels.values()]
        return len(every), sum(1 for m in every if isinstance(m, str))

    def guaranteed_labels(self) -> set[str]:
        """Labels every matching alert carries with a non-empty value."""
        return {"alertname"} | {name for name, m in self.labels.items() if not _matches(m, "")}


# -- the runbook ------------------------------------------------------------------------------------

def _known_action(name: str) -> str:
    if actions.get_action(name) is None:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(actions.action_names())}")
    return name


def _param_values(value: Any) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(item, str | int | bool) or isinstance(item, float):
                raise ValueError(f"parameter {key!r} must be a string, an integer or a boolean")
    return value


ActionName = Annotated[str, AfterValidator(_known_action),
                       WithJsonSchema({"type": "string", "enum": actions.action_names()})]
_SLUG = r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$"


def _slug(value: str) -> str:
    if not re.match(_SLUG, value):
        raise ValueError(f"{value!r} is not an id: lowercase letters, digits and '-', at most 64 characters")
    return value


Slug = Annotated[str, AfterValidator(_slug), WithJsonSchema({"type": "string", "pattern": _SLUG})]


class ActionRef(_Strict):
    type: ActionName
    params: Annotated[dict[str, str | int | bool], BeforeValidator(_param_values)] = Field(
        default_factory=dict, description="strings may be Jinja templates over labels, annotations, alertname")


class Step(_Strict):
    id: Slug
    title: Text
    text: Text = Field(description="Markdown")
    action: ActionRef | None = None
    risk: Risk | None = Field(None, description="raise the action's risk (e.g. high for expert-only steps)")


class ScaleBounds(_Strict):
    min: int = Field(ge=0, le=1000)
    max: int = Field(ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> ScaleBounds:
        if self.min > self.max:
            raise ValueError(f"scale.min ({self.min}) is above scale.max ({self.max})")
        return self


class Runbook(_Strict):
    id: Slug
    title: Text
    description: Text | None = None
    match: Match
    namespaces: list[actions.DnsLabel] = Field(
        default_factory=list, description="namespaces the actions may touch (the configuration may add more)")
    urls: list[Annotated[str, AfterValidator(actions.check_url)]] = Field(
        default_factory=list, description="URL prefixes http.check may fetch (the configuration may add more)")
    scale: ScaleBounds | None = Field(None, description="replica bounds for k8s.scale")
    expects: list[LabelName] = Field(
        default_factory=list, description="labels the steps use that the match does not require; an alert "
        "without one gets those steps disabled (listing them here acknowledges that)")
    steps: list[Step] = Field(min_length=1)


def runbook_schema() -> dict[str, Any]:
    """The JSON Schema of a runbook file: one runbook or a list of them."""
    schema = TypeAdapter(Runbook | list[Runbook]).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "oncall-bot runbook", **schema}


# -- lint problems --------------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class LintProblem:
    file: str
    line: int
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.file}:{self.line}: {prefix}{self.message}"


class RunbookError(Exception):
    """Runbook files that failed the checks; `problems` holds each as file:line: message."""

    def __init__(self, problems: list[LintProblem]) -> None:
        super().__init__("invalid runbooks:\n" + "\n".join(map(str, problems)))
        self.problems = problems


# -- YAML with line numbers ---------------------------------------------------------------------------

class _Map(dict[Any, Any]):
    line = 1
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    line = 1
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    duplicates: list[tuple[int, Any]]


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line, result.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar",
                                                    key_node.start_mark) from None
        if key in result:  # PyYAML silently keeps the last one; a typo'd copy would go unnoticed
            loader.duplicates.append((key_node.start_mark.line + 1, key))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    result.line, result.item_lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)  # type: ignore[arg-type]
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)  # type: ignore[arg-type]


def _line_at(raw: Any, loc: Sequence[Any], default: int) -> int:
    """The line of the deepest key along a pydantic error location."""
    line, node = getattr(raw, "line", default), raw
    for part in loc:
        if isinstance(node, _Map) and part in node:
            line, node = node.key_lines[part], node[part]
        elif isinstance(node, _Seq) and isinstance(part, int) and 0 <= part < len(node):
            line, node = node.item_lines[part], node[part]
        else:
            break
    return line


@dataclass
class _Doc:
    """One runbook as written: where, the raw data with lines, and the model once valid."""

    file: str
    line: int
    raw: Any
    shipped: bool = False
    runbook: Runbook | None = None

    def line_of(self, *loc: Any) -> int:
        return _line_at(self.raw, loc, self.line)

    def problem(self, message: str, *loc: Any, severity: Literal["error", "warning"] = "error") -> LintProblem:
        return LintProblem(self.file, self.line_of(*loc), message, severity)


def _files(paths: Iterable[Path | str]) -> tuple[list[Path], list[LintProblem]]:
    files, problems = [], []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            problems.append(LintProblem(str(path), 1, "no such file or directory"))
    return files, problems


def _read(path: Path, shipped: bool) -> tuple[list[_Doc], list[LintProblem]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [LintProblem(name, 1, f"cannot read the file: {exc}")]
    loader = _Loader(text)
    loader.duplicates = []
    data: list[Any] = []
    try:
        while loader.check_data():
            data.append(loader.get_data())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return [], [LintProblem(name, mark.line + 1 if mark else 1, f"invalid YAML: {exc.problem or exc.context}")]
    finally:
        loader.dispose()
    problems = [LintProblem(name, line, f"duplicate key {key!r}") for line, key in loader.duplicates]
    docs = []
    for item in data:
        if isinstance(item, _Seq):
            docs += [_Doc(name, line, raw, shipped) for raw, line in zip(item, item.item_lines)]
        elif item is not None:
            docs.append(_Doc(name, getattr(item, "line", 1), item, shipped))
    for doc in docs:
        if not isinstance(doc.raw, _Map):
            problems.append(doc.problem("expected a runbook (a mapping) or a list of runbooks"))
    return [doc for doc in docs if isinstance(doc.raw, _Map)], problems


def _schema_problems(doc: _Doc, exc: ValidationError) -> list[LintProblem]:
    problems = []
    for err in exc.errors():
        loc = [part for part in err["loc"] if isinstance(part, str | int)]
        parent = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[:-1]).lstrip(".")
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        if err["type"] == "extra_forbidden":
            message = f"{parent + ': ' if parent else ''}unknown field {loc[-1]!r}"
        elif err["type"] == "missing":
            message = f"{parent + ': ' if parent else ''}missing field {loc[-1]!r}"
        else:
            message = f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}"
        problems.append(doc.problem(message, *loc))
    return problems


def _validate(doc: _Doc) -> list[LintProblem]:
    try:
        doc.runbook = Runbook.model_validate(doc.raw)
    except ValidationError as exc:
        return _schema_problems(doc, exc)
    return []


# -- templates ---------------------------------------------------------------------------------------

class _Labels(dict[str, str]):
    pass


class _Annotations(dict[str, str]):
    pass


class _Undefined(StrictUndefined):
    """Says which label or annotation the alert lacks; that is the disabled button's reason."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if not self._undefined_hint and isinstance(self._undefined_obj, _Labels):
            return f"the alert has no label {self._undefined_name!r}"
        if not self._undefined_hint and isinstance(self._undefined_obj, _Annotations):
            return f"the alert has no annotation {self._undefined_name!r}"
        return str(super()._undefined_message)


# Immutable: no label.pop() and the like; no globals: no range(), lipsum(), namespace().
_ENV = ImmutableSandboxedEnvironment(undefined=_Undefined, autoescape=False)
_ENV.globals.clear()


@lru_cache(maxsize=1024)
def _template(source: str) -> Any:
    return _ENV.from_string(source)


def render_params(params: Mapping[str, Any], labels: Mapping[str, str],
                  annotations: Mapping[str, str]) -> dict[str, Any]:
    """Fill string parameters from the alert; ParamError names the first that cannot be filled.
    The output is data: it is never rendered again, so label values cannot inject templates."""
    variables = {"labels": _Labels(labels), "annotations": _Annotations(annotations),
                 "alertname": labels.get("alertname", "")}
    rendered = {}
    for name, value in params.items():
        if not isinstance(value, str):
            rendered[name] = value
            continue
        try:
            text = _template(value).render(variables)
        except TemplateError as exc:  # includes the sandbox's SecurityError and StrictUndefined's errors
            raise ParamError(f"{name}: {exc.message or exc}") from None
        except Exception as exc:  # an authored template can still divide by zero and the like
            raise ParamError(f"{name}: the template failed: {type(exc).__name__}: {exc}") from None
        if len(text) > _MAX_RENDERED:
            raise ParamError(f"{name}: the rendered value is longer than {_MAX_RENDERED} characters")
        rendered[name] = text
    return rendered


@dataclass(frozen=True)
class _Refs:
    unknown: set[str] = field(default_factory=set)                    # names other than the three
    uses: list[tuple[str, str, bool]] = field(default_factory=list)    # (labels|annotations, key, optional)


def _template_refs(source: str) -> _Refs:
    """What a template reads. References under `default`/`d` or an `is defined` test are optional:
    the author handled their absence."""
    tree = _ENV.parse(source)
    refs, stored = _Refs(), {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}

    def visit(node: nodes.Node, optional: bool) -> None:
        if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
            optional = True
        if isinstance(node, nodes.Test) and node.name in ("defined", "undefined"):
            optional = True
        target = node.node if isinstance(node, nodes.Getattr | nodes.Getitem) else None
        if isinstance(target, nodes.Name) and target.name in ("labels", "annotations"):
            key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(key, str):
                refs.uses.append((target.name, key, optional))
                return
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in stored \
                and node.name not in TEMPLATE_VARIABLES:
            refs.unknown.add(node.name)
        for child in node.iter_child_nodes():
            visit(child, optional)

    visit(tree, False)
    return refs


# -- preparing the steps for an alert -----------------------------------------------------------------

@dataclass(frozen=True)
class PreparedStep:
    """A step for one alert: its action's validated parameters, or why its button is disabled."""

    index: int
    step: Step
    action: str | None
    kind: Literal["diagnostic", "remediation", "info"]
    risk: Risk | None = None
    params: BaseModel | None = None
    error: str | None = None

    @property
    def enabled(self) -> bool:
        return self.action is not None and self.error is None


def param_context(runbook: Runbook, allowed_namespaces: Iterable[str] = (),
                  allowed_urls: Iterable[str] = ()) -> ParamContext:
    """The allow-lists are the runbook's plus the configuration's."""
    return ParamContext(namespaces=frozenset(runbook.namespaces) | frozenset(allowed_namespaces),
                        urls=(*runbook.urls, *allowed_urls),
                        scale=(runbook.scale.min, runbook.scale.max) if runbook.scale else None)


def _effective_risk(spec: actions.ActionSpec, step: Step) -> Risk:
    return step.risk if step.risk and RISK_ORDER[step.risk] > RISK_ORDER[spec.risk] else spec.risk


def _without_empty_optionals(spec: actions.ActionSpec, rendered: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter that renders empty is left out, so `{{ labels.container | default('') }}`
    means "the container if the alert names one"."""
    fields = spec.params.model_fields
    return {name: value for name, value in rendered.items()
            if not (value == "" and name in fields and not fields[name].is_required())}


def prepare_steps(runbook: Runbook, alert_labels: Mapping[str, str], alert_annotations: Mapping[str, str],
                  allowed_namespaces: Iterable[str] = (), *, allowed_urls: Iterable[str] = ()) -> list[PreparedStep]:
    ctx = param_context(runbook, allowed_namespaces, allowed_urls)
    prepared = []
    for index, step in enumerate(runbook.steps):
        spec = actions.get_action(step.action.type) if step.action else None
        if step.action is None or spec is None:
            prepared.append(PreparedStep(index, step, None, "info", step.risk))
            continue
        try:
            rendered = _without_empty_optionals(spec, render_params(step.action.params, alert_labels,
                                                                    alert_annotations))
            params, error = actions.validate_params(spec.name, rendered, ctx), None
        except ParamError as exc:
            params, error = None, str(exc)
        prepared.append(PreparedStep(index, step, spec.name, spec.kind, _effective_risk(spec, step), params, error))
    return prepared


# -- lint -------------------------------------------------------------------------------------------

def _check_template(doc: _Doc, guaranteed: set[str], loc: tuple[Any, ...], value: str) -> list[LintProblem]:
    where = f"steps[{loc[1]}].action.params.{loc[-1]}"
    try:
        refs = _template_refs(value)
    except TemplateSyntaxError as exc:
        return [doc.problem(f"{where}: template syntax error: {exc.message}", *loc)]
    problems = [doc.problem(f"{where}: unknown variable {name!r}; templates see only labels, annotations and "
                            "alertname", *loc) for name in sorted(refs.unknown)]
    for kind, key, optional in refs.uses:
        if not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
            problems.append(doc.problem(f"{where}: {kind}.{key} is not a name an alert can carry", *loc))
        elif kind == "labels" and not optional and key not in guaranteed:
            problems.append(doc.problem(
                f"{where}: label {key!r} is not guaranteed by the match; require it in match.labels, "
                "list it in expects, or give a default", *loc, severity="warning"))
    return problems


def _check_action(doc: _Doc, index: int, step: Step, runbook: Runbook) -> list[LintProblem]:
    assert step.action is not None
    spec = actions.get_action(step.action.type)
    if spec is None:
        return []
    loc = ("steps", index, "action")
    fields = spec.params.model_fields
    problems = [doc.problem(f"steps[{index}].action: {spec.name} needs parameter {name!r}", *loc)
                for name, info in fields.items() if info.is_required() and name not in step.action.params]
    if spec.name == "k8s.scale" and runbook.scale is None:
        problems.append(doc.problem(f"steps[{index}].action: k8s.scale needs the runbook's scale: {{min, max}}", *loc))
    if step.risk and RISK_ORDER[step.risk] < RISK_ORDER[spec.risk]:
        problems.append(doc.problem(f"steps[{index}].risk: {step.risk} is below {spec.name}'s own risk "
                                    f"{spec.risk}, which applies", "steps", index, "risk", severity="warning"))
    lint_ctx = ParamContext(scale=(runbook.scale.min, runbook.scale.max) if runbook.scale else (0, 1000),
                            check_allow_lists=False)
    guaranteed = runbook.match.guaranteed_labels() | set(runbook.expects)
    for name, value in step.action.params.items():
        ploc = (*loc, "params", name)
        if name not in fields:
            problems.append(doc.problem(f"steps[{index}].action.params: {spec.name} has no parameter {name!r} "
                                        f"(it takes {', '.join(fields)})", *ploc))
        elif isinstance(value, str) and ("{{" in value or "{%" in value):
            problems += _check_template(doc, guaranteed, (*ploc,), value)
        elif reason := actions.check_param(spec.name, name, value, lint_ctx):
            problems.append(doc.problem(f"steps[{index}].action.params.{name}: {reason}", *ploc))
    return problems


def _check_runbook(doc: _Doc) -> list[LintProblem]:
    runbook = doc.runbook
    assert runbook is not None
    problems, seen = [], set()
    for index, step in enumerate(runbook.steps):
        if step.id in seen:
            problems.append(doc.problem(f"steps[{index}]: duplicate step id {step.id!r}", "steps", index, "id"))
        seen.add(step.id)
        if step.action:
            problems += _check_action(doc, index, step, runbook)
    return problems


def _literals(pattern: str) -> set[str] | None:
    """The strings a regex of plain alternatives (A|B|C) matches, or None if it is not one."""
    inner = re.fullmatch(r"\((?:\?:)?(.*)\)", pattern)
    body = inner[1] if inner and "(" not in inner[1] else pattern
    pieces = body.split("|")
    return None if any(_REGEX_META & set(piece) for piece in pieces) else set(pieces)


def _may_overlap(a: str | RegexMatcher, b: str | RegexMatcher) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        exact, other = (a, b) if isinstance(a, str) else (b, a)
        return _matches(other, exact)
    for x, y in ((a, b), (b, a)):
        values = _literals(x.regex)
        if values is not None:
            return any(y.matches(v) for v in values)
    return True  # two general regexes: assume they may (a false alarm is fixed with a priority)


def _matches_may_overlap(a: Match, b: Match) -> bool:
    pairs = [(a.alertname, b.alertname)] + [(m, b.labels[k]) for k, m in a.labels.items() if k in b.labels]
    return all(_may_overlap(x, y) for x, y in pairs)


def _check_set(docs: list[_Doc]) -> list[LintProblem]:
    """Duplicate ids and equal-rank overlaps across the runbooks linted together."""
    problems, first = [], {}
    for doc in docs:
        runbook = doc.runbook
        assert runbook is not None
        if runbook.id in first:
            other = first[runbook.id]
            problems.append(doc.problem(f"duplicate runbook id {runbook.id!r} (also {other.file}:{other.line})",
                                        "id"))
            continue
        for other in first.values():
            theirs = other.runbook
            assert theirs is not None
            same_rank = (runbook.match.priority, runbook.match.specificity) == \
                (theirs.match.priority, theirs.match.specificity)
            if same_rank and _matches_may_overlap(runbook.match, theirs.match):
                problems.append(doc.problem(
                    f"match may select the same alerts as runbook {theirs.id!r} ({other.file}:{other.line}) at the "
                    f"same priority {runbook.match.priority}; give one a higher priority", "match"))
        first[runbook.id] = doc
    return problems


def _check(paths: Iterable[Path | str], shipped: bool = False) -> tuple[list[_Doc], list[LintProblem]]:
    files, problems = _files(paths)
    docs: list[_Doc] = []
    for path in files:
        read, read_problems = _read(path, shipped)
        docs += read
        problems += read_problems
    for doc in docs:
        problems += _validate(doc)
    valid = [doc for doc in docs if doc.runbook is not None]
    for doc in valid:
        problems += _check_runbook(doc)
    return valid, problems + _check_set(valid)


def lint(paths: Iterable[Path | str]) -> list[LintProblem]:
    """Every problem in the runbook files under `paths` (files or directories), sorted."""
    return sorted(_check(paths)[1])


# -- the loaded set ---------------------------------------------------------------------------------------

class RunbookSet:
    """The runbooks the bot serves. At equal priority and specificity a team's runbook beats a
    shipped one (and one with a shipped runbook's id replaces it), so teams can override."""

    def __init__(self, docs: list[_Doc], warnings: list[LintProblem] | None = None) -> None:
        own = {doc.runbook.id for doc in docs if not doc.shipped and doc.runbook}
        self._docs = [doc for doc in docs if doc.runbook and not (doc.shipped and doc.runbook.id in own)]
        self.warnings = warnings or []

    def __iter__(self) -> Any:
        return iter(self.runbooks)

    def __len__(self) -> int:
        return len(self._docs)

    @property
    def runbooks(self) -> list[Runbook]:
        return [doc.runbook for doc in self._docs if doc.runbook]

    def get(self, runbook_id: str) -> Runbook | None:
        return next((rb for rb in self.runbooks if rb.id == runbook_id), None)

    def origin(self, runbook_id: str) -> str | None:
        """file:line where the runbook is defined."""
        return next((f"{d.file}:{d.line}" for d in self._docs if d.runbook and d.runbook.id == runbook_id), None)

    def best_match(self, labels: Mapping[str, str]) -> Runbook | None:
        ranked = [((doc.runbook.match.priority, doc.runbook.match.specificity, not doc.shipped, -order), doc.runbook)
                  for order, doc in enumerate(self._docs) if doc.runbook and doc.runbook.match.matches(labels)]
        return max(ranked, key=lambda pair: pair[0])[1] if ranked else None


def paths_from_env(value: str | None) -> list[Path]:
    """RUNBOOKS_PATH: directories (or files) separated by ':'."""
    return [Path(part) for part in (value or "").split(os.pathsep) if part.strip()]


def load_runbooks(paths: Iterable[Path | str], *, include_shipped: bool = True) -> RunbookSet:
    """The shipped runbooks plus those under `paths`; RunbookError lists every lint error."""
    shipped, problems = _check([SHIPPED_DIR], shipped=True) if include_shipped else ([], [])
    own, own_problems = _check(paths)
    problems = sorted(problems + own_problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise RunbookError(errors)
    return RunbookSet(shipped + own, [p for p in problems if p.severity == "warning"])
