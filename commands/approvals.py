"""Remediations behind a second person's approval, in the step's thread.

* A remediation click (commands.runbook_flow) calls `Approvals.request`: the parameters are
  validated again and the request stored (bot.approvals), or refused with a reason.
* `approval.post` (outbox, the incident's Slack lane): a server-side dry run, then the approval
  message: action, exact parameters, the kubectl equivalent, the dry run's outcome, who may
  approve and until when, Approve and Deny buttons carrying only the request's token.
* Approve / Deny (Bolt): the request is loaded by its token; the policy (bot.policy.may_approve)
  is asked first, then one compare-and-set decides; whoever did not win is told privately why.
* `approval.execute` (outbox, no lane): re-checks the incident is open, records the started
  mark with the cluster's facts (bot.reconcile), runs the action for real once, records the
  result, answers in the thread and redraws the approval message. Run again with the mark set
  (a crash, or a call whose answer was lost), it reads the cluster and reports what is true:
  it never runs the action twice.
* `approval.expire` (outbox, no lane, due at the expiry): expires a request still pending and
  redraws its message; a request already decided is left alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from slack_bolt.response import BoltResponse
from sqlmodel import Session

from bot import approvals, reconcile, steps
from bot.action_params import ParamError
from bot.action_runner import run_action, validate_params
from bot.actions import ActionContext, ActionError, get_action, risk_of
from bot.config import APPROVER_KINDS, OncallConfig, RemediationPolicy
from bot.db import Database
from bot.jobs import (
    JOB_APPROVAL_EXECUTE,
    JOB_APPROVAL_EXPIRE,
    JOB_APPROVAL_FOLLOW,
    JOB_APPROVAL_POST,
    JOB_APPROVAL_REDRAW,
)
from bot.models import ApprovalRequest, ApprovalStatus, Incident, Job, RunbookStep
from bot.outbox import PermanentError, RetryLater
from bot.policy import Decision, may_approve
from bot.runbooks import RunbookSet, param_context
from commands.approval_blocks import (
    ApprovalView,
    approval_blocks,
    approval_text,
    approvers_text,
    deny_modal,
    deny_reason,
    mention,
    rollout_line,
)
from commands.blockkit import LIMITS, clip, escape, section, trusted_mrkdwn
from commands.feature import Action, Feature, Middleware
from commands.i18n import Catalog
from commands.ids import APPROVAL_APPROVE, APPROVAL_DENY, APPROVAL_DENY_REASON
from commands.middleware import tell, who_asks
from commands.silences import comment_reference, reconcile_silence, record_created
from commands.slack_sync import message_tag, post_once, step_thread, waiting_for_setup
from commands.slack_time import slack_time
from commands.slash import asker_language
from integrations.errors import IntegrationError
from integrations.slack import SlackClient, SlackError

__all__ = ["Approvals", "Refusal", "tell_refusal"]

log = logging.getLogger(__name__)

FOLLOW_POLL_SECONDS = 2.0     # how often a rollout is looked at (kubectl watches; one GET per look here)
FOLLOW_CAP = 6               # a rollout is followed for at most this many progressDeadlineSeconds

Loaded = tuple[ApprovalRequest, RunbookStep, Incident]

# What a clicker is told (in their Slack locale), and the lines in the step's thread (in the
# channel's, `runbooks.locale`). {placeholders} are trusted mrkdwn: mentions, escaped values.
_t = Catalog("approvals", {
    # refusals of a request (the clicker of a remediation step); bot.approvals' reasons by code
    "not_loaded": {"en": "The runbook {runbook} or its action is no longer loaded; nothing was requested.",
                   "ja": "ランブック {runbook} またはそのアクションはもう読み込まれていません。"
                         "何も依頼しませんでした。"},
    "invalid_params": {"en": "This step's parameters are no longer valid: {error}",
                       "ja": "この手順のパラメータはもう有効ではありません: {error}"},
    "request_switched_off": {"en": "Remediations are switched off (`remediations.enabled: false` in ONCALL_CONFIG); "
                                   "nothing was requested.",
                             "ja": "対処は無効になっています(ONCALL_CONFIG の `remediations.enabled: false`)。"
                                   "何も依頼しませんでした。"},
    "request_resolved": {"en": "This incident is resolved; its remediations can no longer be requested.",
                         "ja": "このインシデントは解決済みのため、対処はもう依頼できません。"},
    "pending": {"en": "{who} already requested this step; approve or deny that request in the step's thread.",
                "ja": "{who} がこの手順をすでに依頼しています。手順のスレッドでその依頼を承認または却下してください。"},
    "incident_budget": {"en": "This incident has used its budget of {limit} remediations "
                              "(`remediations.budget_per_incident`); nothing was requested.",
                        "ja": "このインシデントは対処の上限 {limit} 件に達しています"
                              "(`remediations.budget_per_incident`)。何も依頼しませんでした。"},
    "daily_budget": {"en": "The budget of {limit} remediations in 24 hours is used (`remediations.budget_per_day`); "
                           "nothing was requested.",
                     "ja": "24 時間の対処の上限 {limit} 件に達しています(`remediations.budget_per_day`)。"
                           "何も依頼しませんでした。"},
    # refusals of Approve / Deny
    "switched_off": {"en": "Remediations are switched off (`remediations.enabled: false` in ONCALL_CONFIG); "
                           "nothing runs.",
                     "ja": "対処は無効になっています(ONCALL_CONFIG の `remediations.enabled: false`)。"
                           "何も実行されません。"},
    "resolved": {"en": "This incident is resolved; its remediations no longer run.",
                 "ja": "このインシデントは解決済みのため、対処はもう実行されません。"},
    "cannot_approve": {"en": "This request can no longer be approved.", "ja": "この依頼はもう承認できません。"},
    "cannot_deny": {"en": "This request can no longer be denied.", "ja": "この依頼はもう却下できません。"},
    "deny_not_allowed": {"en": "Only the requester and those who may approve it may deny it.",
                         "ja": "却下できるのは、依頼者と承認できる人だけです。"},
    "denied_without_dialog": {"en": "Denied (the dialog for a reason could not open).",
                              "ja": "却下しました(理由を入力するダイアログを開けませんでした)。"},
    "gone": {"en": "This approval request is no longer available.", "ja": "この承認依頼はもう利用できません。"},
    "not_your_dialog": {"en": "This dialog was opened by someone else.",
                        "ja": "このダイアログは別の人が開いたものです。"},
    "has_expired": {"en": "This request has expired.", "ja": "この依頼は期限切れです。"},
    "expired_at": {"en": "This request expired at {when}; request it again from the runbook if it is still needed.",
                   "ja": "この依頼は {when} に期限切れになりました。"
                         "まだ必要なら、ランブックからもう一度依頼してください。"},
    "was_denied": {"en": "This request was denied by {who}.", "ja": "この依頼は {who} が却下しました。"},
    "was_expired": {"en": "This request expired; request it again from the runbook if it is still needed.",
                    "ja": "この依頼は期限切れです。まだ必要なら、ランブックからもう一度依頼してください。"},
    "was_approved": {"en": "This request was already approved by {who} ({status}).",
                     "ja": "この依頼は {who} がすでに承認しています({status})。"},
    "approved": {"en": "approved", "ja": "承認済み"},
    "executing": {"en": "executing", "ja": "実行中"},
    "succeeded": {"en": "succeeded", "ja": "成功"},
    "failed": {"en": "failed", "ja": "失敗"},
    # the policy's reasons (bot.policy.may_approve)
    "own_request": {"en": "You requested this; a second person must approve it.",
                    "ja": "自分の依頼は承認できません。別の人の承認が必要です。"},
    "own_request_low": {"en": "You requested this; a second person must approve it (`remediations.self_approve_low` "
                              "lets requesters approve low-risk ones).",
                        "ja": "自分の依頼は承認できません。別の人の承認が必要です(`remediations.self_approve_low` "
                              "を有効にすると、低リスクの依頼は依頼者自身が承認できます)。"},
    "no_experts": {"en": "This is a high-risk remediation and no experts are configured (`remediations.experts` in "
                         "ONCALL_CONFIG), so nobody can approve it.",
                   "ja": "高リスクの対処ですが、専門家が設定されていない(ONCALL_CONFIG の `remediations.experts`)"
                         "ため、誰も承認できません。"},
    "not_an_expert": {"en": "This is a high-risk remediation: only the configured experts may approve it.",
                      "ja": "高リスクの対処です。承認できるのは設定された専門家だけです。"},
    "membership_unknown": {"en": "Could not check that you are in {channel}; try again.",
                           "ja": "{channel} のメンバーか確認できませんでした。もう一度お試しください。"},
    "only_approvers": {"en": "Only {who} may approve this remediation (`remediations.approvers` in ONCALL_CONFIG).",
                       "ja": "この対処を承認できるのは {who} だけです(ONCALL_CONFIG の `remediations.approvers`)。"},
    "the_commander": {"en": "the commander", "ja": "コマンダー"},
    "the_responders": {"en": "the responders and on-call", "ja": "対応者とオンコール"},
    "the_channel": {"en": "the channel's members", "ja": "チャンネルのメンバー"},
    "no_one_configured": {"en": "the experts (none configured)", "ja": "専門家(設定なし)"},
    # the lines in the step's thread
    "expired_line": {"en": ":hourglass: The request by {requester} to run `{action}` expired unapproved; request it "
                           "again from the runbook if it is still needed.",
                     "ja": ":hourglass: {requester} による `{action}` の実行依頼は、承認されないまま期限切れに"
                           "なりました。まだ必要なら、ランブックからもう一度依頼してください。"},
    "expired_text": {"en": "{action}: the request expired unapproved",
                     "ja": "{action}: 依頼は承認されないまま期限切れになりました"},
    "result_line": {"en": "{icon} `{action}` approved by {who} (requested by {requester}): {result}",
                    "ja": "{icon} `{action}` を {who} が承認({requester} が依頼): {result}"},
    "rollout_line": {"en": "{line} (`{action}` approved by {who})", "ja": "{line}(`{action}` を {who} が承認)"},
    "rollout_text": {"en": "{action}: rollout {state}", "ja": "{action}: ロールアウト {state}"},
    # a reason of bot.approvals this module has no words for yet: its own (English) message
    "as_said": {"en": "{message}", "ja": "{message}"},
})

# bot.approvals.ApprovalRefused's reasons → the words for them here
_REQUEST_REFUSALS = {"switched_off": "request_switched_off", "resolved": "request_resolved", "pending": "pending",
                     "incident_budget": "incident_budget", "daily_budget": "daily_budget"}


@dataclass(frozen=True)
class Refusal:
    """Why a click did nothing, worded only when told: in the clicker's language, which costs a
    users.info call that a click that succeeds does not make. A value is trusted mrkdwn, or a
    function of the language that gives it (words within the words)."""

    key: str
    values: Mapping[str, Any] = field(default_factory=dict)
    catalog: Catalog = _t

    def words(self, language: str | None) -> str:
        values = {name: value(language) if callable(value) else value for name, value in self.values.items()}
        return self.catalog(self.key, language, **values)


async def tell_refusal(slack: SlackClient, respond: Any, user: str, refusal: Refusal, fallback: str) -> None:
    """The refusal, privately, in the clicker's Slack locale (`fallback`: the configured one)."""
    await tell(respond, user, refusal.words(await asker_language(slack, user, fallback)))


class Approvals:
    def __init__(self, db: Database, slack: SlackClient, config: OncallConfig, runbooks: RunbookSet,
                 actions: ActionContext, *, clock: Callable[[], datetime], on_commit: Callable[[], None]) -> None:
        self.db, self.slack, self.clock, self.kick = db, slack, clock, on_commit
        self.policy: RemediationPolicy = config.remediations
        self.runbook_policy = config.runbooks
        self.locale = config.runbooks.locale  # the channel's language, as the runbook's
        self.announce = config.channels.announce
        self.runbooks, self.actions = runbooks, actions

    def feature(self) -> Feature:
        handlers = waiting_for_setup({JOB_APPROVAL_POST: self.post, JOB_APPROVAL_EXECUTE: self.execute,
                                      JOB_APPROVAL_EXPIRE: self.expire, JOB_APPROVAL_FOLLOW: self.follow,
                                      JOB_APPROVAL_REDRAW: self.redraw},
                                     self.announce)
        load = (approval_of_button(self.db, self.slack, self.locale),)
        return Feature(handlers=handlers, actions=[Action(APPROVAL_APPROVE, self.on_approve, load),
                                                   Action(APPROVAL_DENY, self.on_deny, load)],
                       views={APPROVAL_DENY_REASON: self.on_deny_reason})

    # -- the request (in the clicking transaction) ---------------------------------------------

    def request(self, session: Session, step: RunbookStep, incident: Incident, user: str,
                now: datetime) -> Refusal | None:
        """Store the request to run `step`; the refusal to tell the clicker, or None."""
        runbook = self.runbooks.get(step.runbook_id)
        spec = get_action(step.action or "")
        if runbook is None or spec is None or step.step_index >= len(runbook.steps):
            return Refusal("not_loaded", {"runbook": escape(step.runbook_id)})
        context = param_context(runbook, self.runbook_policy.namespaces, self.runbook_policy.urls,
                                self.runbook_policy.nodes)
        try:
            validated = validate_params(spec.name, step.params, context)
        except ParamError as exc:
            return Refusal("invalid_params", {"error": escape(str(exc))})
        params = validated.model_dump(mode="json")
        # the same function as the step's shown risk (bot.runbooks.prepare_steps), so they agree
        risk = risk_of(spec, validated, runbook.steps[step.step_index].risk, self.policy.risk)
        try:
            approvals.request(session, step, incident, user, now, self.policy, risk=risk, params=params)
        except approvals.ApprovalRefused as exc:
            if exc.reason not in _REQUEST_REFUSALS:
                return Refusal("as_said", {"message": str(exc)})
            return Refusal(_REQUEST_REFUSALS[exc.reason], {"who": f"<@{exc.who}>", "limit": exc.limit})
        return None

    # -- the approval message -----------------------------------------------------------------

    async def post(self, job: Job) -> None:
        row, step, incident = await asyncio.to_thread(self._load, job.payload.get("approval"))
        if row.message_ts:
            return  # posted by an earlier attempt
        started = self.clock()
        if row.dry_run_outcome is None:
            ok, outcome = await self._run(row, step, row.requested_by, dry_run=True)
            row.dry_run_outcome = f"{'ok' if ok else 'failed'}: {outcome}"
            await asyncio.to_thread(self._save, row.id, dry_run_outcome=row.dry_run_outcome)
        channel, thread = step_thread(step, incident)
        blocks = approval_blocks(ApprovalView(row, self._approvers(row, incident), self.clock(), self.locale))
        ts = await post_once(self.slack, channel, approval_text(row), blocks=blocks, thread_ts=thread,
                             retry=job.attempts > 1, tag=message_tag(incident, "approval", approval=row.id))
        await asyncio.to_thread(self._save, row.id, message_channel=channel, message_ts=ts)
        log.info("approval requested", extra={"incident": incident.id, "approval": row.id, "action": row.action,
                                              "risk": row.risk, "elapsed_ms": _ms(started, self.clock()),
                                              "since_click_ms": _ms(row.requested_at, self.clock())})

    def _approvers(self, row: ApprovalRequest, incident: Incident) -> str:
        return approvers_text(row, self.policy.approvers, self.policy.experts, commander=incident.commander,
                              channel=incident.channel_id, self_approve_low=self.policy.self_approve_low,
                              locale=self.locale)

    # -- the buttons --------------------------------------------------------------------------

    async def on_approve(self, ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
        await ack()
        user, row, incident = body["user"]["id"], context["approval"], context["incident"]
        now = self.clock()
        refused = _decided(row) or await self._expired(row, now)
        if refused is None and not self.policy.enabled:
            refused = Refusal("switched_off")
        if refused is None and not approvals.is_open(incident):
            refused = Refusal("resolved")
        if refused is None:
            decision = await self._may_approve(row, user, incident)
            refused = None if decision.allowed else self._why(decision, row, incident)
        if refused is None:
            # The clock read now: the policy's Slack lookups above take time, and expiry is exact.
            claim = await asyncio.to_thread(self._decide, approvals.claim, row.id, user, self.clock())
            if claim.won:
                log.info("approval approved", extra={"incident": incident.id, "approval": row.id, "user": user})
                self.kick()
                return
            refused = (_decided(claim.current) if claim.current else None) or await self._expired(row, self.clock())
            refused = refused or Refusal("cannot_approve")
        await tell_refusal(self.slack, respond, user, refused, self.locale)

    async def on_deny(self, ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
        """Deny asks why in a modal (optional); if the modal cannot open, the click still denies."""
        await ack()
        user, row, incident = body["user"]["id"], context["approval"], context["incident"]
        now = self.clock()
        refused = _decided(row) or await self._expired(row, now)
        if refused is None and user != row.requested_by and not (await self._may_approve(row, user, incident)).allowed:
            refused = Refusal("deny_not_allowed")
        if refused is None:
            try:
                await self.slack.open_view(str(body.get("trigger_id", "")), deny_modal(row, user, self.locale))
                return
            except SlackError as exc:  # e.g. the 3 s of the trigger passed: deny without a reason
                log.warning("could not open the deny dialog: %s", exc, extra={"approval": row.id})
            refused = await self._deny(user, row, incident, None)
            if refused is None:
                refused = Refusal("denied_without_dialog")
        await tell_refusal(self.slack, respond, user, refused, self.locale)

    async def on_deny_reason(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        """The deny modal submitted: checked again (decided or expired meanwhile: said in the
        modal), then denied with the reason."""
        token, opened_for, reason = deny_reason(view)
        user = body.get("user", {}).get("id", "")
        found = await asyncio.to_thread(_request_and_incident, self.db, token)
        refused = Refusal("gone") if found is None else Refusal("not_your_dialog") if user != opened_for else \
            _decided(found[0]) or (Refusal("has_expired") if found[0].expires_at <= self.clock() else None)
        if refused is not None or found is None:
            # within the 3 s Slack waits for a view_submission's answer: users.info takes at most 1 s
            language = await asker_language(self.slack, user, self.locale)
            await ack(response_action="errors", errors={"reason": refused.words(language) if refused else ""})
            return
        await ack()
        row, incident = found
        refused = await self._deny(user, row, incident, reason)
        if refused and row.message_channel:
            try:
                language = await asker_language(self.slack, user, self.locale)
                await self.slack.post_ephemeral(row.message_channel, user, refused.words(language))
            except SlackError as exc:
                log.warning("could not tell %s why the deny failed: %s", user, exc, extra={"approval": row.id})

    async def _deny(self, user: str, row: ApprovalRequest, incident: Incident,
                    reason: str | None) -> Refusal | None:
        """Deny once (compare-and-set) and redraw; the refusal when someone decided first."""
        claim = await asyncio.to_thread(self._decide, approvals.deny, row.id, user, self.clock(), reason)
        if claim.won and claim.current is not None:
            log.info("approval denied", extra={"incident": incident.id, "approval": row.id, "user": user})
            self.kick()  # its message is redrawn by the approval.redraw job the decision queued
            return None
        return (_decided(claim.current) if claim.current else None) or Refusal("cannot_deny")

    async def _expired(self, row: ApprovalRequest, now: datetime) -> Refusal | None:
        """The refusal for a request past its time, marking it expired (and its message) first."""
        if row.status != ApprovalStatus.PENDING or row.expires_at > now:
            return None
        await asyncio.to_thread(self._decide, approvals.expire, row.id, now)
        self.kick()  # the expiry queued its message's redraw
        return Refusal("expired_at", {"when": slack_time(row.expires_at, now)})

    async def expire(self, job: Job) -> None:
        """At the request's expiry: pending → expired, the message redrawn, a line in the thread."""
        row, step, incident = await asyncio.to_thread(self._load, job.payload.get("approval"))
        if row.status == ApprovalStatus.PENDING:
            claim = await asyncio.to_thread(self._decide, approvals.expire, row.id, self.clock())
            if not claim.won or claim.current is None:
                return  # decided meanwhile (or not due yet: its click-time check covers it)
            row = claim.current
        elif row.status != ApprovalStatus.EXPIRED or job.attempts == 1:
            return  # decided before its time, or expired by a click that redrew it
        # ours (this attempt or an earlier one that failed before finishing); the expiry queued the redraw
        channel, thread = step_thread(step, incident)
        text = _t("expired_line", self.locale, requester=f"<@{row.requested_by}>", action=escape(row.action))
        await post_once(self.slack, channel, clip(_t("expired_text", self.locale, action=row.action), LIMITS["text"]),
                        blocks=[section(trusted_mrkdwn(text, LIMITS["section"]))], thread_ts=thread,
                        retry=job.attempts > 1, tag=message_tag(incident, "approval_expired", approval=row.id))

    def _why(self, decision: Decision, row: ApprovalRequest, incident: Incident) -> Refusal:
        if decision.reason == "own_request":
            return Refusal("own_request_low" if row.risk == "low" else "own_request")
        if decision.reason in ("no_experts", "not_an_expert"):
            return Refusal(decision.reason)
        if decision.reason == "membership_unknown":
            return Refusal("membership_unknown", {"channel": f"<#{incident.channel_id}>"})
        return Refusal("only_approvers", {"who": self._approvers_words})

    def _approvers_words(self, language: str) -> str:
        words = {"commander": _t("the_commander", language), "responders": _t("the_responders", language),
                 "channel": _t("the_channel", language)}
        who = [words.get(kind, mention(kind)) for kind in self.policy.approvers]
        who += [mention(expert) for expert in self.policy.experts]
        return ", ".join(who) or _t("no_one_configured", language)

    async def may_approve(self, row: ApprovalRequest, user: str, incident: Incident) -> Decision:
        """Whether `user` may approve `row` by the policy: asked at a click, and by a command
        before it makes a request (commands.silence_command: may its requester approve it?)."""
        return await self._may_approve(row, user, incident)

    async def _may_approve(self, row: ApprovalRequest, user: str, incident: Incident) -> Decision:
        kinds = self.policy.approvers
        approvers = await self._people([who for who in kinds if who not in APPROVER_KINDS]
                                       + (list(incident.responders) if "responders" in kinds else []))
        if "commander" in kinds and incident.commander:
            approvers.add(incident.commander)
        in_channel = await self._in_channel(user, incident) if "channel" in kinds else False
        return may_approve(row, user, experts=await self._people(self.policy.experts), approvers=approvers,
                           in_channel=in_channel, self_approve_low=self.policy.self_approve_low)

    async def _people(self, ids: list[str]) -> set[str]:
        """Slack user ids, user groups resolved to their members (a failed lookup adds nobody)."""
        found: set[str] = set()
        for who in ids:
            if not who.startswith("S"):
                found.add(who)
                continue
            try:
                found.update(await self.slack.usergroup_members(who))
            except SlackError as exc:
                log.warning("could not resolve the user group %s: %s", who, exc)
        return found

    async def _in_channel(self, user: str, incident: Incident) -> bool | None:
        if incident.channel_id is None:
            return user in incident.responders or user == incident.acknowledged_by
        return (await who_asks(self.slack, user, incident.channel_id)).in_channel

    # -- execution ----------------------------------------------------------------------------

    async def execute(self, job: Job) -> None:
        row, step, incident = await asyncio.to_thread(self._load, job.payload.get("approval"))
        if row.status == ApprovalStatus.EXECUTING and row.started_at is not None:
            # An earlier attempt set the started mark: its call may or may not have reached the
            # cluster. Read what is true; never run it again.
            finished = await self._reconcile(row)
            row = finished or row
            log.info("remediation reconciled", extra={"incident": incident.id, "approval": row.id,
                                                      "status": row.status})
        elif row.status == ApprovalStatus.EXECUTING:
            ran = await self._execute_once(row, step, incident)
            if ran is None:  # another attempt set the started mark first (a lapsed lease): reconcile
                row, step, incident = await asyncio.to_thread(self._load, row.id)
                row = await self._reconcile(row) or row
            else:
                ok, outcome = ran
                finished = await asyncio.to_thread(self._finish, row.id, ok, outcome)
                row = finished or row
                log.info("remediation executed", extra={"incident": incident.id, "approval": row.id, "ok": ok,
                                                        "since_approval_ms": _ms(row.decided_at, self.clock())})
        if row.status not in (ApprovalStatus.SUCCEEDED, ApprovalStatus.FAILED):
            return
        channel, thread = step_thread(step, incident)
        ok = row.status == ApprovalStatus.SUCCEEDED
        head = _t("result_line", self.locale, icon=":white_check_mark:" if ok else ":x:", action=escape(row.action),
                  who=f"<@{row.decided_by}>", requester=f"<@{row.requested_by}>",
                  result=escape(clip(row.result or "", 2000)))
        await post_once(self.slack, channel, escape(clip(f"{row.action}: {row.result or ''}", LIMITS["text"] - 200)),
                        blocks=[section(trusted_mrkdwn(head, LIMITS["section"]))], thread_ts=thread,
                        retry=job.attempts > 1, tag=message_tag(incident, "approval_result", approval=row.id))

    async def _execute_once(self, row: ApprovalRequest, step: RunbookStep,
                            incident: Incident) -> tuple[bool, str] | None:
        """Run the approved action once, unless something says not to (then why); None when
        another attempt set the started mark first."""
        why = None
        if not self.policy.enabled:
            why = "not run: remediations were switched off (`remediations.enabled: false`) after it was approved"
        elif not approvals.is_open(incident):
            why = "not run: the incident was resolved before it ran"
        elif row.decided_at and self.clock() - row.decided_at > timedelta(minutes=self.policy.expiry_minutes):
            why = (f"not run: approved more than {self.policy.expiry_minutes} minutes ago and the cluster could not "
                   "be reached since; the cluster may have changed, so request it again if it is still needed")
        if why is None:
            try:  # read before the mark: a failure here has changed nothing, and a retry runs it
                before = await self._observe(row)
            except IntegrationError as exc:
                if exc.retryable:
                    raise
                why = f"not run: the cluster could not be read before running it ({exc})"
        if why is not None:
            await asyncio.to_thread(self._started, row, run=False, why=why)
            return False, why
        if not await asyncio.to_thread(self._started, row, run=True, why="", before=before):
            return None
        return await self._run(row, step, row.decided_by or "", dry_run=False)

    # -- following the rollout ----------------------------------------------------------------

    async def follow(self, job: Job) -> None:
        """The rollout an executed remediation started, looked at like `kubectl rollout status`
        every few seconds (the job comes back) until it completes, fails or outlives its
        deadline: its progress on the approval message and the step, its end in the thread."""
        row, step, incident = await asyncio.to_thread(self._load, job.payload.get("approval"))
        if row.rollout == "progressing":
            ended = await self._look_at_rollout(row)
            if ended is None:
                raise RetryLater("the rollout is in progress", FOLLOW_POLL_SECONDS)
            row = ended
        if row.rollout not in approvals.ROLLOUT_ENDED:
            return
        channel, thread = step_thread(step, incident)
        line = rollout_line(row, self.locale) or ""
        text = _t("rollout_line", self.locale, line=line, action=escape(row.action), who=f"<@{row.decided_by}>")
        await post_once(self.slack, channel,
                        clip(_t("rollout_text", self.locale, action=row.action, state=row.rollout), LIMITS["text"]),
                        blocks=[section(trusted_mrkdwn(text, LIMITS["section"]))],
                        thread_ts=thread, retry=job.attempts > 1,
                        tag=message_tag(incident, "rollout", approval=row.id))

    async def _look_at_rollout(self, row: ApprovalRequest) -> ApprovalRequest | None:
        """One look: the request with its rollout ended, or None while it is still going."""
        kube, now = self.actions.kubernetes, self.clock()
        started = row.started_at or row.decided_at or now
        try:
            if kube is None:
                raise PermanentError("Kubernetes is no longer configured")
            status = await asyncio.to_thread(kube.rollout_status, str(row.params["namespace"]),
                                             str(row.params["deployment"]))
        except IntegrationError as exc:
            # Unreadable for now (retried by the outbox) until the API's default deadline has
            # passed; a refusal (deleted deployment, lost permission) ends the following.
            if exc.retryable and now - started < timedelta(seconds=600 * FOLLOW_CAP):
                raise
            return await asyncio.to_thread(self._rolled_out, row, "unknown", f"cannot follow the rollout: {exc}")
        except PermanentError as exc:
            return await asyncio.to_thread(self._rolled_out, row, "unknown", f"cannot follow the rollout: {exc}")
        # progressDeadlineSeconds counts time without progress, and the controller says when it
        # passed (failed below); a long rollout that keeps progressing is followed up to the cap.
        cap = timedelta(seconds=status.progress_deadline_seconds * FOLLOW_CAP)
        if status.done:
            return await asyncio.to_thread(self._rolled_out, row, "complete", status.message)
        if status.failed:
            return await asyncio.to_thread(self._rolled_out, row, "failed", status.message)
        if now - started > cap:
            return await asyncio.to_thread(self._rolled_out, row, "timed_out",
                                           f"{status.message} (still not done {int(cap.total_seconds()) // 60} min "
                                           "after it started; no longer followed: see `kubectl rollout status`)")
        if await asyncio.to_thread(self._progressed, row, status.message):
            log.info("rollout progress", extra={"approval": row.id, "incident": row.incident_id,
                                                "detail": status.message})
        return None

    async def _run(self, row: ApprovalRequest, step: RunbookStep, user: str, *, dry_run: bool) -> tuple[bool, str]:
        runbook = self.runbooks.get(step.runbook_id)
        if runbook is None and not steps.is_command_step(step):  # a command's step (`/silence`) has no runbook
            return False, f"runbook {step.runbook_id} is no longer loaded"
        context = param_context(runbook, self.runbook_policy.namespaces, self.runbook_policy.urls,
                                self.runbook_policy.nodes)
        try:
            # Checked again: the allow-lists may have shrunk since the request.
            params = validate_params(row.action, row.params, context)
            # issue 11 §5: a silence's comment names the incident it is for, linked (commands.silences)
            about = "" if dry_run else await comment_reference(self.db, self.slack, row)
            output = await run_action(row.action, params, replace(self.actions, user=user, now=self.clock,
                                                                  dry_run=dry_run, about=about))
        except (ParamError, ActionError) as exc:
            cause = exc.__cause__
            if not dry_run and isinstance(cause, IntegrationError) and cause.retryable:
                # No answer (a timeout, a dropped connection, server trouble): the call may have
                # taken effect. The job is retried and reconciles against the cluster.
                raise cause from exc
            return False, str(exc)
        await record_created(self.db, row, output, self.clock())  # issue 11 §5: a silence it created, for the card
        return True, output.summary or output.text

    async def _observe(self, row: ApprovalRequest) -> dict[str, Any]:
        """The cluster's facts the action changes, just before it runs ({} when not readable here)."""
        kube = self.actions.kubernetes
        if kube is None or row.action not in reconcile.RECONCILABLE:
            return {}
        return await reconcile.observe(kube, row.action, row.params)

    async def _reconcile(self, row: ApprovalRequest) -> ApprovalRequest | None:
        """Succeeded or failed from what the cluster shows now, compared with the started mark's facts."""
        # A silence is looked for in Alertmanager by its comment, and recorded if found (commands.silences).
        found = await reconcile_silence(self.db, self.actions.alertmanager, row, self.clock())
        if found is not None:
            return await asyncio.to_thread(self._reconciled, row.id, *found)
        kube = self.actions.kubernetes
        if kube is None or row.action not in reconcile.RECONCILABLE or not row.before:
            ok, facts = False, {}
            outcome = ("interrupted before its result was recorded and the cluster cannot be compared; not run "
                       "again: check the cluster, and run it again by a new request if needed")
        else:
            try:
                facts = await reconcile.observe(kube, row.action, row.params)
            except IntegrationError as exc:
                if exc.retryable:
                    raise  # unreadable for now: the job is retried
                facts = {}
                ok, outcome = False, (f"interrupted before its result was recorded, and the cluster cannot be read "
                                      f"({exc}); not run again: check the cluster")
            else:
                ok, what = reconcile.verdict(row.action, row.params, row.before, facts)
                outcome = (f"done before the restart: {what} (reconciled with the cluster; not run again)" if ok
                           else f"did not happen: {what}; not run again; run it again by a new request")
        return await asyncio.to_thread(self._reconciled, row.id, ok, outcome, facts)

    async def redraw(self, job: Job) -> None:
        """approval.redraw: the message as the request stands now (queued with each change)."""
        row, _, incident = await asyncio.to_thread(self._load, job.payload.get("approval"))
        await self._redraw(row, incident)

    async def _redraw(self, row: ApprovalRequest, incident: Incident) -> None:
        if not (row.message_channel and row.message_ts):
            return  # not posted yet: its post job draws the current state
        blocks = approval_blocks(ApprovalView(row, "", self.clock(), self.locale))
        await self.slack.update_message(row.message_channel, row.message_ts, approval_text(row), blocks=blocks)

    # -- storage ------------------------------------------------------------------------------

    def _load(self, approval_id: Any) -> Loaded:
        with self.db.read() as session:
            row = session.get(ApprovalRequest, approval_id) if isinstance(approval_id, int) else None
            step = session.get(RunbookStep, row.step_id) if row else None
            incident = session.get(Incident, row.incident_id) if row else None
            if row is None or step is None or incident is None:
                raise PermanentError(f"approval request {approval_id} does not exist")
            return row, step, incident

    def _save(self, approval_id: int | None, **values: Any) -> None:
        with self.db.session() as session:
            row = session.get(ApprovalRequest, approval_id)
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)

    def _decide(self, change: Callable[..., approvals.Claim], *args: Any) -> approvals.Claim:
        with self.db.session() as session:
            claim = change(session, *args)
            if claim.current is not None:
                session.expunge(claim.current)
            return claim

    def _started(self, row: ApprovalRequest, *, run: bool, why: str, before: dict[str, Any] | None = None) -> bool:
        with self.db.session() as session:
            return approvals.started(session, row, self.clock(), run=run, why=why, before=before)

    def _reconciled(self, approval_id: int | None, ok: bool, outcome: str,
                    facts: dict[str, Any]) -> ApprovalRequest | None:
        with self.db.session() as session:
            row = approvals.reconciled(session, approval_id or 0, self.clock(), ok=ok, result=outcome, facts=facts)
            if row is not None:
                session.flush()
                session.expunge(row)
            return row

    def _progressed(self, row: ApprovalRequest, detail: str) -> bool:
        with self.db.session() as session:
            return approvals.progressed(session, row, detail, self.clock())

    def _rolled_out(self, row: ApprovalRequest, state: str, detail: str) -> ApprovalRequest | None:
        with self.db.session() as session:
            ended = approvals.rolled_out(session, row.id or 0, self.clock(), state=state, detail=detail)
            if ended is None:  # ended by an earlier attempt: report what it recorded
                ended = session.get(ApprovalRequest, row.id)
            if ended is not None:
                session.flush()
                session.expunge(ended)
            return ended

    def _finish(self, approval_id: int | None, ok: bool, outcome: str) -> ApprovalRequest | None:
        with self.db.session() as session:
            row = approvals.finish(session, approval_id or 0, self.clock(), ok=ok, result=outcome)
            if row is not None:
                session.flush()
                session.expunge(row)
            return row


def _decided(row: ApprovalRequest) -> Refusal | None:
    """Why a request that is no longer pending cannot be approved or denied."""
    status = ApprovalStatus(row.status)
    if status == ApprovalStatus.PENDING:
        return None
    if status == ApprovalStatus.DENIED:
        return Refusal("was_denied", {"who": f"<@{row.decided_by}>"})
    if status == ApprovalStatus.EXPIRED:
        return Refusal("was_expired")
    return Refusal("was_approved", {"who": f"<@{row.decided_by}>",
                                    "status": lambda language: _t(status.value, language)})


def _ms(start: datetime | None, end: datetime) -> int | None:
    return int((end - start).total_seconds() * 1000) if start else None


def approval_of_button(db: Database, slack: SlackClient, locale: str) -> Middleware:
    """The request an Approve/Deny button points at, and its incident: found by the token in the
    button's value, and only on the request's own message (else the clicker is told, in their
    language; `locale`: the configured one)."""
    async def load(body: dict[str, Any], context: dict[str, Any], respond: Any,
                   next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        token = str((body.get("actions") or [{}])[0].get("value", ""))
        found = await asyncio.to_thread(_request_and_incident, db, token)
        container = body.get("container") or {}
        if found is None or (container.get("channel_id"), container.get("message_ts")) != (
                found[0].message_channel, found[0].message_ts):
            # the ack now, the refusal in the background: the clicker's language may take users.info a second
            task = asyncio.create_task(tell_refusal(slack, respond, body.get("user", {}).get("id", ""),
                                                    Refusal("gone"), locale))
            _telling.add(task)
            task.add_done_callback(_telling.discard)
            return BoltResponse(status=200, body="")
        context["approval"], context["incident"] = found
        return await next()

    return load


_telling: set[asyncio.Task[None]] = set()  # refusals told after the ack (a reference keeps each task alive)


def _request_and_incident(db: Database, token: str) -> tuple[ApprovalRequest, Incident] | None:
    with db.read() as session:
        row = approvals.find(session, token)
        incident = session.get(Incident, row.incident_id) if row is not None else None
        if row is None or incident is None or row.message_ts is None:
            return None
        return row, incident
