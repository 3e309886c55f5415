"""The heartbeat's jobs (bot.heartbeat): the bot's own page, and what the announce channel is told.

"Alerts are not reaching the bot" when the heartbeat stops, "alerts reach the bot again" when it
returns: each posted once (post_once: a retry finds the message an earlier attempt posted), in
the configured language (`runbooks.locale`). The page goes to PagerDuty's Events API with the
bot's own dedup key; a trigger whose loss is over before it could be sent is not sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from bot import heartbeat
from bot.config import OncallConfig
from bot.db import Database
from bot.jobs import JOB_HEARTBEAT_PAGE, JOB_HEARTBEAT_POST
from bot.models import Job
from bot.outbox import PermanentError, WorkerLoop
from commands.feature import Feature, Loop
from commands.i18n import Catalog
from commands.notices import plain_text
from commands.slack_sync import post_once, waiting_for_setup
from commands.slack_time import duration, slack_time
from integrations.pagerduty import PagerDutyEvent, PagerDutyEvents
from integrations.slack import SlackClient

__all__ = ["HeartbeatJobs", "heartbeat_text"]

log = logging.getLogger(__name__)

START_RETRY = 5.0  # seconds between tries to arm the start-up watch while the database is away

_t = Catalog("heartbeat", {
    "lost": {"en": ":rotating_light: *Alerts are not reaching the bot*: no `{alertname}` heartbeat from "
                   "Alertmanager since {since} ({silent}). {paged} Check Alertmanager and its route to the bot.",
             "ja": ":rotating_light: *アラートがボットに届いていません*: {since} から({silent})Alertmanager の "
                   "`{alertname}` ハートビートがありません。{paged} "
                   "Alertmanager とボットへのルートを確認してください。"},
    "never": {"en": ":rotating_light: *Alerts are not reaching the bot*: no `{alertname}` heartbeat has arrived "
                    "from Alertmanager since the bot began watching at {since} ({silent}). {paged} Check "
                    "Alertmanager and its route to the bot.",
              "ja": ":rotating_light: *アラートがボットに届いていません*: ボットが {since} に監視を始めてから"
                    "({silent})Alertmanager の `{alertname}` ハートビートが一度も届いていません。{paged} "
                    "Alertmanager とボットへのルートを確認してください。"},
    "paged": {"en": "PagerDuty was paged.", "ja": "PagerDuty で呼び出しました。"},
    "not_paged": {"en": "PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY): nobody was paged.",
                  "ja": "PagerDuty が設定されていません(PAGERDUTY_ROUTING_KEY を設定してください): "
                        "誰も呼び出されていません。"},
    "back": {"en": ":white_check_mark: *Alerts reach the bot again*: the `{alertname}` heartbeat arrived "
                   "(silent for {silent}).{resolved}",
             "ja": ":white_check_mark: *アラートが再びボットに届いています*: `{alertname}` ハートビートが届きました"
                   "({silent}途絶えていました)。{resolved}"},
    "page_resolved": {"en": " The page was resolved.", "ja": " 呼び出しは解決しました。"},
})


def heartbeat_text(facts: dict[str, Any], locale: str | None) -> str:
    """A JOB_HEARTBEAT_POST job's message (`facts` from bot.heartbeat), every value escaped."""
    since, at = datetime.fromisoformat(str(facts["since"])), datetime.fromisoformat(str(facts["at"]))
    values = {"alertname": plain_text(facts.get("alertname"), 128), "silent": duration(at - since, locale)}
    if facts.get("event") == "back":
        return _t("back", locale, **values, resolved=_t("page_resolved", locale) if facts.get("paged") else "")
    return _t("never" if facts.get("never") else "lost", locale, **values, since=slack_time(since, at),
              paged=_t("paged" if facts.get("paged") else "not_paged", locale))


class HeartbeatJobs:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, events: PagerDutyEvents, *,
                 clock: Callable[[], datetime]) -> None:
        self.db, self.config, self.slack, self.events, self.clock = db, config, slack, events, clock
        self._start = _StartWatch(self)

    def feature(self) -> Feature:
        announce = self.config.channels.announce
        return Feature(handlers={JOB_HEARTBEAT_PAGE: self.page,
                                 **waiting_for_setup({JOB_HEARTBEAT_POST: self.post}, announce)},
                       loops=[Loop(self._start.run, self._start.stop)])

    async def post(self, job: Job) -> None:
        text = heartbeat_text(job.payload, self.config.runbooks.locale)
        tag = {"heartbeat": job.payload.get("episode"), "kind": f"heartbeat_{job.payload.get('event')}"}
        await post_once(self.slack, self.config.channels.announce, text, tag=tag, retry=job.attempts > 1)

    async def page(self, job: Job) -> None:
        event = await asyncio.to_thread(self._event, job)
        if event is None:
            log.info("heartbeat page not sent: the loss is over", extra={"job": job.id})
            return
        await asyncio.to_thread(self.events.send, event)  # PagerDutyError: the outbox retries what may pass

    def _event(self, job: Job) -> PagerDutyEvent | None:
        with self.db.read() as session:
            routing_key = heartbeat.routing_key_for(session, job.payload)
        try:
            return None if routing_key is None else heartbeat.pagerduty_event(job.payload, routing_key)
        except (ValidationError, KeyError, ValueError) as exc:
            raise PermanentError(f"not a valid heartbeat page: {exc}") from exc

    def watch_from_start(self) -> bool:
        """`heartbeat.enabled: true`: arm the watch once, though no heartbeat ever came."""
        with self.db.session() as session:
            return heartbeat.watch_from_start(session, self.config.heartbeat, now=self.clock())


class _StartWatch(WorkerLoop):
    """At start: arm the watch (`enabled: true`), retrying while the database is away; then done."""

    def __init__(self, jobs: HeartbeatJobs) -> None:
        super().__init__()
        self.jobs = jobs

    async def run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.to_thread(self.jobs.watch_from_start)
                return
            except Exception:  # the database may be briefly away; a replica that is up arms it too
                log.exception("could not arm the heartbeat watch; retrying")
                await self._sleep(START_RETRY)
