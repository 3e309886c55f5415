"""Validating and running runbook actions, whichever they are: parameters in, `ActionOutput` or
a readable error out.

`validate_params` turns rendered parameters into the action's model or a `ParamError` (the reason
on a disabled button); `check_param` is lint's look at one literal parameter; `run_action` runs
only a model that `validate_params` made, and turns every failure of an integration into an
`ActionError` the user can read.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from bot import metrics
from bot.action_params import ParamContext, ParamError
from bot.actions import ActionContext, ActionError, ActionOutput, get_action
from integrations.errors import IntegrationError  # no dependencies: the clients stay lazily imported

__all__ = ["check_param", "run_action", "validate_params"]


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


@cache
def _field_adapter(name: str, param: str) -> TypeAdapter[Any]:
    spec = get_action(name)
    if spec is None:
        raise KeyError(name)
    info = spec.params.model_fields[param]
    annotation = info.annotation
    assert annotation is not None  # every field of a parameter model is annotated
    if not info.metadata:
        return TypeAdapter(annotation)
    return TypeAdapter(Annotated[(annotation, *info.metadata)])  # type: ignore[arg-type]


def check_param(name: str, param: str, value: Any, ctx: ParamContext) -> str | None:
    """Lint one literal parameter on its own; the reason it is invalid, or None."""
    try:
        _field_adapter(name, param).validate_python(value, context={"oncall": ctx})
    except ValidationError as exc:
        return _error_text(exc)
    return None


async def run_action(name: str, params: BaseModel, ctx: ActionContext) -> ActionOutput:
    """Run a validated action; every failure leaves as ActionError with a readable message."""
    spec = get_action(name)
    if spec is None or not isinstance(params, spec.params):
        raise ActionError(f"unknown action {name!r} or parameters of the wrong kind")
    outcome = "error"  # whatever leaves, even a bug's exception, is one failed execution
    try:
        output = await spec.run(ctx, params)
        outcome = "ok"
        return output
    except ActionError:
        raise
    except IntegrationError as exc:
        raise ActionError(f"{spec.label['en']} failed: {exc}") from exc
    finally:
        if not ctx.dry_run:  # a remediation's dry run, before its approval, changed nothing
            metrics.EXECUTIONS.labels(action=name, outcome=outcome).inc()
