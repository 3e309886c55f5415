"""The runbooks the bot serves: loading them, picking one for an alert, and preparing its steps.

Runbooks are YAML files (bot.runbook_format) under bot/runbooks/ (shipped) and RUNBOOKS_PATH.
The loader runs the same checks as `lint` (bot.runbook_lint), so a runbook the linter rejects is
never served. For an alert, each step's action parameters are rendered in a sandbox over
`labels`, `annotations` and `alertname` only (bot.runbook_templates), each templated value
escaped for the language of its parameter (PromQL, silence matchers, label selectors), then
validated by the action's model; a step whose parameters fail is shown disabled with the reason.
No I/O beyond reading the runbook files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from bot.action_params import ParamContext, ParamError
from bot.action_runner import validate_params
from bot.actions import ActionSpec, Risk, get_action, risk_of
from bot.runbook_format import Runbook, Step
from bot.runbook_lint import LintProblem, RunbookSource, check_files
from bot.runbook_templates import render_params, template_targets

__all__ = [
    "PreparedStep", "RunbookError", "RunbookSet", "SHIPPED_DIR", "load_runbooks", "param_context", "paths_from_env",
    "prepare_steps",
]

SHIPPED_DIR = Path(__file__).parent / "runbooks"


class RunbookError(Exception):
    """Runbook files that failed the checks; `problems` holds each as file:line: message."""

    def __init__(self, problems: list[LintProblem]) -> None:
        super().__init__("invalid runbooks:\n" + "\n".join(map(str, problems)))
        self.problems = problems


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


def param_context(runbook: Runbook | None, allowed_namespaces: Iterable[str] = (),
                  allowed_urls: Iterable[str] = (), allowed_nodes: Iterable[str] = ()) -> ParamContext:
    """The allow-lists are the runbook's plus the configuration's; nodes come from the
    configuration only (a runbook cannot widen what cordon/uncordon may touch). No runbook (a
    command's step, bot.steps.add_command_step): the configuration's alone."""
    return ParamContext(namespaces=frozenset(runbook.namespaces if runbook else ()) | frozenset(allowed_namespaces),
                        urls=(*(runbook.urls if runbook else ()), *allowed_urls), nodes=tuple(allowed_nodes),
                        scale=(runbook.scale.min, runbook.scale.max) if runbook and runbook.scale else None)


def _without_empty_optionals(spec: ActionSpec, rendered: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter that renders empty is left out, so `{{ labels.container | default('') }}`
    means "the container if the alert names one"."""
    fields = spec.params.model_fields
    return {name: value for name, value in rendered.items()
            if not (value == "" and name in fields and not fields[name].is_required())}


def prepare_steps(runbook: Runbook, alert_labels: Mapping[str, str], alert_annotations: Mapping[str, str],
                  allowed_namespaces: Iterable[str] = (), *, allowed_urls: Iterable[str] = (),
                  allowed_nodes: Iterable[str] = (), risk_overrides: Mapping[str, str] | None = None
                  ) -> list[PreparedStep]:
    """`risk_overrides`: the installation's `remediations.risk` (bot.actions.risk_of)."""
    ctx = param_context(runbook, allowed_namespaces, allowed_urls, allowed_nodes)
    # A label with an empty value is an absent one, as Prometheus and Alertmanager have it: a step
    # templating it is disabled naming the label, instead of rendering "" and so dropping an optional
    # filter (k8s.events `name`: every pod's events) or matching alerts without the label (silences).
    alert_labels = {key: value for key, value in alert_labels.items() if value != ""}
    prepared = []
    for index, step in enumerate(runbook.steps):
        spec = get_action(step.action.type) if step.action else None
        if step.action is None or spec is None:
            prepared.append(PreparedStep(index, step, None, "info", step.risk))
            continue
        try:
            rendered = _without_empty_optionals(spec, render_params(step.action.params, alert_labels,
                                                                    alert_annotations, template_targets(spec.params)))
            params, error = validate_params(spec.name, rendered, ctx), None
        except ParamError as exc:
            params, error = None, str(exc)
        risk = risk_of(spec, params, step.risk, risk_overrides)
        prepared.append(PreparedStep(index, step, spec.name, spec.kind, risk, params, error))
    return prepared


# -- the loaded set ---------------------------------------------------------------------------------------

class RunbookSet:
    """The runbooks the bot serves. At equal priority and specificity a team's runbook beats a
    shipped one (and one with a shipped runbook's id replaces it), so teams can override."""

    def __init__(self, docs: list[RunbookSource], warnings: list[LintProblem] | None = None) -> None:
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
    shipped, problems = check_files([SHIPPED_DIR], shipped=True) if include_shipped else ([], [])
    own, own_problems = check_files(paths)
    problems = sorted(problems + own_problems)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise RunbookError(errors)
    return RunbookSet(shipped + own, [p for p in problems if p.severity == "warning"])
