"""Runbook templates: action parameters are Jinja templates over the alert, rendered in a sandbox.

Templates see `labels`, `annotations` and `alertname` only, in an immutable sandbox without
globals; a missing label or annotation is an error that names it (the disabled button's
reason). `template_refs` tells lint what a template reads without rendering it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bot.action_params import ParamError

__all__ = ["render_params", "template_refs"]

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
