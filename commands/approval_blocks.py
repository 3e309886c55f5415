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
from commands.blockkit import LIMITS, button, clip, context, escape, section, trusted_mrkdwn
from commands.ids import APPROVAL_APPROVE, APPROVAL_DENY
from commands.slack_time import slack_time

__all__ = ["ApprovalView", "approval_blocks", "approval_text", "kubectl_equivalent"]


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
    ApprovalStatus.DENIED: ":no_entry: denied by {who}",
    ApprovalStatus.EXPIRED: ":hourglass: expired unapproved",
    ApprovalStatus.EXECUTING: ":gear: approved by {who}, running…",
    ApprovalStatus.SUCCEEDED: ":white_check_mark: approved by {who}, executed: {result}",
    ApprovalStatus.FAILED: ":x: approved by {who}, failed: {result}",
}


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
                                                     result=escape(clip(r.result or "", 1000)))
        blocks.append(section(trusted_mrkdwn(outcome, LIMITS["section"])))
    return blocks
