"""A storm incident's card body (bot.storm): what the storm is, its counts by severity and
alertname, and a live table of its groups, each with a Split out button while it fires.

The table is cut to the blocks the rest of the card leaves (a message holds 50 blocks) and says
how many groups it does not show; the counts always cover them all.
"""

from __future__ import annotations

import re
from typing import Any

from bot import storm
from bot.card_view import CardView
from bot.models import StormMember
from commands.blockkit import LIMITS, button, clip, context, divider, escape, section, trusted_mrkdwn
from commands.i18n import Catalog

__all__ = ["MAX_ROWS", "STORM_SPLIT", "read_split_value", "split_card_value", "split_value", "storm_blocks",
           "storm_heading"]

# A row's Split out button (commands.card_buttons): one action id per group, since Slack wants
# the action ids of one message distinct.
_SPLIT_PREFIX = "incident_storm_split:"
STORM_SPLIT = re.compile(f"^{re.escape(_SPLIT_PREFIX)}[0-9]+$")
MAX_ROWS = 25  # rows at most, however much room the card leaves
NAMES_SHOWN = 10  # alertnames in the counts line
TITLE_SHOWN = 200  # characters of a group's title in its row

_SEVERITY_ICON = {"P1": ":red_circle:", "P2": ":large_orange_circle:", "P3": ":large_yellow_circle:",
                  "P4": ":large_blue_circle:"}

_t = Catalog("storm_blocks", {
    "heading": {"en": "{severity} · Alert storm: {groups} group(s)",
                "ja": "{severity} · アラートストーム: {groups} グループ"},
    "summary": {"en": ":thunder_cloud_and_rain: *Alert storm*: more than {max} incidents in {minutes} min, so new "
                      "alert groups join this incident instead of opening channels. {firing} firing · {resolved} "
                      "resolved. Each is recorded and paged through this incident; split one out to give it its own.",
                "ja": ":thunder_cloud_and_rain: *アラートストーム*: {minutes} 分間に {max} 件を超える"
                      "インシデントが開いたため、新しいアラートグループはチャンネルを作らずこのインシデントに"
                      "加わります。発火中 {firing} · 解決済み {resolved}。すべて記録され、このインシデントで"
                      "呼び出します。個別に対応するには分離してください。"},
    "by_severity": {"en": "*By severity*: {counts}", "ja": "*重大度別*: {counts}"},
    "by_alertname": {"en": "*By alertname*: {counts}", "ja": "*アラート名別*: {counts}"},
    "more_names": {"en": " · …{count} more", "ja": " · …ほか {count} 件"},
    # The group's number is what `/incident split <number>` takes.
    "row": {"en": "{icon} *{severity}* {title}\n{firing} of {alerts} alert(s) firing · {state} · group {group}",
            "ja": "{icon} *{severity}* {title}\n{alerts} 件中 {firing} 件発火中 · {state} · グループ {group}"},
    "firing": {"en": ":fire: firing", "ja": ":fire: 発火中"},
    "resolved": {"en": ":white_check_mark: resolved", "ja": ":white_check_mark: 解決済み"},
    "split": {"en": "Split out", "ja": "分離"},
    "more_groups": {"en": "…and {count} more group(s) not shown (the counts above include them)",
                    "ja": "…ほか {count} グループは表示していません(上の件数には含まれます)"},
    "no_groups": {"en": "No group is left in the storm.", "ja": "ストームに残っているグループはありません。"},
})


def storm_heading(view: CardView) -> str:
    """The card's header: the group count in the card's language (the stored title is English)."""
    return _t("heading", view.locale, severity=view.incident.severity, groups=len(view.storm or []))


def storm_blocks(view: CardView, room: int, card_value: str) -> list[dict[str, Any]]:
    """At most `room` blocks: a divider, the summary, the counts, then a row per group (as many
    as fit, at most MAX_ROWS) and a line saying how many were left out."""
    rows, locale = view.storm or [], view.locale
    counts = storm.tally(rows)
    max_new, minutes = view.storm_rate
    blocks: list[dict[str, Any]] = [
        divider(),
        section(trusted_mrkdwn(_t("summary", locale, max=max_new, minutes=minutes, firing=counts.firing,
                                  resolved=counts.resolved))),
    ]
    if rows:
        blocks.append(context(trusted_mrkdwn(_severity_line(counts, locale)),
                              trusted_mrkdwn(_alertname_line(counts, locale))))
    else:
        blocks.append(context(trusted_mrkdwn(_t("no_groups", locale))))
    fit = min(MAX_ROWS, len(rows), room - len(blocks))
    if fit < len(rows):  # the "more" line takes a block of its own
        fit = max(0, min(MAX_ROWS, room - len(blocks) - 1))
    splittable = view.incident.is_open
    blocks += [_row(member, locale, card_value if splittable else None) for member in rows[:fit]]
    if len(rows) > fit:
        blocks.append(context(trusted_mrkdwn(_t("more_groups", locale, count=len(rows) - fit))))
    return blocks[:max(room, 0)]


def _severity_line(counts: storm.Tally, locale: str) -> str:
    return _t("by_severity", locale, counts=" · ".join(f"{_SEVERITY_ICON.get(s, '')} {s} {n}"
                                                       for s, n in counts.by_severity))


def _alertname_line(counts: storm.Tally, locale: str) -> str:
    shown = counts.by_alertname[:NAMES_SHOWN]
    text = " · ".join(f"`{_code(name)}` {n}" for name, n in shown)
    hidden = len(counts.by_alertname) - len(shown)
    more = _t("more_names", locale, count=hidden) if hidden > 0 else ""
    return clip(_t("by_alertname", locale, counts=text), LIMITS["section"] - len(more) - 1) + more


def _code(name: str) -> str:
    # Inside a `code` span: escaped, and a backtick would end the span early.
    return escape(clip(name, 80)).replace("`", "'")


def _row(member: StormMember, locale: str, card_value: str | None) -> dict[str, Any]:
    state = _t("firing" if member.status == storm.FIRING else "resolved", locale)
    text = _t("row", locale, icon=_SEVERITY_ICON.get(member.severity, ":rotating_light:"), severity=member.severity,
              title=escape(clip(member.title, TITLE_SHOWN)), firing=member.firing, alerts=member.alerts, state=state,
              group=member.group_id)
    accessory = None
    if card_value is not None and member.status == storm.FIRING:
        accessory = button(_t("split", locale), f"{_SPLIT_PREFIX}{member.group_id}",
                           split_value(member.group_id, card_value))
    return section(trusted_mrkdwn(text), accessory=accessory, block_id=f"storm_group:{member.group_id}")


def split_value(group_id: int, card_value: str) -> str:
    """A Split out button's value: the group, then the card's usual value (its token and level)."""
    return f"{group_id}:{card_value}"


def read_split_value(value: str) -> tuple[int, str] | None:
    """(group id, card value) of a Split out button's value; None for anything else."""
    group, _, card = value.partition(":")
    return (int(group), card) if group.isdigit() and card else None


def split_card_value(body: dict[str, Any]) -> str:
    """The card's value inside a clicked Split out button (commands.middleware finds the card by it)."""
    value = str(((body.get("actions") or [{}])[0]).get("value", ""))
    parsed = read_split_value(value)
    return parsed[1] if parsed else ""
