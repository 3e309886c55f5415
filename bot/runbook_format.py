"""The runbook file format: the pydantic models a runbook file must fit, and its JSON Schema.

A runbook matches alerts by alertname and labels and lists steps; a step may name an
allow-listed action (bot.actions) whose parameters are Jinja templates over the alert
(bot.runbook_templates). The models check each runbook on its own; bot.runbook_lint adds the
checks that need the file (lines, duplicate keys) or the other runbooks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    model_validator,
)

from bot.actions import Risk, action_names, get_action
from bot.param_syntax import DnsLabel, check_url

__all__ = ["Match", "RegexMatcher", "Runbook", "Step", "is_label_name", "localized", "runbook_schema", "value_matches"]


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


def is_label_name(value: str) -> bool:
    """A name an alert label (or annotation) can have: Prometheus's syntax, not reserved (`__`)."""
    return _LABEL_NAME.fullmatch(value) is not None and not value.startswith("__")


def _label_name(value: str) -> str:
    if not is_label_name(value):
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


def value_matches(matcher: str | RegexMatcher, value: str) -> bool:
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
        return value_matches(self.alertname, labels.get("alertname", "")) and all(
            value_matches(m, labels.get(name, "")) for name, m in self.labels.items())

    @property
    def specificity(self) -> tuple[int, int]:
        """(matchers, exact matchers): more matchers, then more exact ones, is more specific."""
        every = [self.alertname, *self.labels.values()]
        return len(every), sum(1 for m in every if isinstance(m, str))

    def guaranteed_labels(self) -> set[str]:
        """Labels every matching alert carries with a non-empty value."""
        return {"alertname"} | {name for name, m in self.labels.items() if not value_matches(m, "")}


# -- the runbook ------------------------------------------------------------------------------------

def _known_action(name: str) -> str:
    if get_action(name) is None:
        raise ValueError(f"unknown action {name!r}; known: {', '.join(action_names())}")
    return name


def _param_values(value: Any) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(item, str | int | bool) or isinstance(item, float):
                raise ValueError(f"parameter {key!r} must be a string, an integer or a boolean")
    return value


ActionName = Annotated[str, AfterValidator(_known_action),
                       WithJsonSchema({"type": "string", "enum": action_names()})]
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
    namespaces: list[DnsLabel] = Field(
        default_factory=list, description="namespaces the actions may touch (the configuration may add more)")
    urls: list[Annotated[str, AfterValidator(check_url)]] = Field(
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
