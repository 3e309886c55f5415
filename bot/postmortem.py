"""The post-mortem document: an incident's stored rows in, Markdown out (no I/O, no clock).

It follows the seeds' post-mortem template (disaster-recovery-runbook-ko.md: date, outage time,
impact, timeline, root cause, action items), in English or Japanese, and adds what the bot
recorded: the key times, the alerts, the runbook steps run, the approvals and what they ran,
pages and acknowledgements, status updates and silences. Every time is UTC. A time the records
do not hold is "not known", never guessed; the root cause and the action items are left for
people to write. Each line is one line of Markdown (newlines in recorded text become spaces),
so nothing recorded can start a section of its own.

Built again (`/incident postmortem` a second time), the document names the sections that changed
since the previous version (`Document.changed`), compared section by section.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.models import Alert, ApprovalRequest, Incident, Paging, RunbookStep, Silence, TimelineEntry

__all__ = ["NOTE_KINDS", "SECTIONS", "UPDATE_KINDS", "Document", "Facts", "KeyTimes", "Previous", "build", "duration",
           "key_times", "section_title", "sections_of"]

# The document's sections, in order ("summary": the template's date, outage time and impact).
SECTIONS = ("summary", "changes", "times", "timeline", "root_cause", "action_items", "notes", "alerts", "pages",
            "runbook", "approvals", "updates", "silences")
ALERTS_SHOWN = 200  # alerts listed (an incident keeps up to 1,000); the rest are counted
VALUE_LIMIT = 300  # characters of one label, annotation or parameter value shown
TEXT_LIMIT = 1000  # characters of one recorded text (a timeline entry, a result) shown
UPDATE_KINDS = ("status_update",)  # the timeline kind of a status update (`/incident update`, bot.roles)
NOTE_KINDS = ("note", "message")  # `/incident note`, and messages pinned or :pushpin:ed (bot.timeline_capture)
PAGE_KINDS = ("page", "escalate", "ack", "escalated", "reassigned")  # paging and acknowledgements

_T: dict[str, dict[str, str]] = {
    "title": {"en": "Post-mortem: {title}", "ja": "ポストモーテム: {title}"},
    "meta": {"en": "Incident #{id} · {severity} · version {version} · generated {at} by {who}",
             "ja": "インシデント #{id} · {severity} · 第 {version} 版 · {at} に {who} が作成"},
    "date": {"en": "**Date**: {date}", "ja": "**日付**: {date}"},
    "outage": {"en": "**Outage**: {span}", "ja": "**障害時間**: {span}"},
    "span": {"en": "{start} to {end} ({length})", "ja": "{start} から {end} まで({length})"},
    "span_open": {"en": "from {start}; its end is not known", "ja": "{start} から(終了時刻は不明)"},
    "impact": {"en": "**Impact**: {todo} ({facts})", "ja": "**影響**: {todo}({facts})"},
    "todo": {"en": "_to be written_", "ja": "_未記入_"},
    "not_known": {"en": "not known", "ja": "不明"},
    "none": {"en": "None recorded.", "ja": "記録なし。"},
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
    "more_alerts": {"en": "…and {more} more alerts.", "ja": "…ほかに {more} 件のアラート。"},
    "truncated": {"en": "Alertmanager left out {count} more alerts of this group (truncatedAlerts).",
                  "ja": "Alertmanager はこのグループのアラートをさらに {count} 件省略しました(truncatedAlerts)。"},
    # pages
    "paged_level": {"en": "Highest level paged: {level} (PagerDuty dedup key `{key}`).",
                    "ja": "呼び出した最上位のレベル: {level}(PagerDuty の dedup key `{key}`)。"},
    "not_paged": {"en": "Nobody was paged through PagerDuty.", "ja": "PagerDuty での呼び出しはありませんでした。"},
    "acked_in_pd": {"en": "Acknowledged in PagerDuty by {who}.", "ja": "PagerDuty で {who} が確認しました。"},
    # runbook
    "runbook": {"en": "Runbook `{id}`.", "ja": "ランブック `{id}`。"},
    "step": {"en": "`{step}` ({action}, {kind}): run {runs} time(s), last at {at} by {who}: {result}",
             "ja": "`{step}`({action}、{kind}): {runs} 回実行、最後は {at} に {who}: {result}"},
    "ok": {"en": "succeeded", "ja": "成功"},
    "failed": {"en": "failed", "ja": "失敗"},
    "requested": {"en": "`{step}` ({action}, {kind}): {count} approval request(s), the last one {status} (see "
                        "“{section}”)",
                  "ja": "`{step}`({action}、{kind}): 承認申請 {count} 件、最新は {status}(「{section}」を参照)"},
    "not_run": {"en": "Not run: {steps}.", "ja": "未実行: {steps}。"},
    "no_runbook": {"en": "No runbook was posted.", "ja": "ランブックは投稿されませんでした。"},
    # approvals
    "request": {"en": "`{action}` (risk {risk}, step `{step}`) {params}: requested by {who} at {at}; {outcome}",
                "ja": "`{action}`(リスク {risk}、手順 `{step}`){params}: {at} に {who} が申請。{outcome}"},
    "pending": {"en": "still pending (expires {at})", "ja": "承認待ち({at} に期限切れ)"},
    "approved": {"en": "approved by {who} at {at}", "ja": "{at} に {who} が承認"},
    "executing": {"en": "approved by {who} at {at}; its result is not known yet",
                  "ja": "{at} に {who} が承認。結果はまだ不明"},
    "ran": {"en": "approved by {who} at {at}; {result}: {detail}", "ja": "{at} に {who} が承認。{result}: {detail}"},
    "denied": {"en": "denied by {who} at {at}", "ja": "{at} に {who} が却下"},
    "reason": {"en": " (reason: {reason})", "ja": "(理由: {reason})"},
    "expired": {"en": "expired unapproved at {at}", "ja": "{at} に未承認のまま期限切れ"},
    "rollout": {"en": "; rollout {state}: {detail}", "ja": "。ロールアウト {state}: {detail}"},
    # silences
    "silence": {"en": "`{matchers}` from {start} to {end}, created by {who}: {comment}",
                "ja": "`{matchers}` {start} から {end} まで、作成者 {who}: {comment}"},
    "silence_expired": {"en": "; expired by {who} at {at}", "ja": "。{at} に {who} が終了"},
}

_UNITS = {"en": ("d", "h", "min", "s"), "ja": ("日", "時間", "分", "秒")}


def _t(which: str, language: str, **values: Any) -> str:
    texts = _T[which]
    return texts.get(language, texts["en"]).format(**values)


def section_title(key: str, language: str) -> str:
    return _t(f"h_{key}", language)


@dataclass(frozen=True)
class Facts:
    """Everything the document is built from, as stored (bot.postmortem_ops reads it in one go)."""

    incident: Incident
    alerts: Sequence[Alert]
    timeline: Sequence[TimelineEntry]  # oldest first
    steps: Sequence[RunbookStep]
    approvals: Sequence[ApprovalRequest]  # oldest first
    paging: Paging | None
    silences: Sequence[Silence]


@dataclass(frozen=True)
class Previous:
    """The version before this one, to name what changed."""

    version: int
    generated_at: datetime
    markdown: str


@dataclass(frozen=True)
class Document:
    markdown: str
    changed: tuple[str, ...]  # the keys (SECTIONS) that differ from the previous version; () without one


@dataclass(frozen=True)
class KeyTimes:
    """The incident's key times, from its timeline; None where the timeline holds no such event."""

    began: datetime | None  # the earliest alert's startsAt
    detected: datetime  # the incident opened
    acknowledged: TimelineEntry | None  # the first acknowledgement
    mitigated: TimelineEntry | None  # the first successful remediation, or the first move to mitigating
    resolved: TimelineEntry | None  # the last move to resolved (a reopened incident resolves again)


def key_times(facts: Facts) -> KeyTimes:
    timeline = facts.timeline
    created = next((e for e in timeline if e.kind == "created"), None)
    starts = [a.starts_at for a in facts.alerts if a.starts_at.year > 1]  # year 1: Go's zero time, unset
    mitigations = [e for e in timeline if (e.kind == "remediation" and e.data.get("ok") is True)
                   or (e.kind == "status" and e.data.get("to") == "mitigating")]
    resolutions = [e for e in timeline if e.kind == "status" and e.data.get("to") == "resolved"]
    return KeyTimes(
        began=min(starts, default=None),
        detected=created.at if created is not None else facts.incident.created_at,
        acknowledged=next((e for e in timeline if e.kind == "ack"), None),
        mitigated=mitigations[0] if mitigations else None,
        resolved=resolutions[-1] if resolutions else None,
    )


def duration(span: timedelta, language: str = "en") -> str:
    """`42 s`, `4 min`, `1 h 30 min`, `2 d 3 h` (Japanese: `4分`, `1時間30分`): two units at most."""
    seconds = max(0, int(span.total_seconds()))
    d, h, m, s = _UNITS.get(language, _UNITS["en"])
    sep = "" if language == "ja" else " "
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}{sep}{d}" + (f"{sep}{hours}{sep}{h}" if hours else "")
    if hours:
        return f"{hours}{sep}{h}" + (f"{sep}{minutes}{sep}{m}" if minutes else "")
    if minutes:
        return f"{minutes}{sep}{m}"
    return f"{secs}{sep}{s}"


def build(facts: Facts, *, version: int, generated_at: datetime, generated_by: str, language: str,
          previous: Previous | None = None) -> Document:
    """The document, version `version`, in `language` (en or ja)."""
    lang = language if language in ("en", "ja") else "en"
    incident = facts.incident
    sections: dict[str, list[str]] = {
        "summary": _summary(facts, lang),
        "times": _times(facts, lang),
        "timeline": [_entry(e) for e in facts.timeline] or [_t("none", lang)],
        "root_cause": [_t("todo", lang)],
        "action_items": [f"1. {_t('todo', lang)}"],
        "notes": [_entry(e, with_kind=False) + _link(e) for e in facts.timeline if e.kind in NOTE_KINDS]
        or [_t("none", lang)],
        "alerts": _alerts(facts, lang),
        "pages": _pages(facts, lang),
        "runbook": _runbook(facts, lang),
        "approvals": _approvals(facts, lang),
        "updates": [_entry(e) for e in facts.timeline if e.kind in UPDATE_KINDS] or [_t("none", lang)],
        "silences": _silences(facts, lang),
    }
    bodies = {key: "\n".join(lines) for key, lines in sections.items()}
    changed: tuple[str, ...] = ()
    if previous is not None:
        before = sections_of(previous.markdown)
        changed = tuple(key for key in SECTIONS if key in bodies and before.get(key) != bodies[key])
        sections["changes"] = _changes(previous, changed, facts.timeline, lang)
    head = [f"# {_t('title', lang, title=_one_line(incident.title, 300))}",
            _t("meta", lang, id=incident.id, severity=incident.severity, version=version, at=_at(generated_at),
               who=_one_line(generated_by, 128)),
            ""]
    parts = [head]
    for key in SECTIONS:
        if key not in sections:
            continue
        lines = sections[key]
        parts.append(lines if key == "summary" else [f"## {section_title(key, lang)}", "", *lines])
    return Document("\n\n".join("\n".join(part).strip("\n") for part in parts) + "\n", changed)


def sections_of(markdown: str) -> dict[str, str]:
    """A document's sections by key, as `build` wrote them (either language): what a new
    version is compared with."""
    titles = {_t(f"h_{key}", lang): key for key in SECTIONS if key != "summary" for lang in ("en", "ja")}
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
    start = times.began or times.detected
    end = times.resolved.at if times.resolved is not None else None
    if end is None:
        span = _t("span_open", lang, start=_at(start))
    else:
        same_day = start.astimezone(UTC).date() == end.astimezone(UTC).date()
        span = _t("span", lang, start=_at(start), end=f"{end.astimezone(UTC):%H:%M:%S} UTC" if same_day else _at(end),
                  length=duration(end - start, lang))
    facts_line = ", ".join(part for part in (
        incident.severity, f"alertname {_code(incident.alertname)}",
        f"service {_code(incident.service)}" if incident.service else "",
        f"namespace {_code(incident.namespace)}" if incident.namespace else "",
        f"{len(facts.alerts) + incident.truncated_alerts} alert(s)" if lang == "en"
        else f"アラート {len(facts.alerts) + incident.truncated_alerts} 件") if part)
    return [_t("date", lang, date=f"{start.astimezone(UTC):%Y-%m-%d}"), "", _t("outage", lang, span=span), "",
            _t("impact", lang, todo=_t("todo", lang), facts=facts_line)]  # paragraphs: one line each when rendered


def _times(facts: Facts, lang: str) -> list[str]:
    times = key_times(facts)
    not_known = _t("not_known", lang)

    def since_detection(entry: TimelineEntry | None, how: str, missing: str) -> str:
        if entry is None:
            return f"{not_known} ({missing})" if lang == "en" else f"{not_known}({missing})"
        return _t("after", lang, span=duration(entry.at - times.detected, lang), at=_at(entry.at), how=how)

    ack, mitigated, resolved = times.acknowledged, times.mitigated, times.resolved
    how_mitigated = _mitigation(mitigated, lang)
    return [
        "- " + _t("began", lang, at=_at(times.began) if times.began else not_known),
        "- " + _t("detected", lang, at=_at(times.detected)),
        "- " + _t("tta", lang, value=since_detection(ack, _t("by", lang, who=_actor(ack)) if ack else "",
                                                      _t("no_ack", lang))),
        "- " + _t("ttm", lang, value=since_detection(mitigated, how_mitigated, _t("no_mitigation", lang))),
        "- " + _t("ttr", lang, value=since_detection(resolved, _t("by", lang, who=_actor(resolved)) if resolved else "",
                                                      _t("no_resolution", lang))),
        "",
        _t("counted", lang),
    ]


def _mitigation(entry: TimelineEntry | None, lang: str) -> str:
    if entry is None:
        return ""
    if entry.kind == "remediation":
        return _t("mitigated_by_run", lang, action=_code(entry.data.get("action"), 64), who=_actor(entry))
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
        ended = _at(alert.ends_at) if alert.ends_at and alert.ends_at.year > 1 else _t("not_ended", lang)
        began = _at(alert.starts_at) if alert.starts_at.year > 1 else _t("not_known", lang)
        line = "- " + _t("alert", lang, name=_one_line(alert.alertname, VALUE_LIMIT),
                         status=_one_line(alert.status, 16), began=began, ended=ended)
        labels = {k: v for k, v in alert.labels.items() if k != "alertname"}
        if labels:
            line += f" · {_code(_pairs(labels), 2000)}"
        summary = alert.annotations.get("summary") or alert.annotations.get("description")
        if summary:
            line += f" · {_one_line(summary, VALUE_LIMIT)}"
        if alert.generator_url.startswith(("http://", "https://")) and not re.search(r"[\s()<>]", alert.generator_url):
            line += f" · [source]({alert.generator_url})"
        lines.append(line)
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
        lines.append(_t("paged_level", lang, level=paging.level, key=_one_line(paging.dedup_key, 255)))
    else:
        lines.append(_t("not_paged", lang))
    if paging is not None and paging.acked_in_pagerduty_by:
        lines.append(_t("acked_in_pd", lang, who=_one_line(paging.acked_in_pagerduty_by, 128)))
    return lines


def _runbook(facts: Facts, lang: str) -> list[str]:
    if not facts.steps:
        return [_t("no_runbook", lang)]
    lines = [_t("runbook", lang, id=_one_line(facts.steps[0].runbook_id, 128).replace("`", "'")), ""]
    ran = [s for s in facts.steps if s.runs > 0]
    for step in ran:
        result = _t("ok", lang) if step.last_ok else _t("failed", lang) if step.last_ok is False else \
            _t("not_known", lang)
        if step.last_outcome:
            result += f" — {_one_line(step.last_outcome, TEXT_LIMIT)}"
        lines.append("- " + _t("step", lang, step=_one_line(step.step_id, 128).replace("`", "'"),
                               action=step.action or "—",
                               kind=step.kind, runs=step.runs,
                               at=_at(step.last_run_at) if step.last_run_at else _t("not_known", lang),
                               who=_one_line(step.last_run_by or _t("not_known", lang), 64), result=result))
    requested: dict[int | None, list[ApprovalRequest]] = {}
    for row in facts.approvals:
        requested.setdefault(row.step_id, []).append(row)
    asked = [s for s in facts.steps if s.runs == 0 and requested.get(s.id)]
    for step in asked:  # a remediation runs through its approvals, not as a click
        last = requested[step.id][-1]
        lines.append("- " + _t("requested", lang, step=_one_line(step.step_id, 128).replace("`", "'"),
                               action=step.action or "—", kind=step.kind, count=len(requested[step.id]),
                               status=str(getattr(last.status, "value", last.status)),
                               section=section_title("approvals", lang)))
    if not ran and not asked:
        lines.append(_t("none", lang))
    idle = [_code(s.step_id, 128) for s in facts.steps if s.runs == 0 and s.action and not requested.get(s.id)]
    if idle:
        lines += ["", _t("not_run", lang, steps=", ".join(idle))]
    return lines


def _approvals(facts: Facts, lang: str) -> list[str]:
    step_ids = {s.id: s.step_id for s in facts.steps}
    lines = []
    for row in facts.approvals:
        who, at = _one_line(row.decided_by or "—", 64), _at(row.decided_at) if row.decided_at else _t("not_known", lang)
        status = str(getattr(row.status, "value", row.status))
        if status == "pending":
            outcome = _t("pending", lang, at=_at(row.expires_at))
        elif status in ("approved", "executing"):
            outcome = _t("executing", lang, who=who, at=at)
        elif status in ("succeeded", "failed"):
            outcome = _t("ran", lang, who=who, at=at, result=_t("ok" if status == "succeeded" else "failed", lang),
                         detail=_one_line(row.result or "", TEXT_LIMIT))
        elif status == "denied":
            outcome = _t("denied", lang, who=who, at=at) + (
                _t("reason", lang, reason=_one_line(row.reason, TEXT_LIMIT)) if row.reason else "")
        else:
            outcome = _t("expired", lang, at=at)
        if row.rollout:
            outcome += _t("rollout", lang, state=row.rollout, detail=_one_line(row.rollout_detail or "", TEXT_LIMIT))
        params = _code(json.dumps(row.params, ensure_ascii=False, sort_keys=True))
        lines.append("- " + _t("request", lang, action=_one_line(row.action, 64), risk=row.risk,
                               step=_one_line(step_ids.get(row.step_id, "?"), 128), params=params,
                               who=_one_line(row.requested_by, 64), at=_at(row.requested_at), outcome=outcome))
    return lines or [_t("none", lang)]


def _silences(facts: Facts, lang: str) -> list[str]:
    lines = []
    for row in facts.silences:
        line = "- " + _t("silence", lang, matchers=_one_line(row.matchers, TEXT_LIMIT).replace("`", "'"),
                         start=_at(row.starts_at),
                         end=_at(row.ends_at), who=_one_line(row.created_by, 128),
                         comment=_one_line(row.comment, TEXT_LIMIT))
        if row.expired_at is not None:
            line += _t("silence_expired", lang, who=_one_line(row.expired_by or "—", 64), at=_at(row.expired_at))
        lines.append(line)
    return lines or [_t("none", lang)]


# -- text helpers --------------------------------------------------------------------------------

def _entry(entry: TimelineEntry, *, with_kind: bool = True) -> str:
    kind = f"[{_one_line(entry.kind, 32)}] " if with_kind else ""
    return f"- {_at(entry.at)} · {_actor(entry)} · {kind}{_one_line(entry.text, TEXT_LIMIT)}"


def _link(entry: TimelineEntry) -> str:
    """A captured message's permalink, when it is a plain https URL."""
    url = str(entry.data.get("permalink") or "")
    return f" · [message]({url})" if re.fullmatch(r"https://[^\s()<>\[\]]{1,3000}", url) else ""


def _actor(entry: TimelineEntry | None) -> str:
    return _one_line(entry.actor, 128) if entry is not None else ""


def _at(at: datetime | None) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if at is not None else ""


def _code(value: Any, limit: int = VALUE_LIMIT) -> str:
    """Recorded text as inline code (a backtick in it would end the span early)."""
    return "`" + _one_line(value, limit).replace("`", "'") + "`"


def _pairs(values: dict[str, str]) -> str:
    return ", ".join(f"{_one_line(k, VALUE_LIMIT)}={_one_line(v, VALUE_LIMIT)}" for k, v in sorted(values.items()))


def _one_line(value: Any, limit: int) -> str:
    """Recorded text on one line (so it cannot open a section or end a list item), cut to `limit`."""
    text = " ".join(str(value if value is not None else "").split())
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"
