"""`/incident postmortem` and the two jobs it leads to: the document posted as a file, the
channel archived.

The subcommand is one entry of commands.incident_command (`postmortem_change`): the policy and
the locked transaction are that module's, the change is bot.postmortem_ops.write with the
document rendered by commands.postmortem_doc, and the answer is worded here in the asker's
language. The Slack side runs from the outbox:

* `postmortem.post` uploads one stored version (files.getUploadURLExternal, the bytes,
  files.completeUploadExternal) in the incident's channel, with a comment in the configured
  language (`runbooks.locale`). Its file name is that version's alone
  (`postmortem-<incident key>-v<version>.md`), so a retry after a crash or a lost answer first
  looks for a file of that name in the channel (the newest 1,000 messages) and uploads only when
  there is none. The remaining risk: Slack shares an upload a moment after answering, so a retry
  within that moment may not see it yet and post the version twice.
* `postmortem.archive`, due `postmortem.archive_after_days` after the move to postmortem, says
  so in the channel and archives it (an archived channel stays readable, and is not archived
  twice); the days are read again when it runs, so a longer setting waits longer and 0 stops it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from bot import postmortem_ops
from bot.config import OncallConfig
from bot.db import Database
from bot.jobs import JOB_POSTMORTEM_ARCHIVE, JOB_POSTMORTEM_POST
from bot.models import Incident, IncidentStatus, Job, Postmortem
from bot.outbox import PermanentError, RetryLater
from commands.feature import Feature
from commands.i18n import Catalog
from commands.notices import mention
from commands.postmortem_doc import build, section_title
from commands.slack_sync import message_tag, post_once, waiting_for_setup
from commands.slack_time import slack_time
from commands.slash import Answer
from integrations.slack import SlackClient, SlackError

__all__ = ["PostmortemJobs", "file_name", "postmortem_change"]

log = logging.getLogger(__name__)

_t = Catalog("postmortem", {
    # answers to `/incident postmortem` (the asker's language)
    "not_resolved": {"en": "Incident #{id} is *{state}*: a post-mortem is written once it is resolved. Resolve it "
                           "first (`/incident resolve`), then run `/incident postmortem` again.",
                     "ja": "インシデント #{id} は *{state}* です。ポストモーテムは解決してから作成します。"
                           "先に解決して(`/incident resolve`)、もう一度 `/incident postmortem` を実行してください。"},
    "written": {"en": ":page_facing_up: Post-mortem of incident #{id}, version {version}: it is being posted in this "
                      "channel as a Markdown file. The root cause and the action items are for you to write.",
                "ja": ":page_facing_up: インシデント #{id} のポストモーテム第 {version} 版を、Markdown "
                      "ファイルとしてこのチャンネルに投稿しています。根本原因と対応事項は記入してください。"},
    "moved": {"en": "State resolved → *postmortem*.", "ja": "状態を resolved → *postmortem* に変更しました。"},
    "changed": {"en": "Changed since version {previous}: {sections}.",
                "ja": "第 {previous} 版から変わったセクション: {sections}。"},
    "unchanged": {"en": "Nothing changed since version {previous}.", "ja": "第 {previous} 版から変更はありません。"},
    "archive_at": {"en": "This channel is archived {at} (`postmortem.archive_after_days`).",
                   "ja": "このチャンネルは {at} にアーカイブされます(`postmortem.archive_after_days`)。"},
    "archive_off": {"en": "This channel is not archived (`postmortem.archive_after_days` is 0).",
                    "ja": "このチャンネルはアーカイブされません(`postmortem.archive_after_days` は 0)。"},
    # in the channel (the configured language)
    "comment": {"en": ":page_facing_up: Post-mortem of incident #{id}, version {version}, written by {who}. The root "
                      "cause and the action items are _to be written_.",
                "ja": ":page_facing_up: インシデント #{id} のポストモーテム第 {version} 版({who} が作成)。"
                      "根本原因と対応事項は _未記入_ です。"},
    "file_title": {"en": "Post-mortem of incident #{id}, version {version}",
                   "ja": "インシデント #{id} のポストモーテム 第 {version} 版"},
    "archiving": {"en": ":file_cabinet: The post-mortem of incident #{id} was written {days} day(s) ago: archiving "
                        "this channel (`postmortem.archive_after_days`). It stays readable.",
                  "ja": ":file_cabinet: インシデント #{id} のポストモーテム作成から {days} 日が経ちました。"
                        "このチャンネルをアーカイブします(`postmortem.archive_after_days`)。閲覧は引き続き可能です。"},
})


def _sections(keys: list[str] | tuple[str, ...], language: str) -> str:
    return ", ".join(section_title(key, language) for key in keys)


def postmortem_change(config: OncallConfig, user: str, language: str
                      ) -> Callable[[Session, Incident, datetime], Answer]:
    """`/incident postmortem` as a change for commands.incident_command (run under the incident's
    lock, after the policy allowed it)."""
    def change(session: Session, incident: Incident, now: datetime) -> Answer:
        written = postmortem_ops.write(session, incident, user, language, now, config, build)
        if written is None:
            return Answer(_t("not_resolved", language, id=incident.id, state=IncidentStatus(incident.status).value))
        lines = [_t("written", language, id=incident.id, version=written.row.version)]
        if written.moved:
            lines.append(_t("moved", language))
        if written.previous is not None:
            lines.append(_t("changed", language, previous=written.previous,
                            sections=_sections(written.changed, language)) if written.changed
                         else _t("unchanged", language, previous=written.previous))
        if written.archive_at is not None:
            lines.append(_t("archive_at", language, at=slack_time(written.archive_at, now)))
        elif not config.postmortem.archive_after_days:
            lines.append(_t("archive_off", language))
        return Answer("\n".join(lines))

    return change


def file_name(incident: Incident, version: int) -> str:
    """The name of a version's file: unique to the incident (across database resets) and version."""
    return f"postmortem-{message_tag(incident, 'postmortem')['incident']}-v{version}.md"


class PostmortemJobs:
    def __init__(self, db: Database, config: OncallConfig, slack: SlackClient, *,
                 clock: Callable[[], datetime]) -> None:
        self.db, self.config, self.slack, self.clock = db, config, slack, clock
        self.locale = config.runbooks.locale

    def feature(self) -> Feature:
        return Feature(handlers=waiting_for_setup({JOB_POSTMORTEM_POST: self.post,
                                                   JOB_POSTMORTEM_ARCHIVE: self.archive},
                                                  self.config.channels.announce))

    async def post(self, job: Job) -> None:
        row, incident = await asyncio.to_thread(self._load, job.payload.get("postmortem"))
        if row.posted_at is not None:
            return
        if not incident.channel_id:
            raise PermanentError(f"incident {incident.id} has no channel to post its post-mortem in")
        name = file_name(incident, row.version)
        found = await self.slack.find_file(incident.channel_id, name) if job.attempts > 1 else None
        if found is not None:
            log.info("found the post-mortem an earlier attempt uploaded", extra={"incident": incident.id,
                                                                                  "file": found})
        else:
            comment = _t("comment", self.locale, id=incident.id, version=row.version, who=mention(row.generated_by))
            if job.payload.get("previous"):
                changed = list(job.payload.get("changed") or [])
                comment += " " + (_t("changed", self.locale, previous=job.payload["previous"],
                                     sections=_sections(changed, self.locale)) if changed
                                  else _t("unchanged", self.locale, previous=job.payload["previous"]))
            found = await self.slack.upload_file(
                incident.channel_id, row.markdown.encode("utf-8"), name,
                title=_t("file_title", self.locale, id=incident.id, version=row.version), comment=comment)
        await asyncio.to_thread(self._posted, row.id, found)
        log.info("post-mortem posted", extra={"incident": incident.id, "version": row.version})

    async def archive(self, job: Job) -> None:
        incident = await asyncio.to_thread(self._incident, job.incident_id)
        channel = str(job.payload.get("channel") or incident.channel_id or "")
        days = self.config.postmortem.archive_after_days
        if not days or not channel:
            log.info("channel not archived: postmortem.archive_after_days is 0", extra={"incident": incident.id})
            return
        due = datetime.fromisoformat(str(job.payload["since"])) + timedelta(days=days)
        wait = (due - self.clock()).total_seconds()
        if wait > 0:  # the setting grew since the job was queued
            raise RetryLater(f"archiving the channel at {due.isoformat()}", wait)
        try:
            await post_once(self.slack, channel, _t("archiving", self.locale, id=incident.id, days=days),
                            retry=job.attempts > 1, tag=message_tag(incident, "archive_notice"))
        except SlackError as exc:
            if exc.error != "is_archived":
                raise
            log.info("channel already archived by someone", extra={"incident": incident.id, "channel": channel})
            return
        await self.slack.archive_channel(channel)  # False: archived already (an earlier attempt)
        await asyncio.to_thread(self._archived, incident.id, channel, days)
        log.info("incident channel archived", extra={"incident": incident.id, "channel": channel})

    # -- storage -------------------------------------------------------------------------------------

    def _load(self, postmortem_id: Any) -> tuple[Postmortem, Incident]:
        with self.db.read() as session:
            row = session.get(Postmortem, postmortem_id)
            incident = session.get(Incident, row.incident_id) if row is not None else None
            if row is None or incident is None:
                raise PermanentError(f"post-mortem {postmortem_id} does not exist")
            return row, incident

    def _incident(self, incident_id: int | None) -> Incident:
        with self.db.read() as session:
            incident = session.get(Incident, incident_id)
            if incident is None:
                raise PermanentError(f"incident {incident_id} does not exist")
            return incident

    def _posted(self, postmortem_id: int | None, file_id: str | None) -> None:
        with self.db.session() as session:
            postmortem_ops.posted(session, postmortem_id or 0, file_id, self.clock())

    def _archived(self, incident_id: int | None, channel: str, days: int) -> None:
        with self.db.session() as session:
            incident = session.get(Incident, incident_id, with_for_update=True)
            if incident is not None:
                postmortem_ops.archived(session, incident, channel, self.clock(), days=days)
