"""Runbook templates: action parameters are Jinja templates over the alert, rendered in a sandbox.

Templates see `labels`, `annotations` and `alertname` only, in an immutable sandbox without
globals; a missing label or annotation is an error that names it (the disabled button's
reason). `template_refs` tells lint what a template reads without rendering it.

Escaping for the target. A template's literal text is the runbook author's; the value of each
`{{ … }}` is data, and alert labels and annotations are untrusted. Rendering keeps the two apart:
the environment's `finalize` hook, which Jinja applies to the value of every `{{ … }}` and to none
of the author's text, records the value and emits a placeholder instead (`\ue000<nonce>:<n>\ue001`,
the nonce fresh for each rendering, so a label cannot forge one; a value built from other values,
as with `{% set %}` blocks or macros, is one value). The author's text around the placeholders is
then lexed in the language of the parameter, and each value is escaped for the place it lands in,
or the parameter fails (the step is disabled, saying why):

* PromQL (`query` of prometheus.query): inside "…" or '…' the value is written as a PromQL string
  literal, with Go's escapes (backslash, the quote, control characters); inside `…` (a raw string)
  a value holding a backtick or a control character is refused; inside the string of a regex
  matcher (`=~"…"`, `!~"…"`) the value is regex-quoted first (Go's regexp.QuoteMeta), so it
  matches itself while the author's regex around it stays a regex. Outside a string literal only
  a plain name, number or duration is accepted, and lint warns about such a template; in a `#`
  comment, no line break.
* Alertmanager silence matchers (`matchers` of alertmanager.silence): inside "…" Alertmanager's
  escapes (backslash, double quote, newline), regex-quoted after `=~`/`!~`; outside the quotes
  only a label name.
* Kubernetes label selectors (`selector` params): selectors have no quoting, so a value must be a
  label value or key (letters, digits, `-_./`), which cannot start another requirement.

The parameter's type decides which (`TemplateTarget` in its metadata, bot.param_syntax;
`template_targets` reads them off an action's model); other parameters get the values as they are,
for the action's model validates them strictly (DNS names, allow-listed URLs). Only `{{ … }}`
values are escaped, so the author's own quotes and regexes stay as written.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from bot.action_params import ParamError
from bot.param_syntax import TemplateTarget, is_selector_word, short_repr

__all__ = ["misplaced_templates", "render_params", "template_refs", "template_targets"]

TEMPLATE_VARIABLES = ("labels", "annotations", "alertname")
_MAX_RENDERED = 4096


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


# -- values apart from the author's text -------------------------------------------------------------

_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}([0-9a-f]{{16}}):([0-9]+){_CLOSE}")
_RENDERING: ContextVar[tuple[str, list[str]] | None] = ContextVar("_RENDERING", default=None)


@pass_context  # also keeps Jinja from folding constant outputs at compile time, outside a rendering
def _finalize(context: Context, value: Any) -> str:
    text = str(value)
    rendering = _RENDERING.get()
    if rendering is None:
        return text
    nonce, values = rendering

    def inner(match: re.Match[str]) -> str:
        return values[int(match[2])] if match[1] == nonce else match[0]

    values.append(_PLACEHOLDER.sub(inner, text))
    return f"{_OPEN}{nonce}:{len(values) - 1}{_CLOSE}"


# Immutable: no label.pop() and the like; no globals: no range(), lipsum(), namespace().
_ENV = ImmutableSandboxedEnvironment(undefined=_Undefined, autoescape=False, finalize=_finalize)
_ENV.globals.clear()


@lru_cache(maxsize=1024)
def _template(source: str) -> Any:
    return _ENV.from_string(source)


class _Refused(ValueError):
    """A value cannot be put where the template puts it."""


def _render(source: str, variables: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The author's text (n + 1 pieces) around the values of the n `{{ … }}` that were output."""
    nonce, values = secrets.token_hex(8), list[str]()
    token = _RENDERING.set((nonce, values))
    try:
        text = _template(source).render(variables)
    finally:
        _RENDERING.reset(token)
    texts, used, pos = [], [], 0
    for match in _PLACEHOLDER.finditer(text):
        if match[1] == nonce:
            texts.append(text[pos:match.start()])
            used.append(values[int(match[2])])
            pos = match.end()
    texts.append(text[pos:])
    if any(_OPEN in piece or _CLOSE in piece for piece in texts):
        raise _Refused("the template's output cannot be checked (is a {% filter %} block around a {{ … }}?)")
    return texts, used


# -- where the author's text leaves a value ----------------------------------------------------------

class _Lexer:
    """Follows the author's text of a PromQL query or a matcher list: in code, in a string (which
    quote; a regex matcher's or not; after a backslash), in a comment."""

    def __init__(self, quotes: str, comments: bool) -> None:
        self.quotes, self.comments = quotes, comments
        self.quote: str | None = None
        self.regex = self.escaped = self.comment = False
        self.tail = ""  # the last two characters of code that are not spaces

    def feed(self, text: str) -> None:
        for char in text:
            if self.comment:
                self.comment = char not in "\r\n"
            elif self.quote:
                if self.escaped:
                    self.escaped = False
                elif char == "\\" and self.quote != "`":
                    self.escaped = True
                elif char == self.quote:
                    self.quote, self.tail = None, char
            elif char in self.quotes:
                self.quote, self.regex = char, self.tail in ("=~", "!~")
            elif char == "#" and self.comments:
                self.comment = True
            elif not char.isspace():
                self.tail = (self.tail + char)[-2:]


def _regex_quote(value: str) -> str:
    """Go's regexp.QuoteMeta: the regex that matches exactly `value`."""
    return re.sub(r"[\\.+*?()|\[\]{}^$]", lambda m: "\\" + m[0], value)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
               "\\": "\\\\"}


def _promql_string(value: str, quote: str) -> str:
    """The inside of a PromQL "…" or '…' literal (Go's interpreted string syntax) that means `value`."""
    out = []
    for char in value:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char == quote:
            out.append("\\" + quote)
        elif char < " " or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


_PROMQL_WORD = re.compile(r"[0-9]+(\.[0-9]+)?|([0-9]+(ms|[smhdwy]))+|[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                    "bool", "atan2"}
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(f"{short_repr(value)} is not valid Unicode text, so it is not a label value") from None
    return value


def _promql_value(lexer: _Lexer, value: str) -> str:
    value = _unicode(value)
    if lexer.escaped:
        raise _Refused("a {{ … }} right after a backslash in a string literal cannot be escaped")
    if lexer.comment:
        if "\n" in value or "\r" in value:
            raise _Refused(f"{short_repr(value)} would end the query's comment")
        return value
    if lexer.quote is None:
        if not _PROMQL_WORD.fullmatch(value) or value.lower() in _PROMQL_KEYWORDS:
            raise _Refused(f"{short_repr(value)} is put outside a string literal of the query, where only a "
                           "plain name, number or duration can go; quote the {{ … }} in the runbook")
        return value
    if lexer.regex:
        value = _regex_quote(value)
    if lexer.quote == "`":
        if "`" in value or re.search(r"[\x00-\x1f\x7f]", value):
            raise _Refused(f"{short_repr(value)} cannot go into a `raw` string literal (a backtick or a control "
                           "character); use \"…\" in the runbook")
        return value
    return _promql_string(value, lexer.quote)


def _matcher_value(lexer: _Lexer, value: str) -> str:
    value = _unicode(value)
    if lexer.escaped:
        raise _Refused("a {{ … }} right after a backslash in a matcher value cannot be escaped")
    if lexer.quote is None:
        if not _LABEL_NAME.fullmatch(value):
            raise _Refused(f"{short_repr(value)} is put outside the quotes of a matcher, where only a label name "
                           "can go; write name=\"{{ … }}\" in the runbook")
        return value
    if lexer.regex:
        value = _regex_quote(value)
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escaped(texts: list[str], values: list[str], lexer: _Lexer,
             escape: Callable[[_Lexer, str], str]) -> str:
    out = []
    for text, value in zip(texts, [*values, None], strict=True):
        lexer.feed(text)
        out.append(text)
        if value is not None:
            written = escape(lexer, value)
            lexer.feed(written)  # a written value leaves the lexer where it was (or, in code, after a word)
            out.append(written)
    return "".join(out)


def _selector(texts: list[str], values: list[str]) -> str:
    for value in values:
        if not is_selector_word(value):
            raise _Refused(f"{short_repr(value)} is not a label value (at most 63 of A-Z a-z 0-9 - _ .), so it "
                           "cannot go into a label selector")
    return "".join(t + v for t, v in zip(texts, [*values, ""], strict=True))


def _join(texts: list[str], values: list[str], language: str | None) -> str:
    if language == "promql":
        return _escaped(texts, values, _Lexer("\"'`", comments=True), _promql_value)
    if language == "matchers":
        return _escaped(texts, values, _Lexer('"', comments=False), _matcher_value)
    if language == "selector":
        return _selector(texts, values)
    return "".join(t + v for t, v in zip(texts, [*values, ""], strict=True))


def template_targets(model: type[BaseModel]) -> dict[str, str]:
    """Parameter name -> the language its templated values are escaped for (TemplateTarget)."""
    return {name: meta.language for name, info in model.model_fields.items()
            for meta in info.metadata if isinstance(meta, TemplateTarget)}


def render_params(params: Mapping[str, Any], labels: Mapping[str, str], annotations: Mapping[str, str],
                  targets: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fill string parameters from the alert; ParamError names the first that cannot be filled.
    `targets` (template_targets of the action's model) says which parameters are PromQL, matchers
    or selectors, whose values are escaped for them. The output is data: it is never rendered
    again, so label values cannot inject templates."""
    variables = {"labels": _Labels(labels), "annotations": _Annotations(annotations),
                 "alertname": labels.get("alertname", "")}
    rendered = {}
    for name, value in params.items():
        if not isinstance(value, str):
            rendered[name] = value
            continue
        try:
            text = _join(*_render(value, variables), (targets or {}).get(name))
        except _Refused as exc:
            raise ParamError(f"{name}: {exc}") from None
        except TemplateError as exc:  # includes the sandbox's SecurityError and StrictUndefined's errors
            raise ParamError(f"{name}: {exc.message or exc}") from None
        except Exception as exc:  # an authored template can still divide by zero and the like
            raise ParamError(f"{name}: the template failed: {type(exc).__name__}: {exc}") from None
        if len(text) > _MAX_RENDERED:
            raise ParamError(f"{name}: the rendered value is longer than {_MAX_RENDERED} characters")
        rendered[name] = text
    return rendered


def misplaced_templates(source: str, language: str) -> list[str]:
    """The `{{ … }}` of a PromQL or matchers template that lie outside a string literal, where a
    value is not escaped but must be a plain word (lint's warning). The template's text is read
    in source order, block tags skipped (TemplateSyntaxError if it is not a template)."""
    if language not in ("promql", "matchers"):
        return []
    lexer = _Lexer("\"'`", comments=True) if language == "promql" else _Lexer('"', comments=False)
    found, expression = [], None
    for _, kind, text in _ENV.lex(source):
        if kind == "variable_begin":
            expression = text
        elif expression is not None:
            expression += text
            if kind == "variable_end":
                if lexer.quote is None and not lexer.comment:
                    found.append(expression)
                    lexer.feed("x")  # a word stands in for the value
                expression = None
        elif kind == "data":
            lexer.feed(text)
    return found


@dataclass(frozen=True)
class TemplateRefs:
    unknown: set[str] = field(default_factory=set)                    # names other than the three
    uses: list[tuple[str, str, bool]] = field(default_factory=list)    # (labels|annotations, key, optional)


def template_refs(source: str) -> TemplateRefs:
    """What a template reads (TemplateSyntaxError if it is not one). References under `default`/`d`
    or an `is defined` test are optional: the author handled their absence."""
    tree = _ENV.parse(source)
    refs, stored = TemplateRefs(), {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}

    def visit(node: nodes.Node, optional: bool) -> None:
        if isinstance(node, nodes.Filter) and node.name in ("default", "d"):
            optional = True
        if isinstance(node, nodes.Test) and node.name in ("defined", "undefined"):
            optional = True
        if isinstance(node, nodes.Getattr | nodes.Getitem) and isinstance(node.node, nodes.Name) \
                and node.node.name in ("labels", "annotations"):
            key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
            if isinstance(key, str):
                refs.uses.append((node.node.name, key, optional))
                return
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name not in stored \
                and node.name not in TEMPLATE_VARIABLES:
            refs.unknown.add(node.name)
        for child in node.iter_child_nodes():
            visit(child, optional)

    visit(tree, False)
    return refs
