"""Runbook lint: read runbook files with line numbers, check them, and say `file:line: message`.

`lint` is what `oncall-bot runbook lint` prints; the loader (bot.runbooks) runs the same checks
through `check_files`, so a runbook the linter rejects is never served. Beyond the format
(bot.runbook_format): duplicate YAML keys, step ids and runbook ids, each action's parameters
(literal values validated, templates parsed for what they read and, in PromQL queries and silence
matchers, for a `{{ … }}` outside a string literal, where its value cannot be escaped), and
runbooks whose matches may select the same alerts at the same rank.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import TemplateSyntaxError
from pydantic import ValidationError

from bot.action_params import ParamContext
from bot.action_runner import check_param
from bot.actions import RISK_ORDER, get_action
from bot.runbook_format import Match, RegexMatcher, Runbook, Step, is_label_name, value_matches
from bot.runbook_templates import misplaced_templates, template_refs, template_targets
from bot.yaml_lines import BoundedLoader, dotted

__all__ = ["LintProblem", "RunbookSource", "check_files", "lint"]


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


# -- YAML with line numbers ---------------------------------------------------------------------------

class _Map(dict[Any, Any]):
    line = 1
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    line = 1
    item_lines: list[int]


class _Loader(BoundedLoader):
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


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_seq)


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
class RunbookSource:
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


def _read(path: Path, shipped: bool) -> tuple[list[RunbookSource], list[LintProblem]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [LintProblem(name, 1, f"cannot read the file: {exc}")]
    data: list[Any] = []
    duplicates: list[tuple[int, Any]] = []
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # reads the whole text at once: a control character is refused here
        loader.duplicates = duplicates
        while loader.check_data():
            data.append(loader.get_data())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return [], [LintProblem(name, mark.line + 1 if mark else 1, f"invalid YAML: {exc.problem or exc.context}")]
    except yaml.reader.ReaderError as exc:  # a NUL or another control character: not a MarkedYAMLError
        line = text.count("\n", 0, exc.position) + 1
        return [], [LintProblem(name, line, f"invalid YAML: character {exc.character!r} is not allowed in YAML")]
    except RecursionError:  # PyYAML composes nested collections recursively
        return [], [LintProblem(name, 1, "invalid YAML: nested too deeply")]
    except ValueError as exc:  # an integer of over 4,300 digits (Python's int() limit)
        return [], [LintProblem(name, 1, f"invalid YAML: {str(exc)[:200]}")]
    finally:
        if loader is not None:
            loader.dispose()
    problems = [LintProblem(name, line, f"duplicate key {key!r}") for line, key in duplicates]
    docs = []
    for item in data:
        if isinstance(item, _Seq):
            docs += [RunbookSource(name, line, raw, shipped) for raw, line in zip(item, item.item_lines, strict=True)]
        elif item is not None:
            docs.append(RunbookSource(name, getattr(item, "line", 1), item, shipped))
    for doc in docs:
        if not isinstance(doc.raw, _Map):
            problems.append(doc.problem("expected a runbook (a mapping) or a list of runbooks"))
    return [doc for doc in docs if isinstance(doc.raw, _Map)], problems


def _path(loc: Sequence[str | int]) -> str:
    return dotted(loc) if loc else ""


def _schema_problems(doc: RunbookSource, exc: ValidationError) -> list[LintProblem]:
    problems = []
    for err in exc.errors():
        loc = [part for part in err["loc"] if isinstance(part, str | int)]
        parent, where = _path(loc[:-1]), _path(loc)
        if err["type"] == "extra_forbidden":
            message = f"{parent + ': ' if parent else ''}unknown field {loc[-1]!r}"
        elif err["type"] == "missing":
            message = f"{parent + ': ' if parent else ''}missing field {loc[-1]!r}"
        else:
            message = f"{where + ': ' if where else ''}{err['msg'].removeprefix('Value error, ')}"
        problems.append(doc.problem(message, *loc))
    return problems


def _validate(doc: RunbookSource) -> list[LintProblem]:
    try:
        doc.runbook = Runbook.model_validate(doc.raw)
    except ValidationError as exc:
        return _schema_problems(doc, exc)
    return []


# -- checks -----------------------------------------------------------------------------------------

_OUTSIDE = {
    "promql": "is outside a string literal of the PromQL query, so its value is not escaped and only a plain name, "
              "number or duration works there; put it inside \"…\" if it is a label value",
    "matchers": "is outside the quotes of a matcher, so its value is not escaped and only a label name works there; "
                "write name=\"{{ … }}\"",
}


def _check_template(doc: RunbookSource, guaranteed: set[str], loc: tuple[Any, ...], value: str,
                    language: str | None = None) -> list[LintProblem]:
    where = f"steps[{loc[1]}].action.params.{loc[-1]}"
    try:
        refs = template_refs(value)
        misplaced = misplaced_templates(value, language) if language else []
    except TemplateSyntaxError as exc:
        return [doc.problem(f"{where}: template syntax error: {exc.message}", *loc)]
    problems = [doc.problem(f"{where}: unknown variable {name!r}; templates see only labels, annotations and "
                            "alertname", *loc) for name in sorted(refs.unknown)]
    problems += [doc.problem(f"{where}: {expression} {_OUTSIDE[language]}", *loc, severity="warning")
                 for expression in misplaced if language]
    for kind, key, optional in refs.uses:
        if not is_label_name(key):
            problems.append(doc.problem(f"{where}: {kind}.{key} is not a name an alert can carry", *loc))
        elif kind == "labels" and not optional and key not in guaranteed:
            problems.append(doc.problem(
                f"{where}: label {key!r} is not guaranteed by the match; require it in match.labels, "
                "list it in expects, or give a default", *loc, severity="warning"))
    return problems


def _check_action(doc: RunbookSource, index: int, step: Step, runbook: Runbook) -> list[LintProblem]:
    assert step.action is not None
    spec = get_action(step.action.type)
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
            problems += _check_template(doc, guaranteed, (*ploc,), value, template_targets(spec.params).get(name))
        elif reason := check_param(spec.name, name, value, lint_ctx):
            problems.append(doc.problem(f"steps[{index}].action.params.{name}: {reason}", *ploc))
    return problems


def _check_runbook(doc: RunbookSource) -> list[LintProblem]:
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


_REGEX_META = set("\\.^$*+?{}[]()|")


def _literals(pattern: str) -> set[str] | None:
    """The strings a regex of plain alternatives (A|B|C) matches, or None if it is not one."""
    inner = re.fullmatch(r"\((?:\?:)?(.*)\)", pattern)
    body = inner[1] if inner and "(" not in inner[1] else pattern
    pieces = body.split("|")
    return None if any(_REGEX_META & set(piece) for piece in pieces) else set(pieces)


def _may_overlap(a: str | RegexMatcher, b: str | RegexMatcher) -> bool:
    if isinstance(a, str):
        return value_matches(b, a)
    if isinstance(b, str):
        return value_matches(a, b)
    for x, y in ((a, b), (b, a)):
        values = _literals(x.regex)
        if values is not None:
            return any(y.matches(v) for v in values)
    return True  # two general regexes: assume they may (a false alarm is fixed with a priority)


def _matches_may_overlap(a: Match, b: Match) -> bool:
    pairs = [(a.alertname, b.alertname)] + [(m, b.labels[k]) for k, m in a.labels.items() if k in b.labels]
    return all(_may_overlap(x, y) for x, y in pairs)


def _check_set(docs: list[RunbookSource]) -> list[LintProblem]:
    """Duplicate ids and equal-rank overlaps across the runbooks linted together."""
    problems: list[LintProblem] = []
    first: dict[str, RunbookSource] = {}
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


def check_files(paths: Iterable[Path | str], shipped: bool = False) -> tuple[list[RunbookSource], list[LintProblem]]:
    """The valid runbooks under `paths` (files or directories), and every problem, unsorted."""
    files, problems = _files(paths)
    docs: list[RunbookSource] = []
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
    return sorted(check_files(paths)[1])
