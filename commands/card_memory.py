"""Three parts of the incident card, pure builders from a `CardView` (bot.card_view) to Block
Kit, in the card's language (`runbooks.locale`): the last incidents like it and what ended them
(bot.card_memory.past_incidents), its newest remediations with their status and rollout, and the
buttons for the states it is likely to move to next. commands.cards places them on the card.

Every untrusted value (action parameters, denial reasons, results) is escaped; each context
line is cut to a size that keeps the block within Slack's limit whatever it holds.
"""

from __future__ import annotations

from typing import Any

from bot.actions import get_action
from bot.card_memory import REMEDIATIONS_SHOWN, PastIncident, likely_next
from bot.card_view import CardView
from bot.models import ApprovalRequest, IncidentStatus
from commands.approval_blocks import step_note
from commands.blockkit import LIMITS, button, clip, context, escape, trusted_mrkdwn
from commands.i18n import Catalog, language_of
from commands.ids import CARD_STATES_BLOCK, card_state_action
from commands.slack_time import duration, slack_time

__all__ = ["past_incident_blocks", "remediation_blocks", "state_button_blocks"]

LINE = 950  # characters of one line at most: a title and three lines fit one context element (3000)
TARGET = 100  # characters of the object an action names (a deployment, a pod, matchers)
# The parameter naming what an action acts on, the first one it has.
_TARGET_KEYS = ("deployment", "pod", "node", "name", "matchers", "url", "query", "namespace")

_t = Catalog("card_memory", {
    "past_title": {"en": ":bulb: *Seen before* (the same alert on the same service, last resolved first):",
                   "ja": ":bulb: *過去の同様のインシデント*(同じサービスの同じアラート、解決が新しい順):"},
    "past_line": {"en": "{when} {where}: resolved in {lasted}", "ja": "{when} {where}: {lasted} で解決"},
    "last_time": {"en": "last time: {what}", "ja": "前回: {what}"},
    "step": {"en": "runbook step `{step}` ({label})", "ja": "Runbook の手順 `{step}`({label})"},
    "remediations_title": {"en": ":wrench: *Remediations* (newest first):", "ja": ":wrench: *対処*(新しい順):"},
})
# The state buttons' words; the `/incident state` word is the value itself.
_STATE_LABELS: dict[str, dict[IncidentStatus, str]] = {
    "en": {IncidentStatus.TRIAGED: "Triaged", IncidentStatus.INVESTIGATING: "Investigating",
           IncidentStatus.ESCALATED: "Escalated", IncidentStatus.IDENTIFIED: "Identified",
           IncidentStatus.MITIGATING: "Mitigating"},
    "ja": {IncidentStatus.TRIAGED: "トリアージ済み", IncidentStatus.INVESTIGATING: "調査中",
           IncidentStatus.ESCALATED: "エスカレーション", IncidentStatus.IDENTIFIED: "原因特定",
           IncidentStatus.MITIGATING: "緩和中"},
}



def _fit(text: str, limit: int = LINE) -> str:
    """Composed mrkdwn cut to `limit` characters without splitting a `<…>` token, an entity or
    a code span."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 2]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    if cut.rfind("&") > cut.rfind(";"):
        cut = cut[: cut.rfind("&")]
    return cut + ("`…" if cut.count("`") % 2 else "…")


def _code(value: Any) -> str:
    """An untrusted value in a code span: escaped, cut, its backticks made harmless."""
    return f"`{escape(clip(str(value).replace('`', chr(39)), TARGET))}`"


def action_text(action: str | None, params: dict[str, Any], locale: str | None) -> str:
    """`Roll back deployment `api``: the action's label in the card's language and what it acts on."""
    spec = get_action(action or "")
    label = spec.label.get(language_of(locale), spec.label["en"]) if spec else _code(action or "?")
    target = next((params[key] for key in _TARGET_KEYS if params.get(key) not in (None, "", [], {})), None)
    return f"{label} {_code(target)}" if target is not None else label


# -- the last incidents like it ------------------------------------------------------------------------

def past_incident_blocks(view: CardView) -> list[dict[str, Any]]:
    if not view.past:
        return []
    lines = [_t("past_title", view.locale)] + ["• " + _fit(_past_line(past, view)) for past in view.past]
    return [context(trusted_mrkdwn("\n".join(lines)))]


def _past_line(past: PastIncident, view: CardView) -> str:
    where = f"#{past.id}" + (f" <#{past.channel_id}>" if past.channel_id else "")
    line = _t("past_line", view.locale, when=slack_time(past.opened_at, view.now), where=where,
              lasted=duration(past.resolved_at - past.opened_at, view.locale))
    if past.kind == "remediation":
        what = action_text(past.action, past.params, view.locale)
    elif past.kind == "step":
        spec = get_action(past.action or "")
        label = spec.label.get(language_of(view.locale), spec.label["en"]) if spec else escape(past.action or "?")
        what = _t("step", view.locale, step=escape(clip((past.step_id or "?").replace("`", "'"), TARGET)),
                  label=label)
    else:
        return line
    return f"{line} · {_t('last_time', view.locale, what=what)}"


# -- its remediations ----------------------------------------------------------------------------------

def remediation_blocks(view: CardView) -> list[dict[str, Any]]:
    """Its newest remediation requests (as many as bot.card_memory reads), newest first: what,
    and the status line its runbook step shows (commands.approval_blocks.step_note: awaiting
    approval, running, done with the rollout's state, failed, denied, expired)."""
    if not view.remediations:
        return []
    assert view.now is not None, "a card is rendered at a time"
    lines = [_t("remediations_title", view.locale)]
    lines += ["• " + _fit(_remediation_line(r, view)) for r in view.remediations[:REMEDIATIONS_SHOWN]]
    return [context(trusted_mrkdwn("\n".join(lines), LIMITS["section"]))]


def _remediation_line(request: ApprovalRequest, view: CardView) -> str:
    assert view.now is not None
    return f"{action_text(request.action, request.params, view.locale)}: {step_note(request, view.now, view.locale)}"


# -- the state buttons -----------------------------------------------------------------------------------

def state_button_blocks(view: CardView, value: str) -> list[dict[str, Any]]:
    """Buttons for the states it is likely to move to next (bot.card_memory.likely_next), in an
    actions block of their own. Each carries the card's `value` (commands.cards.card_button_value:
    the middleware finds the incident by it) and an action id naming the state the card shows
    and the one offered."""
    incident = view.incident
    offered = likely_next(incident) if incident.is_open else []
    if not offered:
        return []
    shown = IncidentStatus(incident.status).value
    labels = _STATE_LABELS[language_of(view.locale)]
    elements = [button(f"→ {labels.get(state, state.value)}" + ("" if language_of(view.locale) == "en"
                                                                else f" ({state.value})"),
                       card_state_action(shown, state.value), value) for state in offered]
    return [{"type": "actions", "block_id": CARD_STATES_BLOCK, "elements": elements}]
