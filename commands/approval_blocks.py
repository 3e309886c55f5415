"""The approval message of a remediation request: pure Block Kit builders.

What a responder approves is shown exactly: the action, its parameters, the kubectl command it
amounts to, and the server-side dry run's outcome (or its error).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.models import ApprovalRequest, ApprovalStatus
from commands.blockkit import LIMITS, button, clip, context, escape, plain, section, trusted_mrkdwn
from commands.ids import APPROVAL_APPROVE, APPROVAL_DENY, APPROVAL_DENY_REASON
from commands.slack_time import slack_time

__all__ = ["DENY_REASON_LIMIT", "ApprovalView", "approval_blocks", "approval_text", "deny_modal", "deny_reason",
           "kubectl_equivalent", "rollout_line", "step_note"]

DENY_REASON_LIMIT = 500


def kubectl_equivalent(action: str, params: dict[str, Any]) -> str | None:
    """The kubectl command a Kubernetes remediation amounts to (None: not a kubectl action)."""
    q = shlex.quote
    ns = f"kubectl -n {q(str(params.get('namespace', '')))}"
    if action == "k8s.rollout_restart":
        return f"{ns} rollout restart deployment/{q(str(params['deployment']))}"
    if action == "k8s.rollout_undo":
        revision = int(params.get("to_revision") or 0)
        return f"{ns} rollout undo deployment/{q(str(params['deployment']))}" + (
            f" --to-revision={revision}" if revision else "")
    if action == "k8s.scale":
        return f"{ns} scale deployment/{q(str(params['deployment']))} --replicas={int(params['replicas'])}"
    if action == "k8s.delete_pod":
        return f"{ns} delete pod {q(str(params['pod']))} --grace-period={int(params.get('grace_period_seconds', 30))}"
    if action in ("k8s.cordon", "k8s.uncordon"):
        return f"kubectl {action.removeprefix('k8s.')} {q(str(params['node']))}"
    return None


@dataclass(frozen=True)
class ApprovalView:
    request: ApprovalRequest
    approvers: str      # trusted mrkdwn: who may approve, or why nobody can
    now: datetime


_ENDED = {
    ApprovalStatus.DENIED: ":no_entry: denied by {who}{reason}",
    ApprovalStatus.EXPIRED: ":hourglass: expired unapproved",
    ApprovalStatus.EXECUTING: ":gear: approved by {who}, running…",
    ApprovalStatus.SUCCEEDED: ":white_check_mark: approved by {who}, executed: {result}",
    ApprovalStatus.FAILED: ":x: approved by {who}, failed: {result}",
}


_ROLLOUT = {
    "progressing": ":hourglass_flowing_sand: Rolling out: {detail}",
    "complete": ":white_check_mark: Rolled out: {detail}",
    "failed": ":x: Rollout failed: {detail}",
    "timed_out": ":warning: Rollout did not finish in time: {detail}",
}


def rollout_line(request: ApprovalRequest) -> str | None:
    """Where the rollout the remediation started stands (trusted mrkdwn), or None."""
    if request.rollout not in _ROLLOUT:
        return None
    detail = escape(clip(request.rollout_detail or "waiting for the deployment controller", 500))
    return _ROLLOUT[request.rollout or ""].format(detail=detail)


def step_note(request: ApprovalRequest, now: datetime) -> str:
    """The runbook step's status line for its latest request (trusted mrkdwn), true at `now`."""
    status, who = ApprovalStatus(request.status), f"<@{request.decided_by}>"
    if status == ApprovalStatus.PENDING:
        if request.expires_at <= now:
            return f":hourglass: the request by <@{request.requested_by}> expired unapproved"
        return (f":lock: awaiting approval · requested by <@{request.requested_by}> · expires "
                f"{slack_time(request.expires_at, now)}")
    if status in (ApprovalStatus.EXECUTING, ApprovalStatus.APPROVED):
        return f":gear: approved by {who}, running…"
    if status == ApprovalStatus.DENIED:
        reason = f": {escape(clip(request.reason, 300))}" if request.reason else ""
        return f":no_entry: denied by {who}{reason}"
    if status == ApprovalStatus.EXPIRED:
        return f":hourglass: the request by <@{request.requested_by}> expired unapproved"
    result = escape(clip(request.result or "", 300))
    if status == ApprovalStatus.FAILED:
        return f":x: failed (approved by {who}): {result}"
    return f"{rollout_line(request) or f':white_check_mark: done: {result}'} · approved by {who}"


def approval_text(request: ApprovalRequest) -> str:
    return clip(f"<@{request.requested_by}> requested approval to run {request.action} "
                f"({escape(_params(request.params))})", LIMITS["text"])


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())[:500]


def approval_blocks(view: ApprovalView) -> list[dict[str, Any]]:
    r = view.request
    head = (f":lock: <@{r.requested_by}> requested approval to run `{escape(r.action)}` · risk *{escape(r.risk)}*")
    lines = [f"*Parameters:* `{escape(_params(r.params)) or '(none)'}`"]
    kubectl = kubectl_equivalent(r.action, r.params)
    if kubectl:
        lines.append(f"*kubectl:* `{escape(kubectl)}`")
    lines.append(f"*Dry run:* {escape(clip(r.dry_run_outcome or 'not run yet', 1500))}")
    blocks: list[dict[str, Any]] = [section(trusted_mrkdwn(head, LIMITS["section"])),
                                    section(trusted_mrkdwn("\n".join(lines), LIMITS["section"]))]
    status = ApprovalStatus(r.status)
    if status == ApprovalStatus.PENDING:
        blocks.append(context(trusted_mrkdwn(clip(f"May approve: {view.approvers} · expires "
                                                  f"{slack_time(r.expires_at, view.now)}", 2000))))
        blocks.append({"type": "actions", "block_id": "approval_actions", "elements": [
            button("Approve", APPROVAL_APPROVE, r.token, style="primary"),
            button("Deny", APPROVAL_DENY, r.token, style="danger")]})
    else:
        outcome = _ENDED.get(status, "{who}").format(who=f"<@{r.decided_by}>" if r.decided_by else "nobody",
                                                     result=escape(clip(r.result or "", 1000)),
                                                     reason=f": {escape(r.reason)}" if r.reason else "")
        blocks.append(section(trusted_mrkdwn(outcome, LIMITS["section"])))
        rollout = rollout_line(r)
        if rollout:
            blocks.append(context(trusted_mrkdwn(rollout, 2000)))
    return blocks


def deny_modal(request: ApprovalRequest, user: str) -> dict[str, Any]:
    """Why deny? (optional): the modal a Deny click opens. `private_metadata` names the request
    by its token and the person it was opened for."""
    text = (f"Deny `{escape(request.action)}` ({escape(_params(request.params))}) requested by "
            f"<@{request.requested_by}>? Nothing runs. The reason is shown in the channel and kept in the audit log.")
    return {"type": "modal", "callback_id": APPROVAL_DENY_REASON, "private_metadata": f"{request.token}:{user}",
            "title": plain("Deny remediation", 24), "submit": plain("Deny", 24), "close": plain("Cancel", 24),
            "blocks": [section(trusted_mrkdwn(clip(text, LIMITS["section"]))),
                       {"type": "input", "block_id": "reason", "optional": True,
                        "label": plain("Reason (optional)", 2000),
                        "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True,
                                    "max_length": DENY_REASON_LIMIT}}]}


def deny_reason(view: dict[str, Any]) -> tuple[str, str, str | None]:
    """(token, user it was opened for, reason or None) from a submitted deny modal."""
    token, _, user = str(view.get("private_metadata", "")).partition(":")
    value = (((view.get("state") or {}).get("values") or {}).get("reason") or {}).get("reason") or {}
    reason = str(value.get("value") or "").strip()[:DENY_REASON_LIMIT]
    return token, user, reason or None
