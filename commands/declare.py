"""Declaring an incident from Slack: `/incident new [title]` and the Declare incident message
shortcut open one modal (commands.declare_blocks); its submission opens the incident through
bot.declare, as an Alertmanager group would open it.

Slack's clocks: a modal opens only within 3 s of the click or command that gave its trigger id
(the shortcut looks up the asker's language and the message's link side by side, within that),
and a submission is answered within 3 s: with the errors to fix, shown in the modal; with the
confirmation the modal turns into; or, when storing takes longer, closed at once while the
incident is finished behind it. A submission that comes again (Slack's retry, a replay, a double
click) is one declaration: commands.middleware.act_once drops a repeated request, and bot.declare
finds the incident the same modal already opened.

Who may declare is bot.policy's `decide_declare` (Act.DECLARE), asked before the modal opens and
again at its submission (what Slack says of the asker may have changed, and a submission is its
own request): not a guest, not someone of another workspace. users.info says both; the
installation's workspace is auth.test's, read once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.config import OncallConfig
from bot.db import Database
from bot.declare import TITLE_LIMIT, Declaration, declare
from bot.incidents import IngestResult
from bot.models import Incident
from bot.policy import Act, Declarer, Policy
from commands.declare_blocks import (
    Prefill,
    declare_modal,
    declared_view,
    failed_errors,
    form_answer,
    message_prefill,
    read_submission,
    refusal,
    refused_view,
)
from commands.feature import Feature
from commands.ids import DECLARE_SHORTCUT, DECLARE_VIEW
from commands.incident_command import Ask, slack_to_plain
from commands.middleware import tell
from commands.slash import ANSWER_WITHIN, Answer, asker_language, within_or_none
from integrations.slack import SlackClient, SlackError, SlackUser

__all__ = ["DeclareFlow"]

log = logging.getLogger(__name__)

DECLARER_WITHIN = 1.0  # seconds users.info may take to say who declares (an answer is due within 3 s)


class DeclareFlow:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, *,
                 clock: Callable[[], datetime], on_commit: Callable[[], None], policy: Policy | None = None) -> None:
        self.db, self.config, self.slack, self.clock, self.on_commit = db, config, slack, clock, on_commit
        self.policy = policy or Policy()
        self._installed_team = ""  # auth.test's team_id, once known
        self._finishing: set[asyncio.Future[Any]] = set()  # declarations stored after their modal closed

    def feature(self) -> Feature:
        return Feature(views={DECLARE_VIEW: self.on_submit}, shortcuts={DECLARE_SHORTCUT: self.on_shortcut})

    # -- opening the modal ---------------------------------------------------------------------------

    async def from_command(self, ask: Ask) -> Answer:
        """`/incident new [title]`: the modal, the words after `new` as its title."""
        prefill = Prefill(title=" ".join(slack_to_plain(ask.rest).split())[:TITLE_LIMIT])
        refused = await self._refusal(ask.user, set(), ask.language)
        if refused is not None:
            return Answer(refused)
        error = await self._open(ask.trigger_id, ask.user, ask.language, prefill)
        return Answer(form_answer(ask.language, error))

    async def on_shortcut(self, ack: Any, body: dict[str, Any], respond: Any) -> None:
        """Declare incident on a message: the modal, the message's text and link as its description."""
        await ack()
        user = str((body.get("user") or {}).get("id", ""))
        channel = str((body.get("channel") or {}).get("id", ""))
        message = body.get("message") or {}
        ts = str(message.get("ts") or body.get("message_ts") or "")
        language, url, declarer = await asyncio.gather(
            asker_language(self.slack, user, self.config.runbooks.locale),
            within_or_none(self.slack.permalink(channel, ts)) if channel and ts else _nothing(),
            self._declarer(user, _claimed_teams(body)))
        refused = self._refused(declarer, language)
        if refused is not None:
            await tell(respond, user, refused)
            return
        prefill = message_prefill(slack_to_plain(str(message.get("text") or "")), url, language)
        error = await self._open(str(body.get("trigger_id", "")), user, language, prefill)
        if error is not None:
            await tell(respond, user, form_answer(language, error))

    async def _open(self, trigger_id: str, user: str, language: str, prefill: Prefill) -> str | None:
        """Open the modal for whoever gave `trigger_id`; Slack's error when it cannot."""
        try:
            await self.slack.open_view(trigger_id, declare_modal(language, prefill))
        except SlackError as exc:  # e.g. the trigger's 3 s passed
            log.warning("could not open the declare modal: %s", exc, extra={"user": user, "via": prefill.via})
            return exc.error
        log.info("declare modal opened", extra={"user": user, "via": prefill.via})
        return None

    # -- who may declare -----------------------------------------------------------------------------

    async def _refusal(self, user: str, claimed: set[str], language: str) -> str | None:
        """Why `user` may not declare, in `language`; None when they may."""
        return self._refused(await self._declarer(user, claimed), language)

    def _refused(self, declarer: Declarer, language: str) -> str | None:
        decision = self.policy.decide_declare(declarer)
        if decision.allowed:
            return None
        log.info("refused", extra={"user": declarer.user, "act": Act.DECLARE.name, "reason": decision.reason,
                                   "teams": sorted(declarer.teams), "error": declarer.lookup_error})
        return refusal(decision.reason, language, error=declarer.lookup_error)

    async def _declarer(self, user: str, claimed: set[str]) -> Declarer:
        """What Slack says of `user` (users.info) beside the workspaces the request claims for them."""
        try:
            account, installed = await asyncio.wait_for(self._account_and_team(user), DECLARER_WITHIN)
        except SlackError as exc:
            return Declarer(user, frozenset(claimed), "", None, exc.error)
        except TimeoutError:
            return Declarer(user, frozenset(claimed), "", None, "timeout")
        return Declarer(user, frozenset({account.team_id, *claimed}), installed, account.guest)

    async def _account_and_team(self, user: str) -> tuple[SlackUser, str]:
        account = await self.slack.user_account(user)
        if not self._installed_team:
            self._installed_team = (await self.slack.identity()).team_id
        return account, self._installed_team

    # -- the submission ------------------------------------------------------------------------------

    async def on_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        submitted = read_submission(view)
        loop = asyncio.get_running_loop()
        answer_by = loop.time() + ANSWER_WITHIN  # the check and the storing share the ack's time
        user = body.get("user") or {}
        refused = await self._refusal(str(user.get("id", "")), _claimed_teams(body), submitted.language)
        if refused is not None:
            await ack(response_action="update", view=refused_view(refused, submitted.language))
            return
        if submitted.errors:
            await ack(response_action="errors", errors=submitted.errors)
            return
        team = (body.get("team") or {}).get("id") or user.get("team_id") or ""
        declaration = Declaration(
            key=f"{team}:{view.get('id')}", declared_by=str(user.get("id", "")), title=submitted.title,
            severity=submitted.severity,  # type: ignore[arg-type]  # read_submission checked it
            service=submitted.service, description=submitted.description, private=submitted.private,
            message_url=submitted.message_url, via=submitted.via)
        task = asyncio.ensure_future(asyncio.to_thread(self._declare, declaration))
        done, _ = await asyncio.wait({task}, timeout=max(0.1, answer_by - loop.time()))
        if task not in done:  # the database is slow: close the modal now, finish behind it
            await ack()
            self._finishing.add(task)

            def finish(done: asyncio.Future[tuple[IngestResult, bool]]) -> None:
                self._finishing.discard(done)
                self._finished(done, declaration)

            task.add_done_callback(finish)
            return
        found = self._finished(task, declaration)
        if found is None:
            await ack(response_action="errors", errors=failed_errors(submitted.language))
            return
        incident_id, own_channel = found
        await ack(response_action="update", view=declared_view(incident_id, submitted.language,
                                                               own_channel=own_channel))

    def _declare(self, declaration: Declaration) -> tuple[IngestResult, bool]:
        """Declare in one transaction; (the outcome, whether it gets a channel of its own)."""
        with self.db.session() as session:
            result = declare(session, self.config, declaration, now=self.clock())
            incident = session.get(Incident, result.incident_id)
            assert incident is not None
            return result, incident.private or incident.severity in self.config.channels.dedicated_for

    def _finished(self, task: asyncio.Future[tuple[IngestResult, bool]],
                  declaration: Declaration) -> tuple[int, bool] | None:
        """The declared incident's id and whether it has a channel of its own; None if it failed."""
        exc = task.exception()
        if exc is not None:
            log.error("could not declare the incident", exc_info=exc,
                      extra={"user": declaration.declared_by, "key": declaration.key})
            return None
        result, own_channel = task.result()
        self.on_commit()  # the channel, the card and the timers' work: now
        log.info("incident declared", extra={"incident": result.incident_id, "outcome": result.outcome,
                                             "user": declaration.declared_by, "private": declaration.private})
        assert result.incident_id is not None
        return result.incident_id, own_channel


async def _nothing() -> None:
    return None


def _claimed_teams(body: dict[str, Any]) -> set[str]:
    """The workspaces an interaction payload names for its user (the user's own, and the team's)."""
    teams = {(body.get("user") or {}).get("team_id"), (body.get("team") or {}).get("id")}
    return {str(team) for team in teams if team}
