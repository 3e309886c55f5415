"""The runbook in the incident channel: posting it, and what a click on a step does.

* `runbook.post` (outbox, the incident's lane, after the card): the best-matching runbook, its
  buttons carrying only opaque tokens (bot.steps), split across messages when long.
* A click (Bolt): acknowledged at once; refused with an ephemeral note to anyone not in the
  channel; a diagnostic is queued, a remediation becomes an approval request (commands.approvals).
* `runbook.run_step` (outbox): runs the diagnostic, answers in the step's thread (a code block,
  or a file when long), records it in the timeline; `runbook.refresh` then re-renders the
  runbook so the step shows who ran it, when, and whether it failed (and why).
* `/runbook list` and `/runbook show ID`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from bot import approvals, steps
from bot.action_params import ParamError
from bot.action_runner import run_action, validate_params
from bot.actions import ActionContext, ActionError, ActionOutput, get_action
from bot.config import OncallConfig, RunbookPolicy
from bot.db import Database
from bot.jobs import JOB_RUNBOOK_POST, JOB_RUNBOOK_REFRESH, JOB_STEP_REPLY, JOB_STEP_RUN
from bot.models import ApprovalRequest, Incident, Job, RunbookStep
from bot.outbox import PermanentError, RetryLater
from bot.policy import Act, Policy
from bot.runbook_format import localized
from bot.runbooks import RunbookSet, param_context
from commands.approval_blocks import step_note
from commands.approvals import Approvals, Refusal, tell_refusal
from commands.blockkit import LIMITS, clip, escape, section, trusted_mrkdwn
from commands.feature import Action, Feature
from commands.i18n import Catalog
from commands.ids import COMMAND_RUNBOOK, RUNBOOK_STEP
from commands.middleware import authorize, incident_of_step_button
from commands.runbook_blocks import no_runbook_blocks, runbook_fallback_text, runbook_message_parts
from commands.slack_sync import incident_thread, message_tag, post_once, waiting_for_setup
from commands.slack_sync import step_thread as _thread_of
from commands.slack_time import slack_time
from integrations.slack import SlackClient, SlackError

__all__ = ["RunbookFlow"]

log = logging.getLogger(__name__)

_CODE_ROOM = LIMITS["section"] - 8  # the ``` fences and newlines
_REASON = 500  # a failed step's reason on the runbook message; the whole output is in its thread

Plan = tuple[Incident, steps.RunbookPlan, dict[int, RunbookStep], dict[int, ApprovalRequest]]

# What a clicker or a /runbook asker is told (in their Slack locale), and the lines in the channel
# (in `runbooks.locale`, as the runbook). {placeholders} are trusted mrkdwn: mentions, escaped values.
_t = Catalog("runbook_flow", {
    "disabled": {"en": "This step is disabled: {reason}", "ja": "この手順は無効です: {reason}"},
    "nothing_to_run": {"en": "This step has nothing to run.", "ja": "この手順には実行するものがありません。"},
    "usage": {"en": "`/runbook list` lists the runbooks; `/runbook show ID` shows one.",
              "ja": "`/runbook list` でランブックの一覧を、`/runbook show ID` で 1 件を表示します。"},
    "listed": {"en": "*{count} runbooks* (RUNBOOKS_PATH and the shipped ones):",
               "ja": "*ランブック {count} 件*(RUNBOOKS_PATH と同梱のもの):"},
    "no_such_runbook": {"en": "No runbook `{runbook}`; `/runbook list` shows them.",
                        "ja": "ランブック `{runbook}` はありません。`/runbook list` で一覧を確認できます。"},
    # in the channel
    "no_runbook": {"en": "No runbook matches {alert}", "ja": "{alert} に一致するランブックはありません"},
    "approval_requested": {"en": ":lock: {who} requested approval to run `{action}` ({params}). Nothing runs until "
                                 "an authorised responder approves it.",
                           "ja": ":lock: {who} が `{action}`({params})の実行承認を依頼しました。"
                                 "権限のある対応者が承認するまで何も実行されません。"},
    # a step's status line on the runbook message
    "ran": {"en": ":white_check_mark: ran by {who}{at}{times}", "ja": ":white_check_mark: {who} が実行{at}{times}"},
    "ran_failed": {"en": ":warning: failed{at}: {reason} · run by {who}{times}",
                   "ja": ":warning: 失敗{at}: {reason} · 実行 {who}{times}"},
    "ran_unknown": {"en": ":grey_question: ran by {who}{at}{times}; its result was not recorded",
                    "ja": ":grey_question: {who} が実行{at}{times}。結果は記録されていません"},
    "at": {"en": " at {when}", "ja": "({when})"},
    "times": {"en": " ({runs} runs)", "ja": "(計 {runs} 回)"},
    "no_reason": {"en": "no reason was recorded", "ja": "理由は記録されていません"},
})


def _language(locale: str | None) -> str:
    """Slack locales are `ja-JP`, `en-US`; runbooks are written per language."""
    return (locale or "en").split("-")[0].lower()


class RunbookFlow:
    def __init__(self, db: Database, slack: SlackClient, config: OncallConfig, runbooks: RunbookSet,
                 actions: ActionContext, access: Policy, *, clock: Callable[[], datetime],
                 on_commit: Callable[[], None], approvals: Approvals) -> None:
        self.db, self.slack, self.clock, self.kick = db, slack, clock, on_commit
        self.approvals = approvals
        self.policy: RunbookPolicy = config.runbooks
        self.risk_overrides = config.remediations.risk
        self.announce = config.channels.announce
        self.runbooks, self.actions, self.access = runbooks, actions, access

    def feature(self) -> Feature:
        handlers = waiting_for_setup({JOB_RUNBOOK_POST: self.post_runbook, JOB_STEP_RUN: self.run_step,
                                      JOB_STEP_REPLY: self.reply, JOB_RUNBOOK_REFRESH: self.refresh}, self.announce)
        click = Action(RUNBOOK_STEP, self.on_click, (incident_of_step_button(self.db),
                                                     authorize(_act, self.access, self.slack)))
        return Feature(handlers=handlers, actions=[click], commands={COMMAND_RUNBOOK: self.on_command})

    # -- posting ------------------------------------------------------------------------------

    async def post_runbook(self, job: Job) -> None:
        incident, plan, rows, asked = await asyncio.to_thread(self._plan, job.incident_id)
        where = incident_thread(incident) if incident.card_ts else None
        if where is None:
            raise RetryLater("the incident card is not posted yet", 5.0)
        channel, thread = where  # no channel of its own: under the card
        if plan.runbook is None:
            text = _t("no_runbook", self.policy.locale, alert=escape(clip(incident.alertname, 200)))
            await post_once(self.slack, channel, text,
                            blocks=no_runbook_blocks(incident.alertname, locale=self.policy.locale),
                            thread_ts=thread, retry=job.attempts > 1, tag=message_tag(incident, "runbook", part=0))
            return
        for blocks, indices in self._messages(incident, plan, rows, asked):
            if indices and all(rows[i].message_ts for i in indices):
                continue  # posted by an earlier attempt of this job
            # Found again by its first step after a crash between posting and recording it.
            tag = message_tag(incident, "runbook", part=min(indices) if indices else -1)
            ts = await post_once(self.slack, channel, runbook_fallback_text(plan.runbook, self.policy.locale),
                                 blocks=blocks, thread_ts=thread, retry=job.attempts > 1, tag=tag)
            await asyncio.to_thread(self._save_message, [rows[i].id for i in indices], channel, ts)
            for i in indices:
                rows[i].message_channel, rows[i].message_ts = channel, ts
        log.info("runbook posted", extra={"incident": incident.id, "runbook": plan.runbook.id})

    def _plan(self, incident_id: int | None, *, store: bool = True) -> Plan:
        """The incident's runbook, its step rows and each step's latest approval request, by
        step index; `store` creates the rows (and takes the write lock)."""
        with self.db.session() if store else self.db.read() as session:
            incident = session.get(Incident, incident_id)
            if incident is None:
                raise PermanentError(f"incident {incident_id} does not exist")
            plan = steps.plan_runbook(session, incident, self.runbooks, self.policy, risk_overrides=self.risk_overrides)
            found = steps.store_steps(session, incident, plan) if store else steps.steps_for(session, incident.id or 0)
            rows = {row.step_index: row for row in found}
            requests = approvals.latest_by_step(session, incident.id or 0)
            session.expunge_all()
            asked = {row.step_index: requests[row.id] for row in found if row.id in requests}
            return incident, plan, rows, asked

    def _messages(self, incident: Incident, plan: steps.RunbookPlan, rows: dict[int, RunbookStep],
                  asked: dict[int, ApprovalRequest]) -> list[tuple[list[dict[str, Any]], list[int]]]:
        assert plan.runbook is not None
        now = self.clock()
        notes = {i: _ran_note(row, now, self.policy.locale) for i, row in rows.items() if row.runs}
        notes.update({i: step_note(request, now, self.policy.locale) for i, request in asked.items()})
        return runbook_message_parts(plan.runbook, plan.steps, locale=self.policy.locale,
                                     button_id=lambda i: rows[i].token, notes=notes,
                                     runbook_url=plan.annotations.get("runbook_url"))

    def _save_message(self, row_ids: list[int | None], channel: str, ts: str) -> None:
        with self.db.session() as session:
            for row_id in row_ids:
                row = session.get(RunbookStep, row_id)
                if row is not None:
                    row.message_channel, row.message_ts = channel, ts

    async def refresh(self, job: Job) -> None:
        incident, plan, rows, asked = await asyncio.to_thread(lambda: self._plan(job.incident_id, store=False))
        if plan.runbook is None or not rows:
            return
        for blocks, indices in self._messages(incident, plan, rows, asked):
            posted = {(rows[i].message_channel, rows[i].message_ts) for i in indices if rows[i].message_ts}
            for channel, ts in posted:
                assert channel and ts
                await self.slack.update_message(channel, ts, runbook_fallback_text(plan.runbook, self.policy.locale),
                                                blocks=blocks)

    # -- clicks -------------------------------------------------------------------------------

    async def on_click(self, ack: Any, body: dict[str, Any], context: dict[str, Any], respond: Any) -> None:
        """The middleware found the step (context["step"]) and let the clicker through."""
        await ack()  # within Slack's 3 s; everything below may take longer
        user, step = body["user"]["id"], context["step"]
        refused = self._refusal(step)
        if refused is None:
            refused = await asyncio.to_thread(self._record_click, step.id, user, body.get("user", {}).get("locale"))
        if refused is not None:
            await tell_refusal(self.slack, respond, user, refused, self.policy.locale)
            return
        self.kick()

    @staticmethod
    def _refusal(step: RunbookStep) -> Refusal | None:
        if step.disabled_reason:
            return Refusal("disabled", {"reason": escape(step.disabled_reason)}, _t)
        if step.kind not in ("diagnostic", "remediation"):
            return Refusal("nothing_to_run", catalog=_t)
        return None

    def _record_click(self, step_id: int | None, user: str, locale: str | None) -> Refusal | None:
        """Queue the diagnostic, or request approval of the remediation; a refusal to tell."""
        with self.db.session() as session:
            step = session.get(RunbookStep, step_id)
            incident = session.get(Incident, step.incident_id) if step else None
            if step is None or incident is None:
                return None
            if step.kind == "diagnostic":
                steps.request_run(session, step, user, self.clock(), locale=locale)
                return None
            return self.approvals.request(session, step, incident, user, self.clock())

    # -- running ------------------------------------------------------------------------------

    async def run_step(self, job: Job) -> None:
        step, incident = await asyncio.to_thread(self._load, job.payload.get("step"))
        user = str(job.payload["user"])
        language = _language(job.payload.get("locale") or await self._locale(user))
        title = self._title(step, language)
        ok, output = await self._execute(step, user)
        await self._post_output(step, incident, user, title, ok, output, job)
        await asyncio.to_thread(self._record, step.id, user, output.summary or output.text, ok)
        self.kick()

    async def _execute(self, step: RunbookStep, user: str) -> tuple[bool, ActionOutput]:
        runbook = self.runbooks.get(step.runbook_id)
        if runbook is None or step.action is None or get_action(step.action) is None:
            return False, ActionOutput(text=f"runbook {step.runbook_id} or its action is no longer loaded",
                                       summary="not run: runbook gone")
        context = param_context(runbook, self.policy.namespaces, self.policy.urls, self.policy.nodes)
        try:
            # The stored parameters are checked again: the allow-lists may have shrunk since.
            params = validate_params(step.action, step.params, context)
            return True, await run_action(step.action, params, replace(self.actions, user=user, now=self.clock))
        except (ParamError, ActionError) as exc:
            return False, ActionOutput(text=str(exc), summary=f"failed: {exc}")

    async def _post_output(self, step: RunbookStep, incident: Incident, user: str, title: str, ok: bool,
                           output: ActionOutput, job: Job) -> None:
        channel, thread = _thread_of(step, incident)
        icon = ":white_check_mark:" if ok else ":x:"
        head = f"{icon} *{escape(title)}* · <@{user}> · {escape(output.summary or '')}"
        code = "```\n" + clip(escape(output.text), _CODE_ROOM).replace("```", "ˋˋˋ") + "\n```"
        blocks = [section(trusted_mrkdwn(head, LIMITS["section"])), section(trusted_mrkdwn(code))]
        await post_once(self.slack, channel, clip(escape(f"{title}: {output.summary}"), LIMITS["text"]), blocks=blocks,
                        thread_ts=thread, retry=job.attempts > 1, tag=message_tag(incident, "step_output", job=job.id))
        if output.file is not None:
            await self.slack.upload_file(channel, output.file, output.filename or "output.txt", title=title,
                                         thread_ts=thread)

    def _record(self, step_id: int | None, user: str, outcome: str, ok: bool) -> None:
        with self.db.session() as session:
            step = session.get(RunbookStep, step_id, with_for_update=True)
            incident = session.get(Incident, step.incident_id) if step else None
            if step is not None and incident is not None:
                steps.record_run(session, step, incident, user, self.clock(), outcome, ok)

    def _load(self, step_id: int | None) -> tuple[RunbookStep, Incident]:
        with self.db.read() as session:
            step = session.get(RunbookStep, step_id)
            incident = session.get(Incident, step.incident_id) if step else None
            if step is None or incident is None:
                raise PermanentError(f"runbook step {step_id} does not exist")
            return step, incident

    def _title(self, step: RunbookStep, language: str) -> str:
        runbook = self.runbooks.get(step.runbook_id)
        if runbook is None or step.step_index >= len(runbook.steps):
            return step.step_id
        return localized(runbook.steps[step.step_index].title, language)

    async def _locale(self, user: str, *, within: float = 5.0) -> str:
        try:
            return await asyncio.wait_for(self.slack.user_locale(user), within)
        except (SlackError, TimeoutError):
            return self.policy.locale  # the answer matters more than its language

    async def reply(self, job: Job) -> None:
        step, incident = await asyncio.to_thread(self._load, job.payload.get("step"))
        channel, thread = _thread_of(step, incident)
        if job.payload.get("event") == "approval_requested":  # queued by a version before the approval flow
            text = _t("approval_requested", self.policy.locale, who=f"<@{job.payload['user']}>", action=step.action,
                      params=escape(_params_text(step.params)))
        else:
            text = escape(str(job.payload.get("text", "")))
        await post_once(self.slack, channel, clip(text, LIMITS["text"]), thread_ts=thread,
                        retry=job.attempts > 1, tag=message_tag(incident, "notice", job=job.id))

    # -- /runbook ------------------------------------------------------------------------------

    async def on_command(self, ack: Any, command: dict[str, Any]) -> None:
        words = str(command.get("text", "")).split()
        if words[:1] == ["show"] and len(words) == 2:
            language = _language(await self._locale(str(command.get("user_id", "")), within=1.0))  # ack < 3 s
            await ack(text=self._show(words[1], language), response_type="ephemeral")
        elif words[:1] in (["list"], []):
            language = _language(await self._locale(str(command.get("user_id", "")), within=1.0))  # ack < 3 s
            await ack(text=self._list(language), response_type="ephemeral")
        else:
            language = _language(await self._locale(str(command.get("user_id", "")), within=1.0))  # ack < 3 s
            await ack(text=_t("usage", language), response_type="ephemeral")

    def _list(self, language: str) -> str:
        lines = [f"• `{rb.id}`: {escape(localized(rb.title, language))}" for rb in self.runbooks]
        return clip(_t("listed", language, count=len(lines)) + "\n" + "\n".join(lines), LIMITS["text"])

    def _show(self, runbook_id: str, language: str) -> str:
        runbook = self.runbooks.get(runbook_id)
        if runbook is None:
            return _t("no_such_runbook", language, runbook=escape(runbook_id[:100]))
        lines = [f"*{escape(localized(runbook.title, language))}* (`{runbook.id}`, "
                 f"{self.runbooks.origin(runbook.id)})"]
        lines += [f"{n}. {escape(localized(step.title, language))}"
                  + (f" · `{step.action.type}`" if step.action else "") for n, step in enumerate(runbook.steps, 1)]
        return clip("\n".join(lines), LIMITS["text"])


def _ran_note(row: RunbookStep, now: datetime, locale: str | None = None) -> str:
    """The step's last run as trusted mrkdwn, in the runbook's language: ok, failed and why, or
    (runs recorded before results were kept) that its result is not known."""
    at = _t("at", locale, when=slack_time(row.last_run_at, now)) if row.last_run_at else ""
    times = _t("times", locale, runs=row.runs) if row.runs > 1 else ""
    who = f"<@{row.last_run_by}>"
    if row.last_ok is False:
        reason = (row.last_outcome or _t("no_reason", locale)).removeprefix("failed: ")
        return _t("ran_failed", locale, at=at, reason=escape(clip(reason, _REASON)), who=who, times=times)
    return _t("ran_unknown" if row.last_ok is None else "ran", locale, who=who, at=at, times=times)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())[:500]


def _act(context: dict[str, Any]) -> Act:
    return Act.RUN_DIAGNOSTIC if context["step"].kind == "diagnostic" else Act.REQUEST_REMEDIATION
