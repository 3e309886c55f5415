"""Declaring an incident, in Block Kit: the modal (`/incident new`, the Declare incident shortcut),
what its submission says (or what to fix, as Slack's `response_action: errors` wants it), the
confirmation it turns into, and the announcement of a private incident. Pure functions, in the
asker's language for the modal (English or Japanese) and the configured one for the channel post.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.config import SEVERITIES
from bot.declare import DESCRIPTION_LIMIT, SERVICE_LIMIT, TITLE_LIMIT
from bot.models import Incident
from commands.blockkit import clip, escape, plain, section, trusted_mrkdwn
from commands.i18n import Catalog
from commands.ids import DECLARE_VIEW

__all__ = ["Prefill", "Submitted", "declare_modal", "declared_view", "failed_errors", "form_answer",
           "message_prefill", "private_announcement", "read_submission", "refusal", "refused_view"]

# The modal's inputs: each block and its element share the name (Slack keys the state by both).
TITLE, SEVERITY, SERVICE, DESCRIPTION, PRIVATE = "title", "severity", "service", "description", "private"
DEFAULT_SEVERITY = "P3"

_t = Catalog("declare", {
    "modal_title": {"en": "Declare an incident", "ja": "インシデントを宣言"},
    "submit": {"en": "Declare", "ja": "宣言する"},
    "cancel": {"en": "Cancel", "ja": "キャンセル"},
    "close": {"en": "Close", "ja": "閉じる"},
    "intro": {"en": "Opens the incident as an alert would: its channel, responders, card, runbook and escalation. "
                    "You become its commander.",
              "ja": "アラートと同じようにインシデントを開きます(チャンネル、対応者、カード、ランブック、"
                    "エスカレーション)。あなたが指揮者になります。"},
    "title": {"en": "Title", "ja": "タイトル"},
    "title_hint": {"en": "What is wrong, in a line: \"Checkout fails for card payments\"",
                   "ja": "何が起きているかを 1 行で: 「カード決済でチェックアウトが失敗する」"},
    "severity": {"en": "Severity", "ja": "重大度"},
    "P1": {"en": "P1 · critical: widespread outage", "ja": "P1 · 致命的: 広範囲の障害"},
    "P2": {"en": "P2 · major: a service down for some", "ja": "P2 · 重大: 一部でサービス停止"},
    "P3": {"en": "P3 · minor: degraded", "ja": "P3 · 軽微: 性能低下"},
    "P4": {"en": "P4 · low: no user impact yet", "ja": "P4 · 低: まだ利用者への影響なし"},
    "service": {"en": "Service", "ja": "サービス"},
    "service_hint": {"en": "As in the alerts' `service` label: responders and routes match on it.",
                     "ja": "アラートの `service` ラベルと同じ名前: 対応者とルーティングはこれで決まります。"},
    "description": {"en": "Description", "ja": "説明"},
    "private": {"en": "Visibility", "ja": "公開範囲"},
    "private_option": {"en": "Private", "ja": "非公開"},
    "private_detail": {"en": "A private channel; the announcement gives no details",
                       "ja": "非公開チャンネルを作成し、告知には詳細を載せません"},
    # errors (response_action: errors)
    "title_empty": {"en": "Give the incident a title.", "ja": "タイトルを入力してください。"},
    "title_long": {"en": "At most {limit} characters (this is {length}).",
                   "ja": "{limit} 文字以内にしてください(現在 {length} 文字)。"},
    "severity_missing": {"en": "Choose a severity.", "ja": "重大度を選んでください。"},
    "too_long": {"en": "At most {limit} characters (this is {length}).",
                 "ja": "{limit} 文字以内にしてください(現在 {length} 文字)。"},
    # after submitting
    "declared_title": {"en": "Incident declared", "ja": "宣言しました"},
    "declared": {"en": ":rotating_light: Incident #{id} is declared and you are its commander. Its channel, card "
                       "and escalation are on the way{where}.",
                 "ja": ":rotating_light: インシデント #{id} を宣言しました。あなたが指揮者です。チャンネル、カード、"
                       "エスカレーションを準備しています{where}。"},
    "where_channel": {"en": " (you are invited to its channel)", "ja": "(チャンネルに招待されます)"},
    "where_thread": {"en": " (in a thread of the announce channel)", "ja": "(告知チャンネルのスレッド)"},
    "failed": {"en": "Could not declare the incident; try again (the bot's log has the details).",
               "ja": "インシデントを宣言できませんでした。もう一度お試しください(詳細はボットのログにあります)。"},
    # `/incident new` and the shortcut, answered privately
    "form_opened": {"en": ":memo: Fill in the form to declare the incident.",
                    "ja": ":memo: フォームに入力してインシデントを宣言してください。"},
    "form_failed": {"en": "Could not open the form ({error}); run `/incident new` again.",
                    "ja": "フォームを開けませんでした({error})。もう一度 `/incident new` を実行してください。"},
    "from_message": {"en": "Declared from this message: {url}", "ja": "このメッセージから宣言: {url}"},
    # the announce channel (the configured language)
    "private_declared": {"en": ":lock: A private *{severity}* incident (#{id}) was declared. Ask its commander "
                               "{commander} for details.",
                         "ja": ":lock: 非公開の *{severity}* インシデント(#{id})が宣言されました。詳細は指揮者 "
                               "{commander} に確認してください。"},
    "private_opened": {"en": ":lock: A private *{severity}* incident (#{id}) was opened. Ask the on-call "
                             "(`/oncall`) for details.",
                       "ja": ":lock: 非公開の *{severity}* インシデント(#{id})が発生しました。詳細はオンコール担当者"
                             "(`/oncall`)に確認してください。"},
    # who may not declare (bot.policy: Act.DECLARE), at the command, the shortcut and the submission
    "refused_title": {"en": "Not declared", "ja": "宣言できません"},
    "refused_guest": {"en": ":no_entry: Guests of this workspace cannot declare incidents. Ask a member of it, or "
                            "the on-call (`/oncall`), to declare it.",
                      "ja": ":no_entry: ゲストはインシデントを宣言できません。ワークスペースのメンバーか"
                            "オンコール担当者(`/oncall`)に宣言を依頼してください。"},
    "refused_other_workspace": {"en": ":no_entry: Only members of this workspace can declare its incidents. Ask one "
                                      "of them, or the on-call (`/oncall`), to declare it.",
                                "ja": ":no_entry: このワークスペースのメンバーだけがインシデントを宣言できます。"
                                      "メンバーかオンコール担当者(`/oncall`)に宣言を依頼してください。"},
    "refused_unknown": {"en": "Could not check that you may declare an incident (Slack: {error}); try again.",
                        "ja": "インシデントを宣言できるか確認できませんでした(Slack: {error})。"
                              "もう一度お試しください。"},
})


@dataclass(frozen=True)
class Prefill:
    """What the modal opens with: the words after `/incident new`, or a message's text and link."""

    title: str = ""
    description: str = ""
    message_url: str | None = None  # the message declared from: recorded on the timeline
    via: str = "command"  # command | shortcut


def declare_modal(language: str, prefill: Prefill | None = None) -> dict[str, Any]:
    """The modal. `private_metadata` carries what the submission needs besides the inputs: the
    asker's language (its errors and confirmation are in it), how it was opened, the message."""
    prefill = prefill or Prefill()
    metadata = {"language": language, "via": prefill.via, **({"url": prefill.message_url}
                                                              if prefill.message_url else {})}
    severities = [_option(s, _t(s, language)) for s in SEVERITIES]
    private = _option(PRIVATE, _t("private_option", language), _t("private_detail", language))
    return {
        "type": "modal", "callback_id": DECLARE_VIEW, "private_metadata": clip(json.dumps(metadata), 3000),
        "title": plain(_t("modal_title", language), 24), "submit": plain(_t("submit", language), 24),
        "close": plain(_t("cancel", language), 24),
        "blocks": [
            section(trusted_mrkdwn(_t("intro", language))),
            _input(TITLE, _t("title", language), hint=_t("title_hint", language),
                   element=_text_input(TITLE, prefill.title[:TITLE_LIMIT], TITLE_LIMIT)),
            _input(SEVERITY, _t("severity", language),
                   element={"type": "static_select", "action_id": SEVERITY, "options": severities,
                            "initial_option": severities[SEVERITIES.index(DEFAULT_SEVERITY)]}),
            _input(SERVICE, _t("service", language), hint=_t("service_hint", language), optional=True,
                   element=_text_input(SERVICE, "", SERVICE_LIMIT)),
            _input(DESCRIPTION, _t("description", language), optional=True,
                   element=_text_input(DESCRIPTION, prefill.description[:DESCRIPTION_LIMIT], DESCRIPTION_LIMIT,
                                       multiline=True)),
            _input(PRIVATE, _t("private", language), optional=True,
                   element={"type": "checkboxes", "action_id": PRIVATE, "options": [private]}),
        ],
    }


def _option(value: str, text: str, description: str | None = None) -> dict[str, Any]:
    option: dict[str, Any] = {"text": plain(text, 75), "value": value}
    if description:
        option["description"] = plain(description, 75)
    return option


def _text_input(action_id: str, initial: str, limit: int, *, multiline: bool = False) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": action_id, "max_length": limit,
                               "multiline": multiline}
    if initial:
        element["initial_value"] = initial
    return element


def _input(block_id: str, label: str, *, element: dict[str, Any], hint: str | None = None,
           optional: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "input", "block_id": block_id, "label": plain(label, 2000), "element": element,
                             "optional": optional}
    if hint:
        block["hint"] = plain(hint, 2000)
    return block


@dataclass(frozen=True)
class Submitted:
    """A submitted modal: what was declared, or `errors` (block id -> what to fix) to show in it."""

    language: str
    title: str = ""
    severity: str = DEFAULT_SEVERITY
    service: str | None = None
    description: str | None = None
    private: bool = False
    message_url: str | None = None
    via: str = "command"
    errors: dict[str, str] = field(default_factory=dict)


def read_submission(view: dict[str, Any]) -> Submitted:
    """The submitted modal's inputs, checked as the domain will (bot.declare) so that every
    refusal is shown next to its input instead of failing after the modal closed."""
    try:
        metadata = json.loads(str(view.get("private_metadata") or "{}"))
    except ValueError:
        metadata = {}
    metadata = metadata if isinstance(metadata, dict) else {}
    language = "ja" if metadata.get("language") == "ja" else "en"
    values = (view.get("state") or {}).get("values") or {}

    def state(name: str) -> dict[str, Any]:
        found = (values.get(name) or {}).get(name)
        return found if isinstance(found, dict) else {}

    title = " ".join(str(state(TITLE).get("value") or "").split())  # one line, single spaces
    severity = str((state(SEVERITY).get("selected_option") or {}).get("value") or "")
    service = str(state(SERVICE).get("value") or "").strip()
    description = str(state(DESCRIPTION).get("value") or "").strip()
    private = any(o.get("value") == PRIVATE for o in state(PRIVATE).get("selected_options") or []
                  if isinstance(o, dict))
    errors: dict[str, str] = {}
    if not title:
        errors[TITLE] = _t("title_empty", language)
    elif len(title) > TITLE_LIMIT:
        errors[TITLE] = _t("title_long", language, limit=TITLE_LIMIT, length=len(title))
    if severity not in SEVERITIES:
        errors[SEVERITY] = _t("severity_missing", language)
    for name, text, limit in ((SERVICE, service, SERVICE_LIMIT), (DESCRIPTION, description, DESCRIPTION_LIMIT)):
        if len(text) > limit:
            errors[name] = _t("too_long", language, limit=limit, length=len(text))
    url = metadata.get("url")
    return Submitted(language=language, title=title, severity=severity, service=service or None,
                     description=description or None, private=private,
                     message_url=url if isinstance(url, str) else None,
                     via="shortcut" if metadata.get("via") == "shortcut" else "command", errors=errors)


def form_answer(language: str, error: str | None = None) -> str:
    """The private answer to `/incident new` (and to the shortcut when its form cannot open)."""
    return _t("form_failed", language, error=escape(error)) if error else _t("form_opened", language)


def message_prefill(text: str, url: str | None, language: str) -> Prefill:
    """The shortcut's modal: the message's text (plain) as the description, its link below it."""
    link = _t("from_message", language, url=url) if url else ""
    room = DESCRIPTION_LIMIT - len(link) - 2
    description = "\n\n".join(part for part in (clip(text.strip(), room), link) if part)
    return Prefill(description=description, message_url=url, via="shortcut")


def declared_view(incident_id: int, language: str, *, own_channel: bool) -> dict[str, Any]:
    """What the modal becomes once the incident is declared (`response_action: update`)."""
    where = _t("where_channel" if own_channel else "where_thread", language)
    return {"type": "modal", "callback_id": DECLARE_VIEW, "title": plain(_t("declared_title", language), 24),
            "close": plain(_t("close", language), 24),
            "blocks": [section(trusted_mrkdwn(_t("declared", language, id=incident_id, where=where)))]}


def failed_errors(language: str) -> dict[str, str]:
    """The modal's answer when the declaration could not be stored: said next to the title."""
    return {TITLE: _t("failed", language)}


def refusal(reason: str, language: str, *, error: str | None = None) -> str:
    """Why the asker may not declare (bot.policy's reason), and what to do instead."""
    if reason == "guest":
        return _t("refused_guest", language)
    if reason == "other_workspace":
        return _t("refused_other_workspace", language)
    return _t("refused_unknown", language, error=escape(error or "unknown_error"))


def refused_view(text: str, language: str) -> dict[str, Any]:
    """What the modal becomes when its submitter may not declare (`response_action: update`)."""
    return {"type": "modal", "callback_id": DECLARE_VIEW, "title": plain(_t("refused_title", language), 24),
            "close": plain(_t("close", language), 24), "blocks": [section(trusted_mrkdwn(text))]}


def private_announcement(incident: Incident, language: str) -> tuple[str, list[dict[str, Any]]]:
    """A private incident's line in the announce channel: that it exists, how severe, whom to
    ask; never its title, service or channel."""
    commander = incident.commander
    if commander:
        line = _t("private_declared", language, severity=escape(incident.severity), id=incident.id,
                  commander=f"<@{escape(commander)}>")
    else:
        line = _t("private_opened", language, severity=escape(incident.severity), id=incident.id)
    return line, [section(trusted_mrkdwn(line))]
