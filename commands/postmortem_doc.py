"""The post-mortem document: bot.postmortem's facts in, Markdown out (no I/O, no clock).

It follows the seeds' post-mortem template (disaster-recovery-runbook-ko.md: date, outage time,
impact, timeline, root cause, action items), in English or Japanese, and adds what the bot
recorded: the key times, the alerts, the runbook steps run, the approvals and what they ran,
pages and acknowledgements, status updates and silences. Every time is UTC. A time the records
do not hold is "not known", never guessed; the root cause and the action items are left for
people to write.

Everything recorded came from people or alerts (titles, notes, status updates, runbook output,
labels and annotations, silence comments, deny reasons, user ids), so it enters the document only
through `text` (literal CommonMark/GFM inline text on one line) or `code` (an inline code span),
never as Markdown of its own: a note "# Root cause" is no heading, `[x](javascript:…)` no link,
`<img>` no HTML, and nothing recorded can start a section, a list item or a table row. The
document's own structure (title, section headings, lists) and two checked URLs are the only
Markdown in it.

Built again (`/incident postmortem` a second time), the document names the sections that changed
since the previous version (`Document.changed`), compared section by section.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.models import ApprovalRequest, TimelineEntry
from bot.postmortem import NOTE_KINDS, PAGE_KINDS, UPDATE_KINDS, Document, Facts, Previous, alert_time, key_times
from commands.i18n import LANGUAGES, Catalog, language_of

__all__ = ["SECTIONS", "build", "code", "duration", "section_title", "sections_of", "text"]

# The document's sections, in order ("summary": the template's date, outage time and impact).
SECTIONS = ("summary", "changes", "times", "timeline", "root_cause", "action_items", "notes", "alerts", "pages",
            "runbook", "approvals", "updates", "silences")
ALERTS_SHOWN = 200  # alerts listed (an incident keeps up to 1,000); the rest are counted
VALUE_LIMIT = 300  # characters of one label, annotation or parameter value shown
TEXT_LIMIT = 1000  # characters of one recorded text (a timeline entry, a result) shown

_t = Catalog("postmortem_doc", {
    "title": {"en": "Post-mortem: {title}", "ja": "ポストモーテム: {title}"},
    "meta": {"en": "Incident #{id} · {severity} · version {version} · generated {at} by {who}",
             "ja": "インシデント #{id} · {severity} · 第 {version} 版 · {at} に {who} が作成"},
    "date": {"en": "**Date**: {date}", "ja": "**日付**: {date}"},
    "outage": {"en": "**Outage**: {span}", "ja": "**障害時間**: {span}"},
    "span": {"en": "{start} to {end} ({length})", "ja": "{start} から {end} まで({length})"},
    "span_open": {"en": "from {start}; its end is not known", "ja": "{start} から(終了時刻は不明)"},
    "impact": {"en": "**Impact**: {todo} ({facts})", "ja": "**影響**: {todo}({facts})"},
    "fact_alertname": {"en": "alertname {name}", "ja": "alertname {name}"},
    "fact_service": {"en": "service {name}", "ja": "service {name}"},
    "fact_namespace": {"en": "namespace {name}", "ja": "namespace {name}"},
    "fact_alerts": {"en": "{count} alert(s)", "ja": "アラート {count} 件"},
    "todo": {"en": "_to be written_", "ja": "_未記入_"},
    "not_known": {"en": "not known", "ja": "不明"},
    "not_known_because": {"en": "not known ({why})", "ja": "不明({why})"},
    "none": {"en": "None recorded.", "ja": "記録なし。"},
    # durations: two units at most
    "days": {"en": "{n} d", "ja": "{n}日"},
    "hours": {"en": "{n} h", "ja": "{n}時間"},
    "minutes": {"en": "{n} min", "ja": "{n}分"},
    "seconds": {"en": "{n} s", "ja": "{n}秒"},
    "two_units": {"en": "{first} {second}", "ja": "{first}{second}"},
    # sections
    "h_changes": {"en": "Changes since the previous version", "ja": "前の版からの変更"},
    "h_times": {"en": "Key times", "ja": "主要な時間"},
    "h_timeline": {"en": "Timeline", "ja": "タイムライン"},
    "h_root_cause": {"en": "Root cause", "ja": "根本原因"},
    "h_action_items": {"en": "Action items", "ja": "対応事項"},
    "h_notes": {"en": "Notes from the timeline", "ja": "タイムラインのメモ"},
    "h_alerts": {"en": "Alerts", "ja": "アラート"},
    "h_pages": {"en": "Pages and acknowledgements", "ja": "呼び出しと確認"},
    "h_runbook": {"en": "Runbook steps run", "ja": "実行したランブック手順"},
    "h_approvals": {"en": "Approvals and executions", "ja": "承認と実行"},
    "h_updates": {"en": "Status updates", "ja": "状況報告"},
    "h_silences": {"en": "Silences", "ja": "サイレンス"},
    "h_summary": {"en": "Summary", "ja": "概要"},
    # changes
    "changed": {"en": "Changed since version {version} ({at}): {sections}.",
                "ja": "第 {version} 版({at})から変わったセクション: {sections}。"},
    "unchanged": {"en": "Nothing changed since version {version} ({at}).",
                  "ja": "第 {version} 版({at})から変更はありません。"},
    "new_entries": {"en": "{count} new timeline entries since then.", "ja": "その後のタイムラインの記録: {count} 件。"},
    # key times
    "began": {"en": "Problem began (the earliest alert's start): {at}", "ja": "問題の発生(最初のアラートの開始): {at}"},
    "detected": {"en": "Detected (the incident opened): {at}", "ja": "検知(インシデントの作成): {at}"},
    "tta": {"en": "Time to acknowledge: {value}", "ja": "確認までの時間: {value}"},
    "ttm": {"en": "Time to mitigate: {value}", "ja": "緩和までの時間: {value}"},
    "ttr": {"en": "Time to resolve: {value}", "ja": "解決までの時間: {value}"},
    "after": {"en": "{span} (at {at}, {how})", "ja": "{span}({at}、{how})"},
    "by": {"en": "by {who}", "ja": "{who}"},
    "mitigated_by_run": {"en": "{action} succeeded, approved by {who}", "ja": "{action} が成功、承認者 {who}"},
    "mitigated_by_state": {"en": "state mitigating, set by {who}", "ja": "状態 mitigating、設定者 {who}"},
    "no_ack": {"en": "no acknowledgement on the timeline", "ja": "タイムラインに確認の記録がありません"},
    "no_mitigation": {"en": "no successful remediation and no state mitigating on the timeline",
                      "ja": "タイムラインに成功した修復も mitigating 状態もありません"},
    "no_resolution": {"en": "no resolution on the timeline", "ja": "タイムラインに解決の記録がありません"},
    "counted": {"en": "The times are counted from detection.", "ja": "時間は検知から数えています。"},
    # alerts
    "alert": {"en": "**{name}** · {status} · began {began} · ended {ended}",
              "ja": "**{name}** · {status} · 開始 {began} · 終了 {ended}"},
    "not_ended": {"en": "not yet", "ja": "未終了"},
    "source": {"en": "source", "ja": "ソース"},
    "message": {"en": "message", "ja": "メッセージ"},
    "more_alerts": {"en": "…and {more} more alerts.", "ja": "…ほかに {more} 件のアラート。"},
    "truncated": {"en": "Alertmanager left out {count} more alerts of this group (truncatedAlerts).",
                  "ja": "Alertmanager はこのグループのアラートをさらに {count} 件省略しました(truncatedAlerts)。"},
    # pages
    "paged_level": {"en": "Highest level paged: {level} (PagerDuty dedup key {dedup_key}).",
                    "ja": "呼び出した最上位のレベル: {level}(PagerDuty の dedup key {dedup_key})。"},
    "not_paged": {"en": "Nobody was paged through PagerDuty.", "ja": "PagerDuty での呼び出しはありませんでした。"},
    "acked_in_pd": {"en": "Acknowledged in PagerDuty by {who}.", "ja": "PagerDuty で {who} が確認しました。"},
    # runbook
    "runbook": {"en": "Runbook {id}.", "ja": "ランブック {id}。"},
    "step": {"en": "{step} ({action}, {kind}): run {runs} time(s), last at {at} by {who}: {result}",
             "ja": "{step}({action}、{kind}): {runs} 回実行、最後は {at} に {who}: {result}"},
    "ok": {"en": "succeeded", "ja": "成功"},
    "failed": {"en": "failed", "ja": "失敗"},
    "requested": {"en": "{step} ({action}, {kind}): {count} approval request(s), the last one {status} (see "
                        "“{section}”)",
                  "ja": "{step}({action}、{kind}): 承認申請 {count} 件、最新は {status}(「{section}」を参照)"},
    "not_run": {"en": "Not run: {steps}.", "ja": "未実行: {steps}。"},
    "no_runbook": {"en": "No runbook was posted.", "ja": "ランブックは投稿されませんでした。"},
    # approvals
    "request": {"en": "{action} (risk {risk}, step {step}) {params}: requested by {who} at {at}; {outcome}",
                "ja": "{action}(リスク {risk}、手順 {step}){params}: {at} に {who} が申請。{outcome}"},
    "pending": {"en": "still pending (expires {at})", "ja": "承認待ち({at} に期限切れ)"},
    "executing": {"en": "approved by {who} at {at}; its result is not known yet",
                  "ja": "{at} に {who} が承認。結果はまだ不明"},
    "ran": {"en": "approved by {who} at {at}; {result}: {detail}", "ja": "{at} に {who} が承認。{result}: {detail}"},
    "denied": {"en": "denied by {who} at {at}", "ja": "{at} に {who} が却下"},
    "reason": {"en": " (reason: {reason})", "ja": "(理由: {reason})"},
    "expired": {"en": "expired unapproved at {at}", "ja": "{at} に未承認のまま期限切れ"},
    "rollout": {"en": "; rollout {state}: {detail}", "ja": "。ロールアウト {state}: {detail}"},
    # silences
    "silence": {"en": "{matchers} from {start} to {end}, created by {who}: {comment}",
                "ja": "{matchers} {start} から {end} まで、作成者 {who}: {comment}"},
    "silence_expired": {"en": "; expired by {who} at {at}", "ja": "。{at} に {who} が終了"},
})


def section_title(key: str, language: str | None) -> str:
    return _t(f"h_{key}", language)


def duration(span: timedelta, language: str | None = "en") -> str:
    """`42 s`, `4 min`, `1 h 30 min`, `2 d 3 h` (Japanese: `4分`, `1時間30分`): two units at most."""
    days, rest = divmod(max(0, int(span.total_seconds())), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days or hours:
        (big, n), (small, m) = (("days", days), ("hours", hours)) if days else (("hours", hours), ("minutes", minutes))
        first = _t(big, language, n=n)
        return _t("two_units", language, first=first, second=_t(small, language, n=m)) if m else first
    return _t("minutes", language, n=minutes) if minutes else _t("seconds", language, n=seconds)


# -- recorded text into Markdown ---------------------------------------------------------------------

# ASCII punctuation that has a meaning anywhere in a line (CommonMark 2.4 lets every ASCII punctuation
# character be backslash-escaped): the escape itself, code spans, emphasis, links, images and footnotes,
# GFM tables, strikethrough and math; `_` only where it can open or close emphasis (not inside a word);
# `&` `<` `>` as entities, so no HTML tag, autolink or entity of the text's own survives.
_SPECIAL = re.compile(r"[\\`*\[\]|~$&<>]|(?<![^\W_])_|_(?![^\W_])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LEADING_SIGN = re.compile(r"^([#+=-])")  # an ATX heading, a list item, a thematic break, a setext underline
_LEADING_NUMBER = re.compile(r"^(\d{1,9})([.)])")  # an ordered list item
_CLOSING_HASHES = re.compile(r"(^|\s)(#+)$")  # an ATX heading's closing sequence: it would be dropped
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_URL = re.compile(r"https?://[^\s()<>\[\]\\`\"']{1,3000}")


def text(value: Any, limit: int) -> str:
    """Recorded text as literal CommonMark/GFM inline text: on one line (so it cannot open a section
    or end a list item), cut to `limit` characters of its own, its Markdown and HTML escaped."""
    line = _SPECIAL.sub(lambda m: _ENTITIES.get(m[0], "\\" + m[0]), _one_line(value, limit))
    line = _LEADING_NUMBER.sub(r"\1\\\2", _LEADING_SIGN.sub(r"\\\1", line))
    return _CLOSING_HASHES.sub(lambda m: m[1] + "\\#" * len(m[2]), line)


def code(value: Any, limit: int = VALUE_LIMIT) -> str:
    """Recorded text as an inline code span, shown as it is: its fence is longer than any backtick
    run in it (CommonMark 6.1), so nothing in it can end the span early."""
    line = _one_line(value, limit)
    fence = "`" * (max(map(len, re.findall(r"`+", line)), default=0) + 1)
    pad = " " if line.startswith("`") or line.endswith("`") else ""
    return f"{fence}{pad}{line}{pad}{fence}"


def _link(label: str, url: Any, *, https_only: bool) -> str:
    """` · [label](url)` for a plain web URL that cannot end the link early; "" for anything else."""
    address = str(url or "")
    if not _URL.fullmatch(address) or (https_only and not address.startswith("https://")):
        return ""
    return f" · [{label}]({address})"


def _one_line(value: Any, limit: int) -> str:
    """On one line (control characters and line breaks become spaces), cut to `limit`."""
    line = " ".join(_CONTROLS.sub(" ", str(value if value is not None else "")).split())
    return line if len(line) <= limit else line[: max(0, limit - 1)] + "…"


# -- the document ----------------------------------------------------------------------------------

def build(facts: Facts, *, version: int, generated_at: datetime, generated_by: str, language: str,
          previous: Previous | None = None) -> Document:
    """The document, version `version`, in `language` (en or ja; English for any other)."""
    lang = language_of(language)
    incident = facts.incident
    none = [_t("none", lang)]
    sections: dict[str, list[str]] = {
        "summary": _summary(facts, lang),
        "times": _times(facts, lang),
        "timeline": [_entry(e) for e in facts.timeline] or none,
        "root_cause": [_t("todo", lang)],
        "action_items": [f"1. {_t('todo', lang)}"],
        "notes": [_entry(e, with_kind=False) + _link(_t("message", lang), e.data.get("permalink"), https_only=True)
                  for e in facts.timeline if e.kind in NOTE_KINDS] or none,
        "alerts": _alerts(facts, lang),
        "pages": _pages(facts, lang),
        "runbook": _runbook(facts, lang),
        "approvals": _approvals(facts, lang),
        "updates": [_entry(e) for e in facts.timeline if e.kind in UPDATE_KINDS] or none,
        "silences": _silences(facts, lang),
    }
    bodies = {key: "\n".join(lines) for key, lines in sections.items()}
    changed: tuple[str, ...] = ()
    if previous is not None:
        before = sections_of(previous.markdown)
        changed = tuple(key for key in SECTIONS if key in bodies and before.get(key) != bodies[key])
        sections["changes"] = _changes(previous, changed, facts.timeline, lang)
    head = [f"# {_t('title', lang, title=text(incident.title, 300))}",
            _t("meta", lang, id=incident.id, severity=text(incident.severity, 32), version=version,
               at=_at(generated_at), who=text(generated_by, 128)),
            ""]
    parts = [head]
    for key in SECTIONS:
        if key in sections:
            lines = sections[key]
            parts.append(lines if key == "summary" else [f"## {section_title(key, lang)}", "", *lines])
    return Document("\n\n".join("\n".join(part).strip("\n") for part in parts) + "\n", changed)


def sections_of(markdown: str) -> dict[str, str]:
    """A document's sections by key, as `build` wrote them (either language): what a new
    version is compared with."""
    titles = {section_title(key, lang): key for key in SECTIONS if key != "summary" for lang in LANGUAGES}
    found: dict[str, list[str]] = {"summary": []}
    current = "summary"
    for line in markdown.splitlines()[2:]:  # after the title and the version line
        if line.startswith("## "):
            current = titles.get(line[3:].strip(), line[3:].strip())
            found[current] = []
        else:
            found[current].append(line)
    return {key: "\n".join(lines).strip("\n") for key, lines in found.items()}


# -- sections ------------------------------------------------------------------------------------

def _summary(facts: Facts, lang: str) -> list[str]:
    times, incident = key_times(facts), facts.incident
    start, end, outage = times.outage_start, times.outage_end, times.outage
    if end is None or outage is None:
        span = _t("span_open", lang, start=_at(start))
    else:
        same_day = start.astimezone(UTC).date() == end.astimezone(UTC).date()
        span = _t("span", lang, start=_at(start), end=f"{end.astimezone(UTC):%H:%M:%S} UTC" if same_day else _at(end),
                  length=duration(outage, lang))
    facts_line = ", ".join(part for part in (
        text(incident.severity, 32), _t("fact_alertname", lang, name=code(incident.alertname)),
        _t("fact_service", lang, name=code(incident.service)) if incident.service else "",
        _t("fact_namespace", lang, name=code(incident.namespace)) if incident.namespace else "",
        _t("fact_alerts", lang, count=len(facts.alerts) + incident.truncated_alerts)) if part)
    return [_t("date", lang, date=f"{start.astimezone(UTC):%Y-%m-%d}"), "", _t("outage", lang, span=span), "",
            _t("impact", lang, todo=_t("todo", lang), facts=facts_line)]  # paragraphs: one line each when rendered


def _times(facts: Facts, lang: str) -> list[str]:
    times = key_times(facts)

    def since_detection(entry: TimelineEntry | None, how: str, missing: str) -> str:
        span = times.since_detection(entry)
        if entry is None or span is None:
            return _t("not_known_because", lang, why=missing)
        return _t("after", lang, span=duration(span, lang), at=_at(entry.at), how=how)

    ack, mitigated, resolved = times.acknowledged, times.mitigated, times.resolved
    return [
        "- " + _t("began", lang, at=_at(times.began) if times.began else _t("not_known", lang)),
        "- " + _t("detected", lang, at=_at(times.detected)),
        "- " + _t("tta", lang, value=since_detection(ack, _t("by", lang, who=_actor(ack)), _t("no_ack", lang))),
        "- " + _t("ttm", lang, value=since_detection(mitigated, _mitigation(mitigated, lang),
                                                      _t("no_mitigation", lang))),
        "- " + _t("ttr", lang, value=since_detection(resolved, _t("by", lang, who=_actor(resolved)),
                                                      _t("no_resolution", lang))),
        "",
        _t("counted", lang),
    ]


def _mitigation(entry: TimelineEntry | None, lang: str) -> str:
    if entry is None:
        return ""
    if entry.kind == "remediation":
        return _t("mitigated_by_run", lang, action=code(entry.data.get("action"), 64), who=_actor(entry))
    return _t("mitigated_by_state", lang, who=_actor(entry))


def _changes(previous: Previous, changed: tuple[str, ...], timeline: Iterable[TimelineEntry], lang: str) -> list[str]:
    at = _at(previous.generated_at)
    if changed:
        names = ", ".join(section_title(key, lang) for key in changed)
        lines = [_t("changed", lang, version=previous.version, at=at, sections=names)]
    else:
        lines = [_t("unchanged", lang, version=previous.version, at=at)]
    newer = sum(1 for e in timeline if e.at > previous.generated_at)
    if newer:
        lines.append(_t("new_entries", lang, count=newer))
    return lines


def _alerts(facts: Facts, lang: str) -> list[str]:
    alerts = sorted(facts.alerts, key=lambda a: (a.starts_at, a.id or 0))
    lines = []
    for alert in alerts[:ALERTS_SHOWN]:
        began, ended = alert_time(alert.starts_at), alert_time(alert.ends_at)
        line = "- " + _t("alert", lang, name=text(alert.alertname, VALUE_LIMIT), status=text(alert.status, 16),
                         began=_at(began) if began else _t("not_known", lang),
                         ended=_at(ended) if ended else _t("not_ended", lang))
        labels = {k: v for k, v in alert.labels.items() if k != "alertname"}
        if labels:
            line += f" · {code(_pairs(labels), 2000)}"
        summary = alert.annotations.get("summary") or alert.annotations.get("description")
        if summary:
            line += f" · {text(summary, VALUE_LIMIT)}"
        lines.append(line + _link(_t("source", lang), alert.generator_url, https_only=False))
    if len(alerts) > ALERTS_SHOWN:
        lines.append(_t("more_alerts", lang, more=len(alerts) - ALERTS_SHOWN))
    if facts.incident.truncated_alerts:
        lines.append(_t("truncated", lang, count=facts.incident.truncated_alerts))
    return lines or [_t("none", lang)]


def _pages(facts: Facts, lang: str) -> list[str]:
    lines = [_entry(e) for e in facts.timeline if e.kind in PAGE_KINDS]
    paging = facts.paging
    if lines:
        lines.append("")
    if paging is not None and paging.level >= 1:
        lines.append(_t("paged_level", lang, level=paging.level, dedup_key=code(paging.dedup_key, 255)))
    else:
        lines.append(_t("not_paged", lang))
    if paging is not None and paging.acked_in_pagerduty_by:
        lines.append(_t("acked_in_pd", lang, who=text(paging.acked_in_pagerduty_by, 128)))
    return lines


def _runbook(facts: Facts, lang: str) -> list[str]:
    if not facts.steps:
        return [_t("no_runbook", lang)]
    lines = [_t("runbook", lang, id=code(facts.steps[0].runbook_id, 128)), ""]
    not_known = _t("not_known", lang)
    ran = [s for s in facts.steps if s.runs > 0]
    for step in ran:
        result = _t("ok", lang) if step.last_ok else _t("failed", lang) if step.last_ok is False else not_known
        if step.last_outcome:
            result += f" — {text(step.last_outcome, TEXT_LIMIT)}"
        lines.append("- " + _t("step", lang, step=code(step.step_id, 128), action=text(step.action, 64) or "—",
                               kind=text(step.kind, 32), runs=step.runs,
                               at=_at(step.last_run_at) if step.last_run_at else not_known,
                               who=text(step.last_run_by or not_known, 64), result=result))
    requested: dict[int | None, list[ApprovalRequest]] = {}
    for row in facts.approvals:
        requested.setdefault(row.step_id, []).append(row)
    asked = [s for s in facts.steps if s.runs == 0 and requested.get(s.id)]
    for step in asked:  # a remediation runs through its approvals, not as a click
        last = requested[step.id][-1]
        lines.append("- " + _t("requested", lang, step=code(step.step_id, 128), action=text(step.action, 64) or "—",
                               kind=text(step.kind, 32), count=len(requested[step.id]),
                               status=text(getattr(last.status, "value", last.status), 16),
                               section=section_title("approvals", lang)))
    if not ran and not asked:
        lines.append(_t("none", lang))
    idle = [code(s.step_id, 128) for s in facts.steps if s.runs == 0 and s.action and not requested.get(s.id)]
    if idle:
        lines += ["", _t("not_run", lang, steps=", ".join(idle))]
    return lines


def _approvals(facts: Facts, lang: str) -> list[str]:
    step_ids = {s.id: s.step_id for s in facts.steps}
    lines = []
    for row in facts.approvals:
        lines.append("- " + _t("request", lang, action=code(row.action, 64), risk=text(row.risk, 16),
                               step=code(step_ids.get(row.step_id, "?"), 128),
                               params=code(json.dumps(row.params, ensure_ascii=False, sort_keys=True)),
                               who=text(row.requested_by, 64), at=_at(row.requested_at),
                               outcome=_outcome(row, lang)))
    return lines or [_t("none", lang)]


def _outcome(row: ApprovalRequest, lang: str) -> str:
    who = text(row.decided_by or "—", 64)
    at = _at(row.decided_at) if row.decided_at else _t("not_known", lang)
    status = str(getattr(row.status, "value", row.status))
    if status == "pending":
        outcome = _t("pending", lang, at=_at(row.expires_at))
    elif status in ("approved", "executing"):
        outcome = _t("executing", lang, who=who, at=at)
    elif status in ("succeeded", "failed"):
        outcome = _t("ran", lang, who=who, at=at, result=_t("ok" if status == "succeeded" else "failed", lang),
                     detail=text(row.result or "", TEXT_LIMIT))
    elif status == "denied":
        outcome = _t("denied", lang, who=who, at=at) + (
            _t("reason", lang, reason=text(row.reason, TEXT_LIMIT)) if row.reason else "")
    else:
        outcome = _t("expired", lang, at=at)
    if row.rollout:
        outcome += _t("rollout", lang, state=text(row.rollout, 32), detail=text(row.rollout_detail or "", TEXT_LIMIT))
    return outcome


def _silences(facts: Facts, lang: str) -> list[str]:
    lines = []
    for row in facts.silences:
        line = "- " + _t("silence", lang, matchers=code(row.matchers, TEXT_LIMIT), start=_at(row.starts_at),
                         end=_at(row.ends_at), who=text(row.created_by, 128), comment=text(row.comment, TEXT_LIMIT))
        if row.expired_at is not None:
            line += _t("silence_expired", lang, who=text(row.expired_by or "—", 64), at=_at(row.expired_at))
        lines.append(line)
    return lines or [_t("none", lang)]


# -- pieces ----------------------------------------------------------------------------------------

def _entry(entry: TimelineEntry, *, with_kind: bool = True) -> str:
    # `[kind]` is ours: a link only if the document defined it, and nothing recorded can define one
    kind = f"[{text(entry.kind, 32)}] " if with_kind else ""
    return f"- {_at(entry.at)} · {_actor(entry)} · {kind}{text(entry.text, TEXT_LIMIT)}"


def _actor(entry: TimelineEntry | None) -> str:
    return text(entry.actor, 128) if entry is not None else ""


def _at(at: datetime | None) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if at is not None else ""


def _pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{_one_line(k, VALUE_LIMIT)}={_one_line(v, VALUE_LIMIT)}" for k, v in sorted(values.items()))
