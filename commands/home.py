"""The app's Home tab: the open incidents and who is on call, for the person looking.

* `app_home_opened` (an event: Bolt acknowledges it at once; a redelivery is dropped by
  commands.middleware.act_once) queues `slack.publish_home` for the viewer. Only the Home tab
  is drawn; opening the Messages tab draws nothing.
* `slack.publish_home` (outbox, no lane): the open incidents (bot.incident_ops.open_incidents,
  the most severe first: severity, state, age, commander, a link to the channel or the card),
  then what `/oncall` says (commands.slash.OnCallCommand.lines: PagerDuty's on-call per level,
  the responders, the timetable), published with `views.publish` in the viewer's Slack
  language. A private incident is listed only to those the policy lets see it (its channel's
  members, its commander, whoever acknowledged it: commands.visibility). A retry publishes the whole view again,
  which replaces the last one: nothing is ever doubled.
* `home_view` is the pure builder, within Slack's limits for a Home tab (100 blocks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot import incident_ops
from bot.config import OncallConfig
from bot.db import Database
from bot.jobs import JOB_HOME, enqueue
from bot.models import Incident, IncidentStatus, Job
from bot.outbox import PermanentError
from bot.policy import Policy
from commands.blockkit import LIMITS, clip, context, divider, escape, header, section, trusted_mrkdwn
from commands.cards import SEVERITY_ICON, actor_text
from commands.feature import Feature
from commands.i18n import Catalog
from commands.slack_time import duration, slack_time
from commands.slash import OnCallCommand, asker_language, within_or_none
from commands.visibility import hidden_from
from integrations.slack import SlackClient

__all__ = ["HOME_BLOCKS", "HOME_SHOWN", "AppHome", "HomeIncident", "home_view"]

log = logging.getLogger(__name__)

HOME_BLOCKS = 100  # a Home tab's limit (a message's is 50)
HOME_SHOWN = 40  # incidents listed; `/incident list` has them all

_t = Catalog("home", {
    "open": {"en": "Open incidents ({count})", "ja": "対応中のインシデント({count} 件)"},
    "none": {"en": "No open incidents.", "ja": "対応中のインシデントはありません。"},
    "line": {"en": "{icon} *{severity}* {where} {title}\n{state} · open for {age} · commander {commander}",
             "ja": "{icon} *{severity}* {where} {title}\n{state} · 発生から {age} · 指揮者 {commander}"},
    "unassigned": {"en": "unassigned", "ja": "未割り当て"},
    "card": {"en": "#{id} card", "ja": "#{id} カード"},
    "more": {"en": "…and {more} more: `/incident list` shows them all.",
             "ja": "…ほか {more} 件。`/incident list` ですべて表示できます。"},
    "oncall": {"en": "On call", "ja": "オンコール"},
    "updated": {"en": "As of {at}; open this tab again to refresh it.",
                "ja": "{at} 時点の内容です。タブを開き直すと更新されます。"},
})


@dataclass(frozen=True)
class HomeIncident:
    incident: Incident
    started_at: datetime
    where: str  # trusted mrkdwn: a link to its channel or its card


class AppHome:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, policy: Policy, oncall: OnCallCommand,
                 *, clock: Callable[[], datetime], on_commit: Callable[[], None]) -> None:
        self.db, self.config, self.slack, self.policy, self.oncall = db, config, slack, policy, oncall
        self.clock, self.kick = clock, on_commit

    def feature(self) -> Feature:
        return Feature(events={"app_home_opened": self.on_opened}, handlers={JOB_HOME: self.publish})

    async def on_opened(self, event: dict[str, Any]) -> None:
        if event.get("tab") != "home":
            return  # the Messages tab: nothing of ours to draw
        user = str(event.get("user") or "")
        if user:
            await asyncio.to_thread(self._queue, user)
            self.kick()

    def _queue(self, user: str) -> None:
        with self.db.session() as session:
            enqueue(session, JOB_HOME, None, now=self.clock(), payload={"user": user})

    async def publish(self, job: Job) -> None:
        user = str(job.payload.get("user") or "")
        if not user:
            raise PermanentError("slack.publish_home without a user")
        language = await asker_language(self.slack, user, self.config.runbooks.locale)
        found = await asyncio.to_thread(self._open)
        hidden = await hidden_from(self.slack, self.policy, user, [item.incident for item in found])
        visible = [item for item in found if item.incident.id not in hidden]
        shown = visible[:HOME_SHOWN]
        wheres = await asyncio.gather(*(self._where(item.incident, language) for item in shown))
        incidents = [HomeIncident(item.incident, item.started_at, where) for item, where in zip(shown, wheres,
                                                                                             strict=True)]
        oncall = await self.oncall.lines(language)
        view = home_view(incidents, len(visible), oncall, self.clock(), language)
        await self.slack.publish_home(user, view)
        log.info("home published", extra={"user": user, "incidents": len(visible), "language": language})

    def _open(self) -> list[incident_ops.OpenIncident]:
        with self.db.read() as session:
            return incident_ops.open_incidents(session)

    async def _where(self, incident: Incident, language: str) -> str:
        """Its channel, else its card (in the announce channel's thread), else its number."""
        if incident.channel_id:
            return f"<#{incident.channel_id}>"
        label = _t("card", language, id=incident.id)
        if incident.card_channel_id and incident.card_ts:
            url = await within_or_none(self.slack.permalink(incident.card_channel_id, incident.card_ts))
            if url:
                return f"<{url}|{label}>"
        return f"#{incident.id}"


# -- the view (pure) ---------------------------------------------------------------------------------

def home_view(incidents: list[HomeIncident], total: int, oncall: list[str], now: datetime,
              language: str) -> dict[str, Any]:
    """The Home tab: `incidents` (the first of `total` the viewer may see), then the `/oncall`
    lines (mrkdwn we composed), as of `now`."""
    blocks: list[dict[str, Any]] = [header(_t("open", language, count=total))]
    if not incidents:
        blocks.append(section(trusted_mrkdwn(_t("none", language))))
    for item in incidents:
        inc = item.incident
        blocks.append(section(trusted_mrkdwn(_t(
            "line", language, icon=SEVERITY_ICON.get(inc.severity, ":rotating_light:"), severity=escape(inc.severity),
            where=item.where, title=escape(clip(inc.title, 150)), state=IncidentStatus(inc.status).value,
            age=duration(now - item.started_at, language),
            commander=actor_text(inc.commander, language) if inc.commander else _t("unassigned", language)))))
    if total > len(incidents):
        blocks.append(context(trusted_mrkdwn(_t("more", language, more=total - len(incidents)))))
    blocks += [divider(), header(_t("oncall", language))]
    blocks += [section(trusted_mrkdwn(chunk)) for chunk in _chunks(oncall[1:] or oncall)]
    blocks.append(context(trusted_mrkdwn(_t("updated", language, at=slack_time(now, now)))))
    return {"type": "home", "blocks": blocks[:HOME_BLOCKS]}


def _chunks(lines: list[str]) -> list[str]:
    """Whole lines, as few sections' worth as Slack's section limit allows."""
    chunks: list[str] = []
    current: list[str] = []
    for line in lines:
        line = clip(line, LIMITS["section"])
        if current and len("\n".join([*current, line])) > LIMITS["section"]:
            chunks.append("\n".join(current))
            current = []
        current.append(line)
    if current:
        chunks.append("\n".join(current))
    return chunks
