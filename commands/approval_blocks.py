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
from commands.i18n import Catalog
from commands.ids import APPROVAL_APPROVE, APPROVAL_DENY, APPROVAL_DENY_REASON
from commands.slack_time import slack_time

__all__ = ["DENY_REASON_LIMIT", "ApprovalView", "approval_blocks", "approval_text", "approvers_text", "deny_modal",
           "deny_reason", "kubectl_equivalent", "mention", "rollout_line", "step_note"]

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
    locale: str | None = None  # the channel's language (runbooks.locale)


# Every text of an approval, in the languages the runbooks are written in; {placeholders} are
# trusted mrkdwn composed by the caller (mentions, escaped values).
_t = Catalog("approval_blocks", {
    "requested": {"en": ":lock: {requester} requested approval to run `{action}` · risk *{risk}*",
                  "ja": ":lock: {requester} が `{action}` の実行承認を依頼しました · リスク *{risk}*"},
    "parameters": {"en": "*Parameters:*", "ja": "*パラメータ:*"},
    "dry_run": {"en": "*Dry run:*", "ja": "*ドライラン:*"},
    "not_run_yet": {"en": "not run yet", "ja": "未実行"},
    "may_approve": {"en": "May approve: {who} · expires {expires}", "ja": "承認できる人: {who} · 期限 {expires}"},
    "approve": {"en": "Approve", "ja": "承認"},
    "deny": {"en": "Deny", "ja": "却下"},
    "denied": {"en": ":no_entry: denied by {who}{reason}", "ja": ":no_entry: {who} が却下{reason}"},
    "expired": {"en": ":hourglass: expired unapproved", "ja": ":hourglass: 承認されないまま期限切れ"},
    "running": {"en": ":gear: approved by {who}, running…", "ja": ":gear: {who} が承認、実行中…"},
    "executed": {"en": ":white_check_mark: approved by {who}, executed: {result}",
                 "ja": ":white_check_mark: {who} が承認、実行済み: {result}"},
    "failed": {"en": ":x: approved by {who}, failed: {result}", "ja": ":x: {who} が承認、失敗: {result}"},
    "progressing": {"en": ":hourglass_flowing_sand: Rolling out: {detail}",
                    "ja": ":hourglass_flowing_sand: ロールアウト中: {detail}"},
    "complete": {"en": ":white_check_mark: Rolled out: {detail}",
                 "ja": ":white_check_mark: ロールアウト完了: {detail}"},
    "rollout_failed": {"en": ":x: Rollout failed: {detail}", "ja": ":x: ロールアウト失敗: {detail}"},
    "timed_out": {"en": ":warning: Rollout did not finish in time: {detail}",
                  "ja": ":warning: ロールアウトが時間内に終わりませんでした: {detail}"},
    "waiting_controller": {"en": "waiting for the deployment controller", "ja": "Deployment コントローラーの応答待ち"},
    "awaiting": {"en": ":lock: awaiting approval · requested by {requester} · expires {expires}",
                 "ja": ":lock: 承認待ち · 依頼者 {requester} · 期限 {expires}"},
    "request_expired": {"en": ":hourglass: the request by {requester} expired unapproved",
                        "ja": ":hourglass: {requester} の依頼は承認されないまま期限切れ"},
    "step_failed": {"en": ":x: failed (approved by {who}): {result}", "ja": ":x: 失敗({who} が承認): {result}"},
    "done": {"en": ":white_check_mark: done: {result}", "ja": ":white_check_mark: 完了: {result}"},
    "approved_by": {"en": "approved by {who}", "ja": "承認 {who}"},
    "modal_title": {"en": "Deny remediation", "ja": "対処を却下"},
    "modal_text": {"en": "Deny `{action}` ({params}) requested by {requester}? Nothing runs. The reason is shown in "
                         "the channel and kept in the audit log.",
                   "ja": "{requester} が依頼した `{action}`({params})を却下しますか？何も実行されません。"
                         "理由はチャンネルに表示され、監査ログに残ります。"},
    "modal_reason": {"en": "Reason (optional)", "ja": "理由(任意)"},
    "cancel": {"en": "Cancel", "ja": "キャンセル"},
    "an_expert": {"en": "an expert: {experts}", "ja": "専門家: {experts}"},
    "no_expert": {"en": "nobody: high-risk remediations need an expert and `remediations.experts` is empty in "
                        "ONCALL_CONFIG",
                  "ja": "なし: 高リスクの対処には専門家が必要ですが、ONCALL_CONFIG の `remediations.experts` が空です"},
    "commander_is": {"en": "the commander ({who})", "ja": "コマンダー({who})"},
    "commander": {"en": "the commander", "ja": "コマンダー"},
    "responders": {"en": "the responders and on-call", "ja": "対応者とオンコール"},
    "members_of": {"en": "members of {channel}", "ja": "{channel} のメンバー"},
    "nobody": {"en": "nobody: `remediations.approvers` and `remediations.experts` are empty in ONCALL_CONFIG",
               "ja": "なし: ONCALL_CONFIG の `remediations.approvers` と `remediations.experts` が空です"},
    "not_requester": {"en": " (not {requester}, who asked)", "ja": "(依頼者 {requester} 以外)"},
})


_ENDED = {ApprovalStatus.DENIED: "denied", ApprovalStatus.EXPIRED: "expired", ApprovalStatus.EXECUTING: "running",
          ApprovalStatus.SUCCEEDED: "executed", ApprovalStatus.FAILED: "failed"}
_ROLLOUT = {"progressing": "progressing", "complete": "complete", "failed": "rollout_failed",
            "timed_out": "timed_out"}


def rollout_line(request: ApprovalRequest, locale: str | None = None) -> str | None:
    """Where the rollout the remediation started stands (trusted mrkdwn), or None."""
    if request.rollout not in _ROLLOUT:
        return None
    detail = escape(clip(request.rollout_detail or _t("waiting_controller", locale), 500))
    return _t(_ROLLOUT[request.rollout or ""], locale, detail=detail)


def step_note(request: ApprovalRequest, now: datetime, locale: str | None = None) -> str:
    """The runbook step's status line for its latest request (trusted mrkdwn), true at `now`."""
    status, who, requester = ApprovalStatus(request.status), f"<@{request.decided_by}>", f"<@{request.requested_by}>"
    if status == ApprovalStatus.PENDING:
        if request.expires_at <= now:
            return _t("request_expired", locale, requester=requester)
        return _t("awaiting", locale, requester=requester, expires=slack_time(request.expires_at, now))
    if status in (ApprovalStatus.EXECUTING, ApprovalStatus.APPROVED):
        return _t("running", locale, who=who)
    if status == ApprovalStatus.DENIED:
        return _t("denied", locale, who=who, reason=f": {escape(clip(request.reason, 300))}" if request.reason else "")
    if status == ApprovalStatus.EXPIRED:
        return _t("request_expired", locale, requester=requester)
    result = escape(clip(request.result or "", 300))
    if status == ApprovalStatus.FAILED:
        return _t("step_failed", locale, who=who, result=result)
    done = rollout_line(request, locale) or _t("done", locale, result=result)
    return f"{done} · {_t('approved_by', locale, who=who)}"


def approval_text(request: ApprovalRequest) -> str:
    return clip(f"<@{request.requested_by}> requested approval to run {request.action} "
                f"({escape(_params(request.params))})", LIMITS["text"])


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())[:500]


def mention(who: str) -> str:
    """A Slack user (U…/W…) or user group (S…) as a mention."""
    return f"<!subteam^{who}>" if who.startswith("S") else f"<@{who}>"


def approvers_text(request: ApprovalRequest, approvers: list[str], experts: list[str], *, commander: str | None,
                   channel: str | None, self_approve_low: bool, locale: str | None = None) -> str:
    """Who may approve `request` in the policy's words (trusted mrkdwn); people are resolved at the click."""
    expert_list = ", ".join(mention(who) for who in experts)
    if request.risk not in ("low", "medium"):
        return _t("an_expert", locale, experts=expert_list) if expert_list else _t("no_expert", locale)
    who = []
    for kind in approvers:
        if kind == "commander":
            who.append(_t("commander_is", locale, who=f"<@{commander}>") if commander else _t("commander", locale))
        elif kind == "responders":
            who.append(_t("responders", locale))
        elif kind == "channel":
            who.append(_t("members_of", locale, channel=f"<#{channel}>") if channel else _t("responders", locale))
        else:
            who.append(mention(kind))
    if expert_list:
        who.append(expert_list)
    if not who:
        return _t("nobody", locale)
    self_ok = request.risk == "low" and self_approve_low
    return ", ".join(who) + ("" if self_ok else _t("not_requester", locale, requester=f"<@{request.requested_by}>"))


def approval_blocks(view: ApprovalView) -> list[dict[str, Any]]:
    r, locale = view.request, view.locale
    head = _t("requested", locale, requester=f"<@{r.requested_by}>", action=escape(r.action), risk=escape(r.risk))
    lines = [f"{_t('parameters', locale)} `{escape(_params(r.params)) or '(none)'}`"]
    kubectl = kubectl_equivalent(r.action, r.params)
    if kubectl:
        lines.append(f"*kubectl:* `{escape(kubectl)}`")
    lines.append(f"{_t('dry_run', locale)} {escape(clip(r.dry_run_outcome or _t('not_run_yet', locale), 1500))}")
    blocks: list[dict[str, Any]] = [section(trusted_mrkdwn(head, LIMITS["section"])),
                                    section(trusted_mrkdwn("\n".join(lines), LIMITS["section"]))]
    status = ApprovalStatus(r.status)
    if status == ApprovalStatus.PENDING:
        blocks.append(context(trusted_mrkdwn(clip(_t("may_approve", locale, who=view.approvers,
                                                     expires=slack_time(r.expires_at, view.now)), 2000))))
        blocks.append({"type": "actions", "block_id": "approval_actions", "elements": [
            button(_t("approve", locale), APPROVAL_APPROVE, r.token, style="primary"),
            button(_t("deny", locale), APPROVAL_DENY, r.token, style="danger")]})
    else:
        outcome = _t(_ENDED.get(status, "expired"), locale, who=f"<@{r.decided_by}>" if r.decided_by else "nobody",
                     result=escape(clip(r.result or "", 1000)),
                     reason=f": {escape(r.reason)}" if r.reason else "")
        blocks.append(section(trusted_mrkdwn(outcome, LIMITS["section"])))
        rollout = rollout_line(r, locale)
        if rollout:
            blocks.append(context(trusted_mrkdwn(rollout, 2000)))
    return blocks


def deny_modal(request: ApprovalRequest, user: str, locale: str | None = None) -> dict[str, Any]:
    """Why deny? (optional): the modal a Deny click opens. `private_metadata` names the request
    by its token and the person it was opened for."""
    text = _t("modal_text", locale, action=escape(request.action), params=escape(_params(request.params)),
              requester=f"<@{request.requested_by}>")
    return {"type": "modal", "callback_id": APPROVAL_DENY_REASON, "private_metadata": f"{request.token}:{user}",
            "title": plain(_t("modal_title", locale), 24), "submit": plain(_t("deny", locale), 24),
            "close": plain(_t("cancel", locale), 24),
            "blocks": [section(trusted_mrkdwn(clip(text, LIMITS["section"]))),
                       {"type": "input", "block_id": "reason", "optional": True,
                        "label": plain(_t("modal_reason", locale), 2000),
                        "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True,
                                    "max_length": DENY_REASON_LIMIT}}]}


def deny_reason(view: dict[str, Any]) -> tuple[str, str, str | None]:
    """(token, user it was opened for, reason or None) from a submitted deny modal."""
    token, _, user = str(view.get("private_metadata", "")).partition(":")
    value = (((view.get("state") or {}).get("values") or {}).get("reason") or {}).get("reason") or {}
    reason = str(value.get("value") or "").strip()[:DENY_REASON_LIMIT]
    return token, user, reason or None
