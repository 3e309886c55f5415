"""The runbook posted in an incident channel: pure Block Kit builders, within Slack's limits.

Each step is a section (title and Markdown text) with a button and a context line (what the
button does, or why it is disabled). Buttons carry only the opaque id the caller gives; the
server looks the step up by it. A long runbook is split across messages of at most 50 blocks,
and a step's blocks never straddle two messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bot.actions import get_action
from bot.runbook_format import Runbook, localized
from bot.runbooks import PreparedStep
from commands.blockkit import (
    LIMITS,
    MARK,
    button,
    clip,
    context,
    escape,
    header,
    plain,
    safe_url,
    section,
    trusted_mrkdwn,
)
from commands.i18n import Catalog
from commands.ids import runbook_step_action, runbook_step_block

__all__ = ["markdown_to_mrkdwn", "no_runbook_blocks", "runbook_fallback_text", "runbook_message_parts",
           "runbook_messages"]

_CONTEXT_TEXT = 2000
_PARAM_VALUE = 80

_t = Catalog("runbook_blocks", {
    "run": {"en": "Run", "ja": "実行"},
    "request": {"en": "Request approval", "ja": "承認を依頼"},
    "diagnostic": {"en": "Diagnostic", "ja": "診断"},
    "remediation": {"en": "Remediation", "ja": "対処"},
    "risk": {"en": "risk", "ja": "リスク"},
    "needs_approval": {"en": "needs approval", "ja": "要承認"},
    "disabled": {"en": "Disabled", "ja": "無効"},
    "expert": {"en": "expert only", "ja": "専門家のみ"},
    "continued": {"en": "continued", "ja": "続き"},
    "runbook_link": {"en": "Runbook", "ja": "ランブック"},
    "steps": {"en": "steps", "ja": "ステップ"},
    "confirm_title": {"en": "Request approval?", "ja": "承認を依頼しますか？"},
    "confirm_text": {"en": "Another responder must approve before it runs.",
                     "ja": "実行前に別の対応者の承認が必要です。"},
    "confirm_text_high": {"en": "An expert must approve before it runs.",
                          "ja": "実行前に専門家の承認が必要です。"},
    "confirm_text_low": {"en": "It runs once approved (by another responder, or by you where the policy lets "
                               "requesters approve low-risk remediations).",
                         "ja": "承認後に実行されます(別の対応者、またはポリシーが許す場合は依頼者本人)。"},
    "confirm": {"en": "Request", "ja": "依頼する"},
    "deny": {"en": "Cancel", "ja": "キャンセル"},
    "no_runbook": {"en": "No runbook matches *{alert}*. Type `/runbook list` to see the runbooks, or add one "
                         "to a directory in RUNBOOKS_PATH.",
                   "ja": "*{alert}* に一致するランブックはありません。`/runbook list` で一覧を確認するか、"
                         "RUNBOOKS_PATH のディレクトリに追加してください。"},
})
_ICONS = {"diagnostic": ":mag:", "remediation": ":wrench:", "info": ":memo:"}


# -- text -------------------------------------------------------------------------------------------

def markdown_to_mrkdwn(text: str) -> str:
    """The common Markdown of runbooks in Slack's mrkdwn: escaped, **bold**, [links](url), headings,
    bullets; fenced code kept as is (escaped only)."""
    out, in_code = [], False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
            out.append("```")
            continue
        line = escape(line)
        if not in_code:
            line = re.sub(r"^#{1,6}\s+(.*)$", r"*\1*", line)
            line = re.sub(r"^(\s*)[-*]\s+", r"\1• ", line)
            line = re.sub(r"\*\*(.+?)\*\*", r"*\1*", line)
            line = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", _link, line)
        out.append(line)
    return "\n".join(out)


def _link(match: re.Match[str]) -> str:
    url = safe_url(match[2])
    return f"<{url}|{match[1]}>" if url else match[0]


def _clip_mrkdwn(text: str, limit: int) -> str:
    """Cut escaped mrkdwn: never inside an entity or a <link>, and close an open code fence."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(MARK) - 4]
    cut = re.sub(r"&[a-z]{0,4}$", "", cut)
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    return cut + MARK + ("\n```" if cut.count("```") % 2 else "")


def _params_text(prepared: PreparedStep) -> str:
    if prepared.params is None:
        return ""
    values = prepared.params.model_dump(exclude_none=True)
    shown = [f"{name}={value}" if len(str(value)) <= _PARAM_VALUE else f"{name}={str(value)[:_PARAM_VALUE - 1]}{MARK}"
             for name, value in values.items()]
    return ", ".join(shown)


# -- one step -------------------------------------------------------------------------------------------

def _section_text(prepared: PreparedStep, locale: str | None) -> str:
    step = prepared.step
    badge = f" :warning: _{_t('expert', locale)}_" if prepared.risk == "high" and prepared.kind == "info" else ""
    title = f"{_ICONS[prepared.kind]} *{prepared.index + 1}. {escape(localized(step.title, locale))}*{badge}"
    return _clip_mrkdwn(f"{title}\n{markdown_to_mrkdwn(localized(step.text, locale))}", LIMITS["section"])


def _context_text(prepared: PreparedStep, locale: str | None) -> str:
    parts = [_t(prepared.kind, locale), f"`{prepared.action}`"]
    if prepared.kind == "remediation":
        parts.append(f"{_t('risk', locale)}: *{prepared.risk}* · {_t('needs_approval', locale)}")
    if prepared.error:
        parts.append(f":no_entry_sign: {_t('disabled', locale)}: {escape(prepared.error)}")
    elif prepared.params is not None:
        parts.append(escape(_params_text(prepared)))
    return _clip_mrkdwn(" · ".join(parts), _CONTEXT_TEXT)


def _confirm(prepared: PreparedStep, locale: str | None) -> dict[str, Any]:
    spec = get_action(prepared.action or "")
    label = localized(spec.label, locale) if spec else prepared.action or ""
    why = {"high": "confirm_text_high", "low": "confirm_text_low"}.get(prepared.risk or "", "confirm_text")
    text = f"{label}: {_params_text(prepared)}. {_t('risk', locale)}: {prepared.risk}. {_t(why, locale)}"
    dialog: dict[str, Any] = {"title": plain(_t("confirm_title", locale), 100), "text": plain(text, 300),
                              "confirm": plain(_t("confirm", locale), 30), "deny": plain(_t("deny", locale), 30)}
    if prepared.risk == "high":
        dialog["style"] = "danger"
    return dialog


def _button(prepared: PreparedStep, locale: str | None, value: str) -> dict[str, Any]:
    if len(value) > LIMITS["button_value"]:
        raise ValueError("button_id returned more than 2000 characters; it must be a short opaque id")
    if prepared.kind == "diagnostic":
        return button(_t("run", locale), runbook_step_action(prepared.index), value)
    style = "danger" if prepared.risk == "high" else None
    return button(_t("request", locale), runbook_step_action(prepared.index), value, style=style,
                  confirm=_confirm(prepared, locale))


def _step_blocks(prepared: PreparedStep, locale: str | None, button_id: Callable[[int], str],
                 note: str | None) -> list[dict[str, Any]]:
    """One section, plus one context for a step with an action (always, so a re-render with notes
    keeps every step in the same message)."""
    block_id = runbook_step_block(prepared.index)
    accessory = _button(prepared, locale, button_id(prepared.index)) if prepared.enabled else None
    blocks = [section(trusted_mrkdwn(_section_text(prepared, locale)), accessory=accessory, block_id=block_id)]
    if prepared.action is not None:
        elements = [trusted_mrkdwn(_context_text(prepared, locale), _CONTEXT_TEXT)]
        if note:
            elements.append(trusted_mrkdwn(note, _CONTEXT_TEXT))
        blocks.append({**context(*elements), "block_id": f"{block_id}_context"})
    return blocks


# -- messages ---------------------------------------------------------------------------------------------

def _intro(runbook: Runbook, steps: int, locale: str | None, runbook_url: str | None) -> list[dict[str, Any]]:
    blocks = [header(localized(runbook.title, locale))]
    if runbook.description:
        blocks.append(section(trusted_mrkdwn(_clip_mrkdwn(markdown_to_mrkdwn(localized(runbook.description, locale)),
                                                          LIMITS["section"]))))
    facts = [f"`{runbook.id}` · {steps} {_t('steps', locale)}"]
    url = safe_url(runbook_url)
    if url:
        facts.append(f":book: <{url}|{_t('runbook_link', locale)}>")
    blocks.append(context(trusted_mrkdwn(" · ".join(facts))))
    return blocks


def runbook_messages(runbook: Runbook, prepared_steps: Sequence[PreparedStep], *, locale: str | None,
                     button_id: Callable[[int], str], runbook_url: str | None = None,
                     notes: Mapping[int, str] | None = None) -> list[list[dict[str, Any]]]:
    """The runbook as one or more messages (lists of blocks), in posting order."""
    return [blocks for blocks, _ in runbook_message_parts(runbook, prepared_steps, locale=locale, button_id=button_id,
                                                          runbook_url=runbook_url, notes=notes)]


def runbook_message_parts(runbook: Runbook, prepared_steps: Sequence[PreparedStep], *, locale: str | None,
                          button_id: Callable[[int], str], runbook_url: str | None = None,
                          notes: Mapping[int, str] | None = None) -> list[tuple[list[dict[str, Any]], list[int]]]:
    """The runbook as one or more messages, in posting order: each its blocks and the indices
    of the steps it holds (so a re-render updates each step in the message it is in).

    `button_id(step_index)` gives the opaque value of that step's button. `notes` are trusted
    mrkdwn lines per step index composed by the caller (e.g. "ran by <@U1> at 12:03")."""
    messages = [_intro(runbook, len(prepared_steps), locale, runbook_url)]
    indices: list[list[int]] = [[]]
    for prepared in prepared_steps:
        blocks = _step_blocks(prepared, locale, button_id, (notes or {}).get(prepared.index))
        if len(messages[-1]) + len(blocks) > LIMITS["blocks"]:
            messages.append([{}])  # room for the continuation line, filled in below
            indices.append([])
        messages[-1].extend(blocks)
        indices[-1].append(prepared.index)
    title = escape(localized(runbook.title, locale))
    for number, blocks in enumerate(messages[1:], start=2):
        line = _clip_mrkdwn(f"*{title}* · {_t('continued', locale)} ({number}/{len(messages)})", _CONTEXT_TEXT)
        blocks[0] = context(trusted_mrkdwn(line))
    return list(zip(messages, indices, strict=True))


def runbook_fallback_text(runbook: Runbook, locale: str | None) -> str:
    """The notification text of the runbook messages (chat.postMessage `text`)."""
    return clip(f"Runbook: {escape(localized(runbook.title, locale))}", LIMITS["text"])


def no_runbook_blocks(alertname: str, *, locale: str | None = None) -> list[dict[str, Any]]:
    text = _t("no_runbook", locale).format(alert=escape(alertname[:200]))
    return [section(trusted_mrkdwn(f":grey_question: {text}"))]
