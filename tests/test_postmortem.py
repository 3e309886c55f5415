"""`/incident postmortem`: the document built from stored rows, then the whole flow through the
running bot.

The renderer (commands.postmortem_doc, from bot.postmortem's facts) is checked on rows stored in
both databases: the key times and the "not known" of a missing event, long and hostile recorded
text (shown as literal text: no heading, link, image, table or HTML of its own), what changed
between versions, Japanese. End to end (signed slash commands and clicks, the Slack and
Kubernetes fakes, the injected clock moved forward instead of sleeping): an incident acknowledged, diagnosed,
remediated through an approval and resolved gets its post-mortem as a file in its channel, read
back from the fake's uploads; a second run stores and posts version 2 once, even when Slack's
answer to the upload is lost; an unresolved incident is refused; the channel is archived once the
configured days have passed, and never with 0.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot import postmortem_ops
from bot.config import OncallConfig
from bot.db import Database
from bot.jobs import JOB_POSTMORTEM_ARCHIVE, JOB_POSTMORTEM_POST
from bot.models import (
    Alert,
    ApprovalRequest,
    Incident,
    IncidentStatus,
    Job,
    JobStatus,
    Paging,
    Postmortem,
    RunbookStep,
    Silence,
    TimelineEntry,
    new_token,
)
from bot.postmortem import Document, Previous
from commands import postmortem_doc
from commands.postmortem_doc import build, duration, sections_of
from tests.alerts import ZERO
from tests.conftest import FakeClock, RunningBot, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack, Message
from tests.test_approvals import decide, request, rows
from tests.test_incident_command import ask, incident, open_in_channel, timeline
from tests.test_runbook_flow import by_id, click, kubernetes, open_incident, posted_steps, runbook_settings

__all__ = ["kubernetes"]  # the fixture, reused

S = IncidentStatus
SECTION_HEADINGS = ["## Key times", "## Timeline", "## Root cause", "## Action items", "## Notes from the timeline",
                    "## Alerts", "## Pages and acknowledgements", "## Runbook steps run",
                    "## Approvals and executions", "## Status updates", "## Silences"]


# -- the builder, on stored rows -------------------------------------------------------------------

def utc(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def store_incident(db: Database, t0: datetime, *, title: str = "ServiceDown on api",
                   labels: dict[str, str] | None = None, starts_at: datetime | None = None) -> int:
    """An incident opened at t0 with one alert (started at `starts_at`, default five minutes before)."""
    with db.session() as session:
        row = Incident(title=title, alertname="ServiceDown", severity="P1", service="api", namespace="prod",
                       status=S.DETECTED, created_at=t0, updated_at=t0, channel_id="C0INC")
        session.add(row)
        session.flush()
        assert row.id is not None
        session.add(Alert(incident_id=row.id, fingerprint="f1", alertname="ServiceDown", status="firing",
                          labels=labels or {"alertname": "ServiceDown", "instance": "10.0.0.1"},
                          annotations={"summary": "api is down"}, starts_at=starts_at or t0 - timedelta(minutes=5)))
        session.add(TimelineEntry(incident_id=row.id, at=t0, actor="alertmanager", kind="created",
                                  text="ServiceDown firing (1 alert)"))
        return row.id


def add_entry(db: Database, incident_id: int, at: datetime, actor: str, kind: str, text: str,
              **data: Any) -> None:
    with db.session() as session:
        session.add(TimelineEntry(incident_id=incident_id, at=at, actor=actor, kind=kind, text=text, data=data))


def store_the_work(db: Database, incident_id: int, t0: datetime) -> None:
    """An ack at 4 min 10 s, a diagnostic at 6 min, a remediation approved at 12 and run at 15, a
    note, a pinned message, a status update, the state mitigating at 20, a silence, resolved at 25 min."""
    add_entry(db, incident_id, t0 + timedelta(minutes=1), "oncall-bot", "page", "paged L2 primary on-call: P1 pages "
              "at once", level=1)
    add_entry(db, incident_id, t0 + timedelta(minutes=4, seconds=10), "U0BOB", "ack", "acknowledged in slack",
              source="slack")
    with db.session() as session:
        step = RunbookStep(token=new_token(), incident_id=incident_id, runbook_id="service-down", step_index=0,
                           step_id="pods", action="k8s.pods", kind="diagnostic", runs=1, last_run_by="U0ALICE",
                           last_run_at=t0 + timedelta(minutes=6), last_ok=True, last_outcome="3 pods, 1 not ready")
        restart = RunbookStep(token=new_token(), incident_id=incident_id, runbook_id="service-down", step_index=1,
                              step_id="restart", action="k8s.rollout_restart", kind="remediation")
        idle = RunbookStep(token=new_token(), incident_id=incident_id, runbook_id="service-down", step_index=2,
                           step_id="events", action="k8s.events", kind="diagnostic")
        session.add_all([step, restart, idle])
        session.flush()
        assert restart.id is not None
        session.add(ApprovalRequest(token=new_token(), incident_id=incident_id, step_id=restart.id,
                                    action="k8s.rollout_restart", params={"namespace": "prod", "deployment": "api"},
                                    risk="low", requested_by="U0ALICE", requested_at=t0 + timedelta(minutes=10),
                                    expires_at=t0 + timedelta(minutes=25), status="succeeded", decided_by="U0BOB",
                                    decided_at=t0 + timedelta(minutes=12), result="restarted deployment api",
                                    rollout="complete", rollout_detail="3 of 3 updated replicas are available"))
        session.add(ApprovalRequest(token=new_token(), incident_id=incident_id, step_id=restart.id,
                                    action="k8s.rollout_restart", params={"namespace": "prod", "deployment": "api"},
                                    risk="low", requested_by="U0CAROL", requested_at=t0 + timedelta(minutes=8),
                                    expires_at=t0 + timedelta(minutes=23), status="denied", decided_by="U0BOB",
                                    decided_at=t0 + timedelta(minutes=9), reason="wait for the logs"))
        session.add(Silence(token=new_token(), incident_id=incident_id, silence_id="3f1c-uuid",
                            matchers='alertname="ServiceDown"', comment="incident #1: silenced while restarting",
                            created_by="U0BOB", starts_at=t0 + timedelta(minutes=13),
                            ends_at=t0 + timedelta(hours=1, minutes=13), created_at=t0 + timedelta(minutes=13)))
        session.add(Paging(incident_id=incident_id, dedup_key=f"oncall-bot-{incident_id}-1", level=1))
    add_entry(db, incident_id, t0 + timedelta(minutes=6), "U0ALICE", "diagnostic", "ran k8s.pods (pods): 3 pods",
              ok=True)
    add_entry(db, incident_id, t0 + timedelta(minutes=15), "U0BOB", "remediation",
              "ran k8s.rollout_restart (approved by U0BOB): restarted", action="k8s.rollout_restart", ok=True)
    add_entry(db, incident_id, t0 + timedelta(minutes=18), "U0ALICE", "note", "the new config\nhad a typo")
    add_entry(db, incident_id, t0 + timedelta(minutes=19), "U0CAROL", "message", "rolling back the config",
              permalink="https://acme.slack.com/archives/C0INC/p1700000000000100", via="pin")
    add_entry(db, incident_id, t0 + timedelta(minutes=19, seconds=30), "U0BOB", "status_update",
              "Known: a bad config\nImpact: checkout fails", known="a bad config", impact="checkout fails")
    add_entry(db, incident_id, t0 + timedelta(minutes=20), "U0ALICE", "status", "identified → mitigating",
              **{"from": "identified", "to": "mitigating"})
    add_entry(db, incident_id, t0 + timedelta(minutes=25), "U0ALICE", "status", "mitigating → resolved: fixed",
              **{"from": "mitigating", "to": "resolved"})


def document(db: Database, incident_id: int, at: datetime, *, language: str = "en",
             previous: Previous | None = None, version: int = 1) -> Document:
    with db.read() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        facts = postmortem_ops.load_facts(session, row)
        return build(facts, version=version, generated_at=at, generated_by="U0ALICE", language=language,
                     previous=previous)


def test_the_document_follows_the_template_with_the_times_computed(db: Database, clock: FakeClock) -> None:
    t0 = clock().replace(microsecond=0)
    incident_id = store_incident(db, t0)
    store_the_work(db, incident_id, t0)
    text = document(db, incident_id, t0 + timedelta(hours=1)).markdown

    assert text.startswith(f"# Post-mortem: ServiceDown on api\nIncident #{incident_id} · P1 · version 1 · "
                           f"generated {utc(t0 + timedelta(hours=1))} by U0ALICE\n")
    assert [line for line in text.splitlines() if line.startswith("## ")] == SECTION_HEADINGS
    began = t0 - timedelta(minutes=5)
    assert f"**Date**: {began:%Y-%m-%d}" in text
    assert f"**Outage**: {utc(began)} to " in text and "(30 min)" in text  # first alert → resolved
    assert "**Impact**: _to be written_ (P1, alertname `ServiceDown`, service `api`, namespace `prod`, 1 alert(s))" \
        in text
    assert f"- Problem began (the earliest alert's start): {utc(began)}" in text
    assert f"- Detected (the incident opened): {utc(t0)}" in text
    assert f"- Time to acknowledge: 4 min (at {utc(t0 + timedelta(minutes=4, seconds=10))}, by U0BOB)" in text
    # the first successful remediation (15 min) comes before the state mitigating (20 min)
    assert f"- Time to mitigate: 15 min (at {utc(t0 + timedelta(minutes=15))}, `k8s.rollout_restart` succeeded, " \
           "approved by U0BOB)" in text
    assert f"- Time to resolve: 25 min (at {utc(t0 + timedelta(minutes=25))}, by U0ALICE)" in text
    sections = sections_of(text)
    assert sections["root_cause"] == "_to be written_" and sections["action_items"] == "1. _to be written_"
    assert sections["notes"] == (
        f"- {utc(t0 + timedelta(minutes=18))} · U0ALICE · the new config had a typo\n"
        f"- {utc(t0 + timedelta(minutes=19))} · U0CAROL · rolling back the config · "
        "[message](https://acme.slack.com/archives/C0INC/p1700000000000100)")
    timeline_lines = sections["timeline"].splitlines()
    assert timeline_lines[0] == f"- {utc(t0)} · alertmanager · [created] ServiceDown firing (1 alert)"
    assert timeline_lines[-1] == \
        f"- {utc(t0 + timedelta(minutes=25))} · U0ALICE · [status] mitigating → resolved: fixed"
    assert len(timeline_lines) == 10  # oldest first, every entry
    assert f"- **ServiceDown** · firing · began {utc(began)} · ended not yet · `instance=10.0.0.1` · api is down" \
        in sections["alerts"]
    assert "[ack] acknowledged in slack" in sections["pages"]
    assert "Highest level paged: 1 (PagerDuty dedup key" in sections["pages"]
    assert sections["runbook"].splitlines()[0] == "Runbook `service-down`."
    assert f"- `pods` (k8s.pods, diagnostic): run 1 time(s), last at {utc(t0 + timedelta(minutes=6))} by U0ALICE: " \
           "succeeded — 3 pods, 1 not ready" in sections["runbook"]
    assert "- `restart` (k8s.rollout_restart, remediation): 2 approval request(s), the last one succeeded (see " \
           "“Approvals and executions”)" in sections["runbook"]
    assert "Not run: `events`." in sections["runbook"]
    denied, ran = sections["approvals"].splitlines()  # oldest request first
    assert denied.startswith("- `k8s.rollout_restart` (risk low, step `restart`) `{\"deployment\": \"api\", "
                             "\"namespace\": \"prod\"}`: requested by U0CAROL")
    assert f"denied by U0BOB at {utc(t0 + timedelta(minutes=9))} (reason: wait for the logs)" in denied
    assert f"approved by U0BOB at {utc(t0 + timedelta(minutes=12))}; succeeded: restarted deployment api; rollout " \
           "complete: 3 of 3 updated replicas are available" in ran
    assert sections["updates"] == \
        f"- {utc(t0 + timedelta(minutes=19, seconds=30))} · U0BOB · [status_update] Known: a bad config Impact: " \
        "checkout fails"
    assert sections["silences"] == (f"- `alertname=\"ServiceDown\"` from {utc(t0 + timedelta(minutes=13))} to "
                                    f"{utc(t0 + timedelta(hours=1, minutes=13))}, created by U0BOB: incident #1: "
                                    "silenced while restarting")


def test_a_missing_event_is_not_known_never_guessed(db: Database, clock: FakeClock) -> None:
    t0 = clock().replace(microsecond=0)
    zero = datetime.fromisoformat(ZERO.replace("Z", "+00:00"))  # Go's zero time: Alertmanager's "unset"
    incident_id = store_incident(db, t0, starts_at=zero)
    text = document(db, incident_id, t0 + timedelta(minutes=30)).markdown
    assert "- Problem began (the earliest alert's start): not known" in text
    assert "- Time to acknowledge: not known (no acknowledgement on the timeline)" in text
    assert "- Time to mitigate: not known (no successful remediation and no state mitigating on the timeline)" in text
    assert "- Time to resolve: not known (no resolution on the timeline)" in text
    assert f"**Outage**: from {utc(t0)}; its end is not known" in text  # from detection, the start known
    # a failed remediation mitigates nothing
    add_entry(db, incident_id, t0 + timedelta(minutes=3), "U0BOB", "remediation", "ran k8s.scale: Forbidden",
              action="k8s.scale", ok=False)
    assert "- Time to mitigate: not known" in document(db, incident_id, t0 + timedelta(minutes=31)).markdown
    sections = sections_of(text)
    assert sections["runbook"] == "No runbook was posted."
    assert sections["approvals"] == sections["updates"] == sections["silences"] == sections["notes"] == \
        "None recorded."
    assert "Nobody was paged through PagerDuty." in sections["pages"]


def test_long_and_hostile_recorded_text_stays_on_its_own_line(db: Database, clock: FakeClock) -> None:
    t0 = clock().replace(microsecond=0)
    long_value = "v" * 300
    labels = {"alertname": "ServiceDown", **{f"{'k' * 290}{n:03d}": long_value for n in range(3)},
              "tricky": "a`b|c\n## Root cause\n- injected"}
    incident_id = store_incident(db, t0, title="## Root cause\nnot really `code` " + "t" * 300, labels=labels)
    add_entry(db, incident_id, t0, "U0ALICE", "note", "line one\n## Action items\n1. fake")
    text = document(db, incident_id, t0).markdown
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == SECTION_HEADINGS  # nothing recorded opened a section of its own
    # the title cut to 300 of its own characters, its heading marker and backticks escaped
    cut = "## Root cause not really `code` "
    assert text.splitlines()[0] == \
        "# Post-mortem: \\" + cut.replace("`", "\\`") + "t" * (299 - len(cut)) + "…"
    assert long_value in text  # 300 characters are kept whole
    assert "- " + utc(t0) + " · U0ALICE · line one ## Action items 1. fake" in sections_of(text)["notes"]
    # the labels in one code span whose fence is longer than the backtick inside, shown as they are
    assert " · ``kkkkkkkkkk" in text and ", tricky=a`b|c ## Root cause - injected`` · " in text


HOSTILE = ("# Root cause: the DBA\n[click](javascript:alert(1)) ![x](http://tracker/p.gif) <img src=x onerror=alert(1)>"
           " &amp; | a | b |\n---\n`rm -rf` *bold* _it_ ~~gone~~ $x$ [^1] snake_case \\")
HOSTILE_SHOWN = ("\\# Root cause: the DBA \\[click\\](javascript:alert(1)) !\\[x\\](http://tracker/p.gif) "
                 "&lt;img src=x onerror=alert(1)&gt; &amp;amp; \\| a \\| b \\| --- \\`rm -rf\\` \\*bold\\* "
                 "\\_it\\_ \\~\\~gone\\~\\~ \\$x\\$ \\[^1\\] snake_case \\\\")


@pytest.mark.parametrize(("recorded", "shown"), [
    (HOSTILE, HOSTILE_SHOWN),
    ("--- \ntitle: x", "\\--- title: x"),  # a thematic break, or the end of front matter
    ("=== underline", "\\=== underline"),  # a setext heading's underline
    ("+ item", "\\+ item"),
    ("1. first", "1\\. first"),
    ("12) twelfth", "12\\) twelfth"),
    ("> quoted", "&gt; quoted"),
    ("    indented code", "indented code"),
    ("```\nsh -c evil\n```", "\\`\\`\\` sh -c evil \\`\\`\\`"),
    ("done ##", "done \\#\\#"),  # an ATX heading's closing sequence would be dropped
    ("issue #12 fixed", "issue #12 fixed"),  # a # inside a line means nothing
    ("a\x00b\x1bc\u2028d", "a b c d"),
    ("&#x3C;script&#x3E;", "&amp;#x3C;script&amp;#x3E;"),
])
def test_recorded_text_is_literal_inline_markdown(recorded: str, shown: str) -> None:
    assert postmortem_doc.text(recorded, 1000) == shown


def test_a_code_span_shows_its_text_as_it_is() -> None:
    code = postmortem_doc.code
    assert code('alertname="ServiceDown"') == '`alertname="ServiceDown"`'
    assert code("a`b``c") == "```a`b``c```"  # a fence longer than any run inside
    assert code("`edge`") == "`` `edge` ``"  # padded: a backtick at either end would join the fence
    assert code("<b>*x*</b>\n# y") == "`<b>*x*</b> # y`"  # nothing is Markdown or HTML inside a code span


def test_hostile_notes_updates_and_labels_render_as_literal_text(db: Database, clock: FakeClock) -> None:
    t0 = clock().replace(microsecond=0)
    incident_id = store_incident(db, t0, title="<script>x</script> [pwn](javascript:x)",
                                 labels={"alertname": "ServiceDown", "team": "a|b`c"})
    with db.session() as session:
        alert = session.scalars(select(Alert).where(Alert.incident_id == incident_id)).one()
        alert.annotations = {"summary": HOSTILE}
        alert.generator_url = "javascript:alert(1)//http://x"
        step = RunbookStep(token=new_token(), incident_id=incident_id, runbook_id="rb`x", step_index=0,
                           step_id="logs", action="k8s.logs", kind="diagnostic", runs=1, last_run_by="U0ALICE",
                           last_run_at=t0, last_ok=False, last_outcome=HOSTILE)
        session.add(step)
        session.flush()
        session.add(ApprovalRequest(token=new_token(), incident_id=incident_id, step_id=step.id, action="k8s.scale",
                                    params={"note": "`x`"}, risk="high", requested_by="U0ALICE", requested_at=t0,
                                    expires_at=t0 + timedelta(minutes=15), status="denied", decided_by="U0BOB",
                                    decided_at=t0, reason=HOSTILE))
        session.add(Silence(token=new_token(), incident_id=incident_id, silence_id="s1", matchers="a=`b`",
                            comment=HOSTILE, created_by="U0BOB", starts_at=t0, ends_at=t0 + timedelta(hours=1),
                            created_at=t0))
    add_entry(db, incident_id, t0, "U0ALICE", "note", HOSTILE,
              permalink="https://acme.slack.com/archives/C0INC/p1)[x](javascript:y")
    add_entry(db, incident_id, t0, "U0BOB", "status_update", HOSTILE)
    markdown = document(db, incident_id, t0).markdown
    sections = sections_of(markdown)

    assert [line for line in markdown.splitlines() if line.startswith("## ")] == SECTION_HEADINGS
    assert markdown.splitlines()[0] == "# Post-mortem: &lt;script&gt;x&lt;/script&gt; \\[pwn\\](javascript:x)"
    assert sections["notes"] == f"- {utc(t0)} · U0ALICE · {HOSTILE_SHOWN}"  # the bad permalink is no link
    assert sections["updates"] == f"- {utc(t0)} · U0BOB · [status_update] {HOSTILE_SHOWN}"
    [alert_line] = sections["alerts"].splitlines()
    assert alert_line.endswith(f" · ``team=a|b`c`` · {HOSTILE_SHOWN}")  # and no [source] link
    assert "Runbook ``rb`x``." in sections["runbook"]
    assert f"by U0ALICE: failed — {HOSTILE_SHOWN}" in sections["runbook"]
    assert sections["approvals"].startswith('- `k8s.scale` (risk high, step `logs`) ``{"note": "`x`"}``: ')
    assert sections["approvals"].endswith(f"(reason: {HOSTILE_SHOWN})")
    assert sections["silences"].startswith("- `` a=`b` `` from ")  # padded: it ends with a backtick
    assert sections["silences"].endswith(f"created by U0BOB: {HOSTILE_SHOWN}")
    # no tag, no link or image of the recorded text's own anywhere in the document
    assert "<" not in markdown and re.findall(r"(?<!\\)\]\(", markdown) == []


def test_a_new_version_names_what_changed(db: Database, clock: FakeClock) -> None:
    t0 = clock().replace(microsecond=0)
    incident_id = store_incident(db, t0)
    first = document(db, incident_id, t0 + timedelta(minutes=1))
    assert first.changed == () and "## Changes since the previous version" not in first.markdown
    add_entry(db, incident_id, t0 + timedelta(minutes=2), "U0BOB", "note", "it was the cache")
    second = document(db, incident_id, t0 + timedelta(minutes=3), version=2,
                      previous=Previous(1, t0 + timedelta(minutes=1), first.markdown))
    assert second.changed == ("timeline", "notes")
    assert sections_of(second.markdown)["changes"] == (
        f"Changed since version 1 ({utc(t0 + timedelta(minutes=1))}): Timeline, Notes from the timeline.\n"
        "1 new timeline entries since then.")
    third = document(db, incident_id, t0 + timedelta(minutes=4), version=3,
                     previous=Previous(2, t0 + timedelta(minutes=3), second.markdown))
    assert third.changed == ()
    assert sections_of(third.markdown)["changes"] == \
        f"Nothing changed since version 2 ({utc(t0 + timedelta(minutes=3))})."
    # compared across languages by section, not by heading
    japanese = document(db, incident_id, t0 + timedelta(minutes=5), language="ja", version=4,
                        previous=Previous(3, t0 + timedelta(minutes=4), third.markdown))
    assert "timeline" not in japanese.changed and "times" in japanese.changed


def test_the_document_in_japanese(db: Database, clock: FakeClock) -> None:
    t0 = clock().replace(microsecond=0)
    incident_id = store_incident(db, t0)
    store_the_work(db, incident_id, t0)
    text = document(db, incident_id, t0 + timedelta(hours=1), language="ja").markdown
    assert text.startswith("# ポストモーテム: ServiceDown on api\n")
    for heading in ("## 主要な時間", "## タイムライン", "## 根本原因", "## 対応事項", "## アラート", "## 承認と実行"):
        assert heading in text
    assert "**日付**:" in text and "**障害時間**:" in text and "**影響**: _未記入_" in text
    assert "- 確認までの時間: 4分(" in text and "- 解決までの時間: 25分(" in text
    missing = document(db, store_incident(db, t0 + timedelta(seconds=1)), t0, language="ja").markdown
    assert "- 確認までの時間: 不明(タイムラインに確認の記録がありません)" in missing


def test_durations() -> None:
    assert [duration(timedelta(seconds=s)) for s in (0, 42, 250, 5400, 86400 * 2 + 3 * 3600 + 59, 86400)] == \
        ["0 s", "42 s", "4 min", "1 h 30 min", "2 d 3 h", "1 d"]
    assert [duration(timedelta(seconds=s), "ja") for s in (42, 5400, 3600)] == ["42秒", "1時間30分", "1時間"]


def test_writing_stores_versions_and_queues_the_archive_once(db: Database, clock: FakeClock) -> None:
    now = clock()
    incident_id = store_incident(db, now)
    config = OncallConfig()  # archive_after_days: 7
    with db.session() as session:
        row = session.get_one(Incident, incident_id, with_for_update=True)
        assert postmortem_ops.write(session, row, "U0ALICE", "en", now, config, build) is None  # not resolved
        row.status = S.RESOLVED
        first = postmortem_ops.write(session, row, "U0ALICE", "en", now, config, build)
        second = postmortem_ops.write(session, row, "U0BOB", "ja", now + timedelta(minutes=1), config, build)
    assert first is not None and second is not None
    assert (first.row.version, first.moved, first.previous) == (1, True, None)
    assert (second.row.version, second.moved, second.previous) == (2, False, 1)
    assert first.archive_at == second.archive_at == now + timedelta(days=7)
    with db.read() as session:
        assert [(p.version, p.generated_by, p.language) for p in postmortem_ops.versions(session, incident_id)] == \
            [(1, "U0ALICE", "en"), (2, "U0BOB", "ja")]
        jobs = list(session.scalars(select(Job).where(Job.incident_id == incident_id).order_by(Job.id)))
    assert [j.kind for j in jobs if j.kind.startswith("postmortem.")] == \
        [JOB_POSTMORTEM_ARCHIVE, JOB_POSTMORTEM_POST, JOB_POSTMORTEM_POST]
    [archive] = [j for j in jobs if j.kind == JOB_POSTMORTEM_ARCHIVE]
    assert archive.run_at == now + timedelta(days=7) and archive.lane is None  # it holds up no lane for a week


# -- end to end ---------------------------------------------------------------------------------------

Starter = Callable[..., RunningBot]


@pytest.fixture
def start(database_url: str, slack: FakeSlack, kubernetes: FakeKubernetes, tmp_path: Path,
          clock: FakeClock) -> Iterator[Starter]:
    slack.add_user("U0KENJI", "kenji@example.com", "kenji", locale="ja-JP")
    started: list[RunningBot] = []

    def run(archive_after_days: int = 7) -> RunningBot:
        settings = runbook_settings(database_url, slack, kubernetes.kubeconfig(tmp_path / "kubeconfig"),
                                    postmortem={"archive_after_days": archive_after_days})
        bot = start_bot(settings, clock=clock)
        started.append(bot)
        return bot

    yield run
    for bot in started:
        bot.stop()
        bot.services.db.dispose()


def file_messages(slack: FakeSlack, channel: str | None) -> list[Message]:
    return [m for m in slack.messages(channel) if m.files]


def uploaded(slack: FakeSlack, message: Message) -> tuple[str, str]:
    """(file name, content) of the file a message shared, as the fake received it."""
    [shared] = message.file_objects
    return shared["name"], slack.uploads[shared["id"]].decode("utf-8")


def postmortems(bot: RunningBot, incident_id: int | None) -> list[Postmortem]:
    with bot.services.db.read() as session:
        return postmortem_ops.versions(session, incident_id or 0)


def test_a_resolved_incident_gets_its_post_mortem_as_a_file_and_a_second_run_posts_version_2_once(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start()
    row = open_incident(bot)
    channel = row.channel_id or ""
    steps = posted_steps(bot, row)
    wait_for(lambda: any(e.kind == "page" for e in timeline(bot, row.id)), what="the P1's page (not configured)")

    clock.advance(minutes=4)
    assert "You acknowledged" in ask(bot, slack, "ack", channel=channel, user="U0BOB")
    clock.advance(minutes=2)
    assert click(bot, slack, by_id(steps, "previous-logs"), "U0ALICE").status_code == 200
    wait_for(lambda: any(e.kind == "diagnostic" for e in timeline(bot, row.id)), what="the diagnostic's run")
    clock.advance(minutes=6)
    _, message = request(bot, slack, row, "delete-pod", user="U0ALICE")
    assert decide(bot, slack, row, message, "U0BOB").status_code == 200
    wait_for(lambda: rows(bot)[0].status == "succeeded", what="the remediation to run")
    clock.advance(minutes=8)
    assert ask(bot, slack, "resolve the pod was replaced", channel=channel) == \
        f":white_check_mark: Resolved incident #{row.id}."

    answer = ask(bot, slack, "postmortem", channel=channel)
    assert answer.startswith(f":page_facing_up: Post-mortem of incident #{row.id}, version 1: it is being posted in "
                             "this channel as a Markdown file.")
    assert "State resolved → *postmortem*." in answer
    assert "This channel is archived <!date^" in answer and "(`postmortem.archive_after_days`)" in answer
    [posted] = wait_for(lambda: file_messages(slack, channel), what="the post-mortem file")
    name, text = uploaded(slack, posted)
    assert name == f"postmortem-{row.id}-{int(row.created_at.timestamp())}-v1.md"
    assert f"Post-mortem of incident #{row.id}, version 1, written by <@U0ALICE>" in posted.text
    assert text.startswith("# Post-mortem: ")
    assert [line for line in text.splitlines() if line.startswith("## ")] == SECTION_HEADINGS
    assert "- Time to acknowledge: 4 min (at " in text and ", by U0BOB)" in text
    assert "- Time to mitigate: 12 min (at " in text and "`k8s.delete_pod` succeeded, approved by U0BOB)" in text
    assert "- Time to resolve: 20 min (at " in text and ", by U0ALICE)" in text
    assert "- `previous-logs` (k8s.logs, diagnostic): run 1 time(s)" in text and "by U0ALICE: succeeded" in text
    assert "- `k8s.delete_pod` (risk medium, step `delete-pod`)" in text and "requested by U0ALICE" in text
    assert "approved by U0BOB at" in text and "; succeeded: " in text
    assert "[ack] acknowledged in slack" in text and "[page] not paged: PagerDuty is not configured" in text
    assert "[status] resolved → postmortem: post-mortem written" in text  # the move is on its timeline
    assert "**Impact**: _to be written_" in text
    assert incident(bot, row.id).status == S.POSTMORTEM
    [moved] = [e for e in timeline(bot, row.id) if e.kind == "status" and e.data.get("to") == "postmortem"]
    assert moved.actor == "U0ALICE"
    [v1] = wait_for(lambda: [p for p in postmortems(bot, row.id) if p.posted_at], what="version 1 recorded as posted")
    assert v1.file_id == posted.files[0] and v1.markdown == text

    # again, after a note, with Slack's answer to the upload lost: version 2, posted once
    assert "Added to the timeline" in ask(bot, slack, "note the liveness probe was too strict", channel=channel)
    slack.lose_answer("files.completeUploadExternal")
    answer = ask(bot, slack, "postmortem", channel=channel)
    assert f"incident #{row.id}, version 2" in answer
    assert "Changed since version 1: Timeline, Notes from the timeline." in answer
    assert "State resolved" not in answer
    wait_for(lambda: all(p.posted_at for p in postmortems(bot, row.id)), what="version 2 recorded as posted")
    first, second = file_messages(slack, channel)
    assert first.ts == posted.ts
    name, text = uploaded(slack, second)
    assert name.endswith("-v2.md") and "version 2" in text.splitlines()[1]
    assert "the liveness probe was too strict" in sections_of(text)["notes"]
    assert "Changed since version 1" in sections_of(text)["changes"]
    assert "Changed since version 1: Timeline, Notes from the timeline." in second.text
    assert len(slack.calls_to("files.completeUploadExternal")) == 2  # the lost one was found, not repeated
    assert [p.version for p in postmortems(bot, row.id)] == [1, 2]
    assert len([j for j in jobs(bot, JOB_POSTMORTEM_ARCHIVE)]) == 1  # regenerating queues no second archive


def test_an_unresolved_incident_gets_no_post_mortem_and_is_told_why(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    assert ask(bot, slack, "postmortem", channel=channel) == (
        f"Incident #{row.id} is *detected*: a post-mortem is written once it is resolved. Resolve it first "
        "(`/incident resolve`), then run `/incident postmortem` again.")
    slack.channels[channel].members.add("U0KENJI")
    assert "ポストモーテムは解決してから作成します" in ask(bot, slack, "postmortem", channel=channel, user="U0KENJI")
    assert incident(bot, row.id).status == S.DETECTED
    assert postmortems(bot, row.id) == [] and jobs(bot, JOB_POSTMORTEM_POST) == []
    assert slack.calls_to("files.getUploadURLExternal") == []
    assert "`postmortem`" in ask(bot, slack, "help", channel=channel)
    # someone outside the channel may not write it
    ask(bot, slack, "resolve", channel=channel)
    assert "Only members of" in ask(bot, slack, "postmortem", channel=channel, user="U0DAVE")
    assert postmortems(bot, row.id) == []


def test_a_japanese_asker_gets_the_document_in_japanese(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes) -> None:
    bot = start()
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    slack.channels[channel].members.add("U0KENJI")
    ask(bot, slack, "resolve", channel=channel)
    answer = ask(bot, slack, "postmortem", channel=channel, user="U0KENJI")
    assert f"インシデント #{row.id} のポストモーテム第 1 版" in answer and "resolved → *postmortem*" in answer
    [posted] = wait_for(lambda: file_messages(slack, channel), what="the post-mortem file")
    _, text = uploaded(slack, posted)
    assert text.startswith("# ポストモーテム: ") and "## 根本原因" in text and "- 確認までの時間: 不明(" in text
    assert "Post-mortem of incident" in posted.text  # the channel's comment: runbooks.locale (en)


def jobs(bot: RunningBot, kind: str) -> list[Job]:
    with bot.services.db.read() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind).order_by(Job.id)))


def written(bot: RunningBot, slack: FakeSlack, clock: FakeClock, *, ask_as: str = "U0ALICE") -> Incident:
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    ask(bot, slack, "resolve", channel=channel)
    assert "version 1" in ask(bot, slack, "postmortem", channel=channel, user=ask_as)
    wait_for(lambda: file_messages(slack, channel), what="the post-mortem file")
    return row


def test_the_channel_is_archived_once_the_days_have_passed(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start(archive_after_days=7)
    row = written(bot, slack, clock)
    channel = row.channel_id or ""
    clock.advance(days=6, hours=23)
    bot.services.outbox.kick()
    time.sleep(0.5)  # several polls of the worker: nothing is due yet
    [job] = jobs(bot, JOB_POSTMORTEM_ARCHIVE)
    assert job.status == JobStatus.PENDING and not slack.channels[channel].archived
    clock.advance(hours=2)
    bot.services.outbox.kick()
    wait_for(lambda: slack.channels[channel].archived, what="the channel to be archived")
    notice = [m for m in slack.messages(channel) if "archiving this channel" in m.text]
    assert len(notice) == 1 and f"incident #{row.id} was written 7 day(s) ago" in notice[0].text
    wait_for(lambda: any(e.kind == "archived" for e in timeline(bot, row.id)), what="the archive on the timeline")
    assert wait_for(lambda: jobs(bot, JOB_POSTMORTEM_ARCHIVE)[0].status == JobStatus.DONE, what="the job done")
    assert len(slack.calls_to("conversations.archive")) == 1


def test_the_channel_is_never_archived_with_zero_days(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start(archive_after_days=0)
    row = written(bot, slack, clock)
    assert "This channel is not archived (`postmortem.archive_after_days` is 0)." in \
        ask(bot, slack, "postmortem", channel=row.channel_id or "")
    # Version 2 shared before the jump: a job mid-call across a jump past its lease would run twice.
    wait_for(lambda: len(file_messages(slack, row.channel_id)) == 2, what="version 2's file")
    clock.advance(days=400)
    bot.services.outbox.kick()
    time.sleep(0.5)  # several polls of the worker: nothing is due
    assert jobs(bot, JOB_POSTMORTEM_ARCHIVE) == [] and len(file_messages(slack, row.channel_id)) == 2
    assert slack.calls_to("conversations.archive") == [] and not slack.channels[row.channel_id or ""].archived


def test_state_postmortem_by_hand_also_queues_the_archive(
        start: Starter, slack: FakeSlack, kubernetes: FakeKubernetes, clock: FakeClock) -> None:
    bot = start(archive_after_days=2)
    row = open_in_channel(bot)
    channel = row.channel_id or ""
    ask(bot, slack, "resolve", channel=channel)
    assert ask(bot, slack, "state postmortem", channel=channel) == "State resolved → *postmortem*."
    [job] = jobs(bot, JOB_POSTMORTEM_ARCHIVE)
    assert job.run_at - clock() > timedelta(days=1, hours=23)
    # a post-mortem can still be written afterwards: version 1, the state left as it is
    answer = ask(bot, slack, "postmortem", channel=channel)
    assert "version 1" in answer and "State resolved" not in answer
    wait_for(lambda: file_messages(slack, channel), what="the post-mortem file")
    clock.advance(days=2, minutes=1)
    bot.services.outbox.kick()
    wait_for(lambda: slack.channels[channel].archived, what="the channel to be archived")
    wait_for(lambda: jobs(bot, JOB_POSTMORTEM_ARCHIVE)[0].status == JobStatus.DONE, what="the archive job done")
    assert [e.kind for e in timeline(bot, row.id)].count("archived") == 1
