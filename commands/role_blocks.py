"""Roles and status updates as Slack shows them: pure builders, no I/O (commands.roles uses them).

The card's roles line (commands.cards), the `/incident update` modal and what its submission
reads back, and the status update message posted in the incident's channel and in the
announcement's thread. Channel posts and the card are in the configured language
(`runbooks.locale`); the modal in the asker's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.card_view import CardView
from bot.models import Incident
from bot.roles import ROLES, UPDATE_FIELDS, UPDATE_LIMIT, Role, StatusUpdate, holder
from commands.blockkit import LIMITS, clip, context, escape, mrkdwn, plain, section, trusted_mrkdwn
from commands.i18n import Catalog
from commands.ids import STATUS_UPDATE_VIEW
from commands.notices import mention
from commands.slack_time import ago, slack_time

__all__ = ["ROLE_NAMES", "Submitted", "read_update", "role_blocks", "role_name", "update_message", "update_modal"]

ROLE_NAMES: dict[Role, dict[str, str]] = {
    "commander": {"en": "commander", "ja": "指揮者"},
    "scribe": {"en": "scribe", "ja": "記録係"},
    "comms": {"en": "comms", "ja": "広報担当"},
}

_t = Catalog("role_blocks", {
    "nobody": {"en": "—", "ja": "—"},
    "last_update": {"en": ":memo: last update {ago}", "ja": ":memo: 最終の状況報告 {ago}"},
    "no_update": {"en": ":memo: no status update yet (`/incident update`)",
                  "ja": ":memo: 状況報告はまだありません(`/incident update`)"},
    "modal_title": {"en": "Status update", "ja": "状況報告"},
    "modal_submit": {"en": "Post", "ja": "投稿"},
    "modal_close": {"en": "Cancel", "ja": "キャンセル"},
    "modal_intro": {"en": "Incident #{id} · *{severity}* · {title}\nPosted in the incident's channel and in the "
                          "announcement's thread. Fill in at least one.",
                    "ja": "インシデント #{id} · *{severity}* · {title}\nインシデントのチャンネルと告知のスレッドに"
                          "投稿します。少なくとも 1 つ記入してください。"},
    "known": {"en": "What is known", "ja": "分かっていること"},
    "impact": {"en": "Impact", "ja": "影響"},
    "next_steps": {"en": "Next steps", "ja": "次の対応"},
    "message_title": {"en": ":mega: *Status update* · incident #{id} · {severity} · by {who}",
                      "ja": ":mega: *状況報告* · インシデント #{id} · {severity} · {who}"},
    "message_where": {"en": "Worked in {channel}", "ja": "対応チャンネル: {channel}"},
    "message_text": {"en": "Status update for incident #{id}", "ja": "インシデント #{id} の状況報告"},
})


def role_name(role: Role, language: str) -> str:
    names = ROLE_NAMES[role]
    return names.get(language, names["en"])


# -- the card ---------------------------------------------------------------------------------------

def role_blocks(view: CardView) -> list[dict[str, Any]]:
    """One line: who holds each role, and when the last status update was posted."""
    inc, language = view.incident, view.locale
    people = " · ".join(f"*{role_name(role, language).capitalize()}* "
                        + (mention(who) if (who := holder(inc, role)) else _t("nobody", language))
                        for role in ROLES)
    update = _t("last_update", language, ago=ago(view.last_update_at, view.now)) \
        if view.last_update_at is not None else _t("no_update", language) if inc.is_open else ""
    line = f":busts_in_silhouette: {people}" + (f" · {update}" if update else "")
    return [context(trusted_mrkdwn(clip(line, LIMITS["section"])))]


# -- the modal ---------------------------------------------------------------------------------------

def update_modal(incident: Incident, user: str, language: str) -> dict[str, Any]:
    """What is known, impact, next steps: three multiline inputs, each optional to Slack (the
    submission checks that one is filled, and says so in the modal). `private_metadata` names the
    incident by its card token, the person it was opened for and their language."""
    intro = _t("modal_intro", language, id=incident.id, severity=escape(incident.severity),
               title=escape(clip(incident.title, 200)))
    metadata = json.dumps({"incident": incident.card_token, "user": user, "language": language})
    return {"type": "modal", "callback_id": STATUS_UPDATE_VIEW, "private_metadata": metadata,
            "title": plain(_t("modal_title", language), 24), "submit": plain(_t("modal_submit", language), 24),
            "close": plain(_t("modal_close", language), 24),
            "blocks": [section(trusted_mrkdwn(intro)),
                       *(_input(name, language) for name in UPDATE_FIELDS)]}


def _input(name: str, language: str) -> dict[str, Any]:
    return {"type": "input", "block_id": name, "optional": True, "label": plain(_t(name, language), 2000),
            "element": {"type": "plain_text_input", "action_id": name, "multiline": True,
                        "max_length": UPDATE_LIMIT}}


@dataclass(frozen=True)
class Submitted:
    """A submitted update modal, read back: the incident's card token, who it was opened for,
    their language, and the three fields (empty when left blank)."""

    token: str
    user: str
    language: str
    fields: dict[str, str]

    @property
    def empty(self) -> bool:
        return not any(self.fields.values())


def read_update(view: dict[str, Any]) -> Submitted:
    try:
        meta = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    values = (view.get("state") or {}).get("values") or {}
    fields = {name: str(((values.get(name) or {}).get(name) or {}).get("value") or "").strip()[:UPDATE_LIMIT]
              for name in UPDATE_FIELDS}
    return Submitted(token=str(meta.get("incident", "")), user=str(meta.get("user", "")),
                     language=str(meta.get("language", "en")), fields=fields)


# -- the message -------------------------------------------------------------------------------------

def update_message(update: StatusUpdate, incident: Incident, locale: str, *,
                   in_announcement: bool) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of a status update, in `locale`; in the announcement's thread it
    also names the incident's channel."""
    title = _t("message_title", locale, id=incident.id, severity=escape(incident.severity), who=mention(update.author))
    title += f" · {slack_time(update.at)}"
    blocks = [section(trusted_mrkdwn(title))]
    for name in UPDATE_FIELDS:
        value = getattr(update, name)
        if value:
            label = f"*{_t(name, locale)}*\n"
            blocks.append(section(trusted_mrkdwn(label + mrkdwn(value, LIMITS["section"] - len(label))["text"])))
    if in_announcement and incident.channel_id:
        blocks.append(context(trusted_mrkdwn(_t("message_where", locale, channel=f"<#{incident.channel_id}>"))))
    first = next((getattr(update, name) for name in UPDATE_FIELDS if getattr(update, name)), "")
    text = f"{_t('message_text', locale, id=incident.id)}: {escape(clip(first, 300))}"
    return clip(text, LIMITS["text"]), blocks
