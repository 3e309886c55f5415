"""Snapshot (golden JSON) tests of every Block Kit and text builder: the incident card, the
announcement, the runbook messages and the notices, exactly as Slack would receive them.

The builders are pure, so each case renders model objects built here. Times are relative to one
`now` taken from the clock (mid-day UTC, so "today" never crosses midnight) and are normalised
before the comparison: a Slack date token `<!date^1767268800^{time}|12:00 UTC>` becomes
`<!date^{now-9m}^{time}|{now-9m:%H:%M} UTC>`, so the golden files hold no calendar date and pass
whatever the day. Each case is rendered from several bases (today, 400 days on, ten years on) and
must normalise to the same file.

Golden files live in tests/data/golden/<case>.json. A missing file, or UPDATE_GOLDEN=1, writes it
and fails (so a missing snapshot never passes silently in CI): inspect the diff, then run again.

Every snapshot is also checked against Slack's limits (the fake Slack's validator) and against
an escaping invariant: no untrusted text reaches Slack's mrkdwn parser as a mention or a link.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.card_memory import PastIncident
from bot.card_view import CardView
from bot.models import STORM, Alert, ApprovalRequest, Incident, IncidentStatus, Paging, StormMember, TimelineEntry
from bot.runbook_format import Runbook
from bot.runbooks import load_runbooks, prepare_steps
from commands.cards import announcement, incident_card
from commands.notices import NOTICE_KINDS, notice_text
from commands.runbook_blocks import no_runbook_blocks, runbook_fallback_text, runbook_messages
from commands.slack_time import slack_time
from tests.conftest import FakeClock
from tests.fakes.slack_blocks import validate_blocks

GOLDEN = Path(__file__).parent / "data" / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# The clock's offsets the cases are rendered at: each must give the same normalised output.
BASES = {"today": timedelta(), "plus-400d": timedelta(days=400), "plus-10y": timedelta(days=3653)}

# Every untrusted field of the hostile cases carries this: mentions, a link, an entity, mrkdwn.
HOSTILE = "<!channel> <@U123> <https://evil|click> &lt; `tick` *bold* <!here> <!everyone>"
FORBIDDEN = ("<!channel", "<!here", "<!everyone", "<@U123", "<https://evil", "<!subteam")

# The only `<…>` a builder may compose itself: mentions of the Slack user ids given to it as
# such (validated ids: Incident.commander / acknowledged_by, a notice's `user`/`owner`/`by`,
# runbook notes composed by the caller), the announcement's channel, Slack date tokens, and links
# to the (safe, http(s)) URLs of these cases.
ALLOWED_MENTIONS = {"<@U0ALICE>", "<@U0BOB>", "<@W0CAROL>", "<#C0INC42>"}
ALLOWED_TOKEN = re.compile(r"<!date\^\{now[^}]*\}\^[^|<>]*\|[^<>]*>|<https?://[a-z0-9.-]+\.example\.com[^\s<>|]*\|[^<>]*>")

Messages = list[dict[str, Any]]  # each {"text": str, "blocks": [...]} (notices: text only)


# -- normalising times ---------------------------------------------------------------------------------

def base_now(offset: timedelta) -> datetime:
    """The clock's now (moved by `offset`), at 12:00 UTC: times up to 12 h either side stay on its day."""
    return FakeClock(offset)().replace(hour=12, minute=0, second=0, microsecond=0)


def offset_label(at: datetime, now: datetime) -> str:
    """`now`, `now-9m`, `now+2h`, `now-1d2h30m`: `at` relative to `now`."""
    seconds = int((at - now).total_seconds())
    if seconds == 0:
        return "now"
    sign, seconds = ("-" if seconds < 0 else "+"), abs(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "now" + sign + "".join(parts)


_DATE_TOKEN = re.compile(r"<!date\^(\d+)\^([^|<>]*)\|([^<>]*)>")
_DATE_TIME = re.compile(r"(?<![\d-])(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2})(?![\d:])")
_TIME = re.compile(r"(?<![\d:])(\d{2}):(\d{2})(?![\d:])")


def _plain_times(text: str, now: datetime, anchor: datetime | None = None) -> str:
    """`2031-02-05 14:00` -> `{now+2h:%Y-%m-%d %H:%M}`; a bare `11:51` -> `{now-9m:%H:%M}`, read
    on the day of `anchor` (a date token's own instant), else on `now`'s day."""
    def date_time(m: re.Match[str]) -> str:
        at = datetime.strptime(f"{m[1]} {m[2]}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
        return "{" + offset_label(at, now) + ":%Y-%m-%d %H:%M}"

    def bare(m: re.Match[str]) -> str:
        day = anchor or now
        at = day.replace(hour=int(m[1]), minute=int(m[2]), second=0, microsecond=0)
        return "{" + offset_label(at, now) + ":%H:%M}"

    return _TIME.sub(bare, _DATE_TIME.sub(date_time, text))


def _normalise_text(text: str, now: datetime) -> str:
    def token(m: re.Match[str]) -> str:
        at = datetime.fromtimestamp(int(m[1]), UTC)
        return f"<!date^{{{offset_label(at, now)}}}^{m[2]}|{_plain_times(m[3], now, at)}>"

    pieces, last = [], 0
    for m in _DATE_TOKEN.finditer(text):  # tokens first: their fallback is read on their own day
        pieces += [_plain_times(text[last:m.start()], now), token(m)]
        last = m.end()
    pieces.append(_plain_times(text[last:], now))
    return "".join(pieces)


def normalise(obj: Any, now: datetime) -> Any:
    """The JSON with every time it shows (Slack date tokens, `%Y-%m-%d %H:%M` and `%H:%M`
    renderings) replaced by its offset to `now`."""
    if isinstance(obj, dict):
        return {key: normalise(value, now) for key, value in obj.items()}
    if isinstance(obj, list):
        return [normalise(value, now) for value in obj]
    if isinstance(obj, str):
        return _normalise_text(obj, now)
    return obj


def test_normalise_replaces_every_time_with_its_offset() -> None:
    now = base_now(timedelta())
    nine = now - timedelta(minutes=9)
    yesterday = now - timedelta(days=1, hours=2)
    text = (f"{slack_time(nine, now)} · {slack_time(yesterday, now)} · until {now + timedelta(hours=2):%Y-%m-%d %H:%M}"
            f" UTC · at {nine:%H:%M} UTC")
    assert normalise({"a": [text]}, now) == {"a": [
        "<!date^{now-9m}^{time}|{now-9m:%H:%M} UTC> · "
        "<!date^{now-1d2h}^{date_short_pretty} {time}|{now-1d2h:%Y-%m-%d %H:%M} UTC> · "
        "until {now+2h:%Y-%m-%d %H:%M} UTC · at {now-9m:%H:%M} UTC"]}


def test_normalise_does_not_depend_on_the_date() -> None:
    def render(now: datetime) -> str:
        return " ".join(slack_time(now + timedelta(minutes=m), now) for m in (-700, -1, 0, 59, 700, -1441, 2880))

    assert len({json.dumps(normalise(render(base_now(o)), base_now(o))) for o in BASES.values()}) == 1
    # A token whose fallback is not its instant's own rendering stays visible once normalised.
    now = base_now(timedelta())
    wrong = f"<!date^{int(now.timestamp())}^{{time}}|11:00 UTC>"
    assert normalise(wrong, now) == "<!date^{now}^{time}|{now-1h:%H:%M} UTC>"


# -- the models ---------------------------------------------------------------------------------------

def _incident(now: datetime, **fields: Any) -> Incident:
    """Its status a plain string, as the database gives it back (see test_the_status_word_...)."""
    values: dict[str, Any] = dict(
        id=42, card_token="card-token-42", title="HighLatency on checkout (3 alerts)", alertname="HighLatency",
        severity="P2",
        status=IncidentStatus.DETECTED.value, service="checkout", namespace="prod",
        labels={"alertname": "HighLatency", "team": "payments", "service": "checkout"},
        annotations={"description": "p99 latency of checkout above 2 s for 10 minutes",
                     "runbook_url": "https://wiki.example.com/runbooks/high-latency",
                     "dashboard": "https://grafana.example.com/d/checkout"},
        external_url="https://alertmanager.example.com", created_at=now - timedelta(minutes=12),
        updated_at=now - timedelta(minutes=1))
    return Incident(**{**values, **fields})


def _alert(started: datetime, n: int, *, status: str = "firing", name: str = "HighLatency",
           annotations: dict[str, str] | None = None, **labels: str) -> Alert:
    return Alert(incident_id=42, fingerprint=f"fp{n:04d}", alertname=name, status=status,
                 labels={"alertname": name, "service": "checkout", **labels},
                 annotations=annotations if annotations is not None else {"summary": f"p99 {2 + n / 10:.1f} s"},
                 generator_url=f"https://prometheus.example.com/graph?g0.expr=latency&n={n}",
                 starts_at=started, ends_at=None if status == "firing" else started + timedelta(minutes=4))


def _alerts(now: datetime) -> list[Alert]:
    return [_alert(now - timedelta(minutes=11), 1, pod="checkout-7d9f-a1"),
            _alert(now - timedelta(minutes=9), 2, pod="checkout-7d9f-b2",
                   annotations={"summary": "p99 2.6 s", "description": "p99 2.6 s on one pod only"}),
            _alert(now - timedelta(minutes=12), 3, status="resolved", pod="checkout-7d9f-c3")]


def _entry(at: datetime, n: int, actor: str, kind: str, text: str) -> TimelineEntry:
    return TimelineEntry(id=n, incident_id=42, at=at, actor=actor, kind=kind, text=text)


def _timeline(now: datetime) -> list[TimelineEntry]:
    opened = "opened the incident with 3 alerts firing"
    return [_entry(now - timedelta(minutes=12), 1, "alertmanager", "created", opened),
            _entry(now - timedelta(minutes=10), 2, "oncall-bot", "page", "page scheduled in 5 min")]


PAGED_L1 = "paged L1 primary on-call: not acknowledged"


def _paging(now: datetime, **fields: Any) -> Paging:
    values: dict[str, Any] = dict(incident_id=42, dedup_key="oncall-bot/42", updated_at=now)
    return Paging(**{**values, **fields})


def _acked(now: datetime, **fields: Any) -> dict[str, Any]:
    return dict(status=IncidentStatus.INVESTIGATING.value, acknowledged_at=now - timedelta(minutes=3),
                acknowledged_by="U0ALICE", commander="U0ALICE", **fields)


_card_locale = ["en"]  # the language `_card` renders a case in unless its view names one: see `_card_in`


def _card(view: CardView) -> Messages:
    if view.locale == "en":
        view = dataclasses.replace(view, locale=_card_locale[-1])
    text, blocks = incident_card(view)
    return [{"text": text, "blocks": blocks}]


def _card_in(locale: str, case: Callable[[datetime], Messages], now: datetime) -> Messages:
    """An English card case rendered with `runbooks.locale: <locale>`."""
    _card_locale.append(locale)
    try:
        return case(now)
    finally:
        _card_locale.pop()


def test_the_status_word_is_the_same_for_the_enum_and_the_stored_string() -> None:
    now = base_now(timedelta())
    stored, fresh = (CardView(incident=_incident(now, status=status), alerts=[], now=now)
                     for status in ("escalated", IncidentStatus.ESCALATED))
    assert incident_card(fresh) == incident_card(stored)


# -- the card's cases ------------------------------------------------------------------------------------

def card_detected_pending_page(now: datetime) -> Messages:
    return _card(CardView(incident=_incident(now), alerts=_alerts(now), timeline=_timeline(now), now=now,
                          paging=_paging(now), page_at=now + timedelta(minutes=3)))


def card_acknowledged_paged_delivered(now: datetime) -> Messages:
    timeline = [*_timeline(now),
                _entry(now - timedelta(minutes=7), 3, "oncall-bot", "page", PAGED_L1),
                _entry(now - timedelta(minutes=3), 4, "U0ALICE", "ack", "acknowledged in slack"),
                _entry(now - timedelta(minutes=3), 5, "U0ALICE", "status", "detected → investigating")]
    return _card(CardView(incident=_incident(now, **_acked(now)), alerts=_alerts(now), timeline=timeline, now=now,
                          paging=_paging(now, level=1, paged_at=now - timedelta(minutes=7), delivery="delivered",
                                         delivered_at=now - timedelta(minutes=6), pd_incident_id="PD42")))


def card_page_pending_retrying(now: datetime) -> Messages:
    return _card(CardView(incident=_incident(now), alerts=_alerts(now), timeline=_timeline(now), now=now,
                          paging=_paging(now, level=1, paged_at=now - timedelta(minutes=1), delivery="pending",
                                         last_error="HTTP 503 from events.pagerduty.com: Service Unavailable")))


def card_page_failed(now: datetime) -> Messages:
    return _card(CardView(incident=_incident(now), alerts=_alerts(now), timeline=_timeline(now), now=now,
                          paging=_paging(now, level=1, paged_at=now - timedelta(minutes=2), delivery="failed",
                                         last_error="HTTP 400: Invalid routing key " + "x" * 200)))


def card_maintenance_window(now: datetime) -> Messages:
    return _card(CardView(incident=_incident(now), alerts=_alerts(now), timeline=_timeline(now), now=now,
                          paging=_paging(now, held="maintenance window db-upgrade until … UTC: nobody is paged"),
                          page_at=now + timedelta(minutes=3), window=("db-upgrade", now + timedelta(hours=2))))


def card_pagerduty_unconfigured(now: datetime) -> Messages:
    return _card(CardView(incident=_incident(now, severity="P1"), alerts=_alerts(now), timeline=_timeline(now),
                          now=now, paging=_paging(now), page_at=now + timedelta(minutes=3),
                          pagerduty_unconfigured=True))


def card_page_held_not_configured(now: datetime) -> Messages:
    """The page came due with no routing key: the reason is held, and Page now stays."""
    return _card(CardView(incident=_incident(now, severity="P1"), alerts=_alerts(now), timeline=_timeline(now),
                          now=now, paging=_paging(now, held="PagerDuty is not configured (set PAGERDUTY_ROUTING_KEY): "
                                                            "nobody was paged")))


def card_acked_in_pagerduty(now: datetime) -> Messages:
    incident = _incident(now, status=IncidentStatus.TRIAGED.value, acknowledged_at=now - timedelta(minutes=2))
    timeline = [*_timeline(now), _entry(now - timedelta(minutes=2), 3, "pagerduty:Ann Example", "ack",
                                        "acknowledged in PagerDuty by Ann Example")]
    return _card(CardView(incident=incident, alerts=_alerts(now), timeline=timeline, now=now,
                          paging=_paging(now, level=1, paged_at=now - timedelta(minutes=7), delivery="delivered",
                                         delivered_at=now - timedelta(minutes=7),
                                         acked_in_pagerduty_by="Ann Example")))


def card_escalated(now: datetime) -> Messages:
    incident = _incident(now, status=IncidentStatus.ESCALATED.value, severity="P1", commander="W0CAROL")
    timeline = [*_timeline(now),
                _entry(now - timedelta(minutes=7), 3, "oncall-bot", "page", PAGED_L1),
                _entry(now - timedelta(minutes=2), 4, "U0BOB", "escalate", "escalated to L2: escalated by hand"),
                _entry(now - timedelta(minutes=2), 5, "U0BOB", "status", "investigating → escalated")]
    return _card(CardView(incident=incident, alerts=_alerts(now), timeline=timeline, now=now,
                          paging=_paging(now, level=2, paged_at=now - timedelta(minutes=2), delivery="delivered",
                                         delivered_at=now - timedelta(minutes=1))))


def card_resolved(now: datetime) -> Messages:
    """Began yesterday (its times show their date), resolved in PagerDuty a minute ago: no buttons."""
    started = now - timedelta(days=1, hours=2, minutes=30)
    alerts = [_alert(started, 1, status="resolved", pod="checkout-7d9f-a1"),
              _alert(started + timedelta(minutes=5), 2, status="resolved", pod="checkout-7d9f-b2")]
    incident = _incident(now, status=IncidentStatus.RESOLVED.value, created_at=started + timedelta(minutes=1),
                         resolved_at=now - timedelta(minutes=1), resolved_by="pagerduty:Ann Example",
                         **{k: v for k, v in _acked(now).items() if k != "status"})
    timeline = [_entry(started + timedelta(minutes=1), 1, "alertmanager", "created", "opened the incident"),
                _entry(now - timedelta(minutes=3), 2, "U0ALICE", "ack", "acknowledged in slack"),
                _entry(now - timedelta(minutes=1), 3, "pagerduty:Ann Example", "status", "investigating → resolved")]
    return _card(CardView(incident=incident, alerts=alerts, timeline=timeline, now=now,
                          paging=_paging(now, level=1, paged_at=started + timedelta(minutes=6), delivery="delivered",
                                         delivered_at=started + timedelta(minutes=6))))


def card_resolved_ja(now: datetime) -> Messages:
    """The card in the configured language (runbooks.locale: ja): its words, durations and notes."""
    return _card_in("ja", card_resolved, now)


def card_escalated_ja(now: datetime) -> Messages:
    return _card_in("ja", card_escalated, now)


def card_page_pending_retrying_ja(now: datetime) -> Messages:
    return _card_in("ja", card_page_pending_retrying, now)


def card_maintenance_window_ja(now: datetime) -> Messages:
    return _card_in("ja", card_maintenance_window, now)


def card_pagerduty_unconfigured_ja(now: datetime) -> Messages:
    return _card_in("ja", card_pagerduty_unconfigured, now)


def card_many_alerts(now: datetime) -> Messages:
    """23 alerts, 5 more Alertmanager did not send: 20 shown, "…and 8 more"."""
    alerts = [_alert(now - timedelta(minutes=30 - n), n, status="firing" if n % 4 else "resolved",
                     pod=f"checkout-7d9f-{n:02d}") for n in range(1, 24)]
    incident = _incident(now, title="HighLatency on checkout (28 alerts)", truncated_alerts=5)
    return _card(CardView(incident=incident, alerts=alerts, timeline=_timeline(now), now=now,
                          paging=_paging(now), page_at=now + timedelta(minutes=3)))


def card_hostile(now: datetime) -> Messages:
    """Every untrusted field carries mentions, links, entities and mrkdwn."""
    incident = _incident(
        now, title=f"Title {HOSTILE}", alertname=f"Alert{HOSTILE}", service=f"svc {HOSTILE}",
        namespace=f"ns {HOSTILE}", labels={"alertname": HOSTILE},
        annotations={"description": f"Common description {HOSTILE}",
                     "runbook_url": "https://evil|click", "dashboard": "javascript:alert(1)"},
        external_url="https://alertmanager.example.com/<!channel>")
    alerts = [
        _alert(now - timedelta(minutes=5), 1, name=f"Name {HOSTILE}", pod=f"pod {HOSTILE}",
               annotations={"summary": f"Summary {HOSTILE}", "description": f"Own description {HOSTILE}"},
               **{f"key{HOSTILE}": "value"}),
        Alert(incident_id=42, fingerprint="fp-evil", alertname="Plain", status="firing", labels={"alertname": "Plain"},
              annotations={}, generator_url="https://evil|click", starts_at=now - timedelta(minutes=4)),
    ]
    timeline = [_entry(now - timedelta(minutes=4), 1, f"pagerduty:{HOSTILE}", "ack", f"Entry {HOSTILE}"),
                _entry(now - timedelta(minutes=3), 2, HOSTILE, "note", f"Note {HOSTILE}"),
                _entry(now - timedelta(minutes=2), 3, "U123>", "note", "an actor that is not a user id"),
                _entry(now - timedelta(minutes=1), 4, "oncall-bot", "status", f"detected → {HOSTILE}")]
    paging = _paging(now, level=1, paged_at=now - timedelta(minutes=2), delivery=f"weird {HOSTILE}",
                     last_error=f"Error {HOSTILE}", acked_in_pagerduty_by=f"PD {HOSTILE}", held=f"Held {HOSTILE}")
    return _card(CardView(incident=incident, alerts=alerts, timeline=timeline, now=now, paging=paging))


def card_hostile_window(now: datetime) -> Messages:
    """A maintenance window's name and a held reason, hostile; the pending page's failed retry too."""
    paging = _paging(now, held=f"maintenance window {HOSTILE} until … UTC: nobody is paged")
    return [
        *_card(CardView(incident=_incident(now), alerts=_alerts(now), now=now, paging=paging,
                        window=(f"Window {HOSTILE}", now + timedelta(hours=3)))),
        *_card(CardView(incident=_incident(now), alerts=_alerts(now), now=now,
                        paging=_paging(now, held=f"Held {HOSTILE}"))),
        *_card(CardView(incident=_incident(now), alerts=_alerts(now), now=now,
                        paging=_paging(now, level=1, delivery="pending", last_error=f"Retry {HOSTILE}"))),
    ]


def _remediations(now: datetime, hostile: str = "") -> list[ApprovalRequest]:
    """Newest first: awaiting approval, rolled out after it ran, denied with a reason."""
    def request(n: int, action: str, params: dict[str, Any], minutes_ago: int, **fields: Any) -> ApprovalRequest:
        return ApprovalRequest(id=n, token=f"approval-{n}", incident_id=42, step_id=n, action=action, params=params,
                               risk="medium", requested_by="U0ALICE", requested_at=now - timedelta(minutes=minutes_ago),
                               expires_at=now - timedelta(minutes=minutes_ago) + timedelta(minutes=15), **fields)
    return [
        request(3, "k8s.scale", {"namespace": "prod", "deployment": f"checkout{hostile}", "replicas": 6}, 1),
        request(2, "k8s.rollout_restart", {"namespace": "prod", "deployment": "checkout"}, 6, status="succeeded",
                decided_by="U0BOB", decided_at=now - timedelta(minutes=5), result=f"restarted{hostile}",
                rollout="complete", rollout_detail=f"3 of 3 updated replicas available{hostile}"),
        request(1, "k8s.delete_pod", {"namespace": "prod", "pod": "checkout-7d9f-a1"}, 9, status="denied",
                decided_by="U0BOB", decided_at=now - timedelta(minutes=8), reason=f"not this pod{hostile}"),
    ]


def _past(now: datetime, hostile: str = "") -> list[PastIncident]:
    """The last three like it, last resolved first: after a rollback, after a runbook step, after nothing."""
    return [
        PastIncident(id=41, channel_id="C0INC42", opened_at=now - timedelta(days=2, minutes=14),
                     resolved_at=now - timedelta(days=2), kind="remediation", action="k8s.rollout_undo",
                     params={"namespace": "prod", "deployment": f"checkout{hostile}"}),
        PastIncident(id=37, channel_id=None, opened_at=now - timedelta(days=9, hours=2),
                     resolved_at=now - timedelta(days=9), kind="step", action="k8s.logs", step_id=f"logs{hostile}",
                     params={"namespace": "prod", "pod": "checkout-1"}),
        PastIncident(id=30, channel_id=None, opened_at=now - timedelta(days=30, minutes=5),
                     resolved_at=now - timedelta(days=30), kind=None),
    ]


def _memory_view(now: datetime, locale: str, hostile: str = "") -> CardView:
    return CardView(incident=_incident(now, **_acked(now)), alerts=_alerts(now), timeline=_timeline(now), now=now,
                    paging=_paging(now, level=1, paged_at=now - timedelta(minutes=7), delivery="delivered",
                                   delivered_at=now - timedelta(minutes=6)),
                    locale=locale, past=_past(now, hostile), remediations=_remediations(now, hostile))


def card_memory_en(now: datetime) -> Messages:
    """Past incidents like it, its remediations, the state buttons (investigating: identified, mitigating)."""
    return _card(_memory_view(now, "en"))


def card_memory_ja(now: datetime) -> Messages:
    return _card(_memory_view(now, "ja"))


def card_memory_hostile(now: datetime) -> Messages:
    """Parameters, results, reasons and step ids are untrusted too; an unknown action's name as well."""
    view = _memory_view(now, "en", HOSTILE)
    view.remediations.append(ApprovalRequest(
        id=4, token="approval-4", incident_id=42, step_id=4, action=f"x.{HOSTILE}", params={"name": HOSTILE},
        risk="low", requested_by="U0ALICE", requested_at=now - timedelta(minutes=2), status="failed",
        decided_by="U0BOB", expires_at=now + timedelta(minutes=13), result=HOSTILE * 40))
    view.remediations.insert(0, view.remediations.pop())
    return _card(view)


def announcements(now: datetime) -> Messages:
    return [{"text": text, "blocks": blocks} for text, blocks in (
        announcement(_incident(now), "C0INC42"),
        announcement(_incident(now, severity="P1", title="ServiceDown on identity-service"), None),
        announcement(_incident(now, severity="P9", title=f"Title {HOSTILE}"), "C0INC42"),
        announcement(_incident(now), "C0INC42", "ja"),
        announcement(_incident(now, severity="P1", title="ServiceDown on identity-service"), None, "ja-JP"),
    )]


# -- the runbook's cases ----------------------------------------------------------------------------------

SHIPPED = load_runbooks([], include_shipped=True)
PROD = ["production"]
SERVICE_DOWN_LABELS = {"alertname": "ServiceDown", "severity": "critical", "job": "identity-service",
                       "instance": "10.0.3.7:8080", "namespace": "production", "pod": "identity-service-7c9d8-x2k4p",
                       "service": "identity-service"}
DISK_LABELS = {"alertname": "DiskSpaceRunningLow", "severity": "warning", "instance": "10.0.1.5:9100",
               "node": "ip-10-0-1-5.ap-northeast-1.compute.internal", "mountpoint": "/", "device": "/dev/nvme0n1p1"}


def _runbook(runbook_id: str, labels: dict[str, str], locale: str, now: datetime, *,
             annotations: dict[str, str] | None = None, notes: dict[int, str] | None = None,
             runbook_url: str | None = None) -> Messages:
    runbook = SHIPPED.get(runbook_id)
    assert runbook is not None
    steps = prepare_steps(runbook, labels, annotations or {}, PROD)
    text = runbook_fallback_text(runbook, locale)
    return [{"text": text, "blocks": blocks}
            for blocks in runbook_messages(runbook, steps, locale=locale, button_id=lambda i: f"opaque-token-{i}",
                                           runbook_url=runbook_url, notes=notes)]


def _notes(now: datetime) -> dict[int, str]:
    """Trusted mrkdwn the caller composes (commands.runbook_flow): who ran a step, when, how it went."""
    ran = slack_time(now - timedelta(minutes=3), now)
    return {0: f":white_check_mark: ran by <@U0ALICE> at {ran}: 3 pods, 2 ready",
            2: f":warning: failed at {slack_time(now - timedelta(minutes=1), now)}: forbidden",
            5: "approval requested by <@U0BOB>"}


def runbook_service_down_en(now: datetime) -> Messages:
    return _runbook("service-down", SERVICE_DOWN_LABELS, "en", now,
                    runbook_url="https://wiki.example.com/runbooks/service-down")


def runbook_service_down_ja(now: datetime) -> Messages:
    return _runbook("service-down", SERVICE_DOWN_LABELS, "ja", now,
                    runbook_url="https://wiki.example.com/runbooks/service-down")


def runbook_service_down_en_notes(now: datetime) -> Messages:
    return _runbook("service-down", SERVICE_DOWN_LABELS, "en", now, notes=_notes(now))


def runbook_service_down_ja_notes(now: datetime) -> Messages:
    return _runbook("service-down", SERVICE_DOWN_LABELS, "ja", now, notes=_notes(now))


def runbook_disk_space_ja(now: datetime) -> Messages:
    """High-risk remediations: danger buttons with a danger confirm."""
    return _runbook("disk-space-running-low", DISK_LABELS, "ja", now)


def runbook_disk_space_en_notes(now: datetime) -> Messages:
    return _runbook("disk-space-running-low", DISK_LABELS, "en", now, notes={4: "approval requested by <@U0BOB>"})


def runbook_hostile_labels(now: datetime) -> Messages:
    """The alert's labels and annotations reach the parameters (and their errors): escaped."""
    labels = {**SERVICE_DOWN_LABELS, "pod": f"pod-{HOSTILE}", "service": HOSTILE, "container": HOSTILE}
    return _runbook("service-down", labels, "en", now, annotations={"health_url": f"https://evil|click {HOSTILE}"},
                    runbook_url="https://evil|click")


def runbook_hostile_title(now: datetime) -> Messages:
    """A team's runbook (not shipped) whose title, description and step text carry hostile text and
    Markdown: the header is plain text, the rest escaped mrkdwn (links only to safe URLs)."""
    del now
    runbook = Runbook.model_validate({
        "id": "hostile", "title": {"en": f"Title {HOSTILE}", "ja": f"タイトル {HOSTILE}"},
        "description": f"**Description** {HOSTILE} [docs](https://wiki.example.com/a?b=1&c=2) [x](javascript:1)",
        "match": {"alertname": "Hostile"},
        "steps": [{"id": "a", "title": f"Step {HOSTILE}",
                   "text": f"# Heading {HOSTILE}\n- item {HOSTILE}\n```\n{HOSTILE}\n```\n[evil](https://evil|click)"}],
    })
    steps = prepare_steps(runbook, {"alertname": "Hostile"}, {}, PROD)
    return [{"text": runbook_fallback_text(runbook, locale), "blocks": blocks}
            for locale in ("en", "ja")
            for blocks in runbook_messages(runbook, steps, locale=locale, button_id=str, runbook_url=None)]


def no_runbook(now: datetime) -> Messages:
    return [{"text": "", "blocks": no_runbook_blocks(name, locale=locale)}
            for name, locale in (("ServiceDown", "en"), ("ServiceDown", "ja"), (HOSTILE, "en"), (HOSTILE, "ja"))]


# -- the notices' cases ------------------------------------------------------------------------------------

def _notices(*payloads: dict[str, Any]) -> Callable[[datetime], Messages]:
    def render(now: datetime) -> Messages:
        del now
        return [{"payload": payload, "text": notice_text(payload, _card_locale[-1])} for payload in payloads]
    return render


def _page_held(now: datetime) -> Messages:
    until = now + timedelta(hours=2)
    payloads = [{"notice": "page_held", "window": "db-upgrade", "until": until.isoformat()},
                {"notice": "page_held", "window": "<!here>", "until": until.isoformat()},
                {"notice": "page_held", "window": HOSTILE, "until": (until + timedelta(days=1)).isoformat()}]
    # The payload's `until` is an ISO instant: shown as an offset to now, like every other time.
    return [{"payload": {**p, "until": "{" + offset_label(datetime.fromisoformat(p["until"]), now) + ":isoformat}"},
             "text": notice_text(p, _card_locale[-1])} for p in payloads]


NOTICE_CASES: dict[str, Callable[[datetime], Messages]] = {
    "alerts_resolved": _notices({"notice": "alerts_resolved"}),
    "reopened": _notices({"notice": "reopened"}),
    "resolved": _notices({"notice": "resolved", "user": "U0ALICE"},
                         {"notice": "resolved", "pagerduty_user": "Ann Example"},
                         {"notice": "resolved", "pagerduty_user": "<!here>"},
                         {"notice": "resolved", "user": HOSTILE},
                         {"notice": "resolved"}),
    "acknowledged": _notices({"notice": "acknowledged", "user": "U0BOB"},
                             {"notice": "acknowledged", "pagerduty_user": "Ann Example"},
                             {"notice": "acknowledged", "pagerduty_user": "<!here>"},
                             {"notice": "acknowledged", "pagerduty_user": HOSTILE * 3},
                             {"notice": "acknowledged", "user": "<@U123>"},
                             {"notice": "acknowledged", "user": None}),
    "paging": _notices({"notice": "paging", "level": "L1 primary on-call", "why": "not acknowledged within 5 min",
                        "by": None},
                       {"notice": "paging", "level": "L1 primary on-call", "why": "escalated by hand", "by": "U0ALICE"},
                       {"notice": "paging", "level": HOSTILE, "why": HOSTILE, "by": "<@U123>"},
                       {"notice": "paging"}),
    "escalating": _notices({"notice": "escalating", "level": "L2 secondary", "why": "still not acknowledged",
                            "by": None},
                           {"notice": "escalating", "level": "L2 secondary", "why": "escalated by hand",
                            "by": "W0CAROL"},
                           {"notice": "escalating", "level": HOSTILE, "why": HOSTILE, "by": HOSTILE}),
    "page_not_configured": _notices(
        {"notice": "page_not_configured", "level": "L1 primary on-call", "why": "not acknowledged within 5 min",
         "by": None},
        {"notice": "page_not_configured", "level": "L1 primary on-call", "why": "escalated by hand", "by": "U0BOB"},
        {"notice": "page_not_configured", "level": HOSTILE, "why": HOSTILE, "by": HOSTILE}),
    "page_held": _page_held,
    "ack_overdue": _notices({"notice": "ack_overdue", "minutes": 5}, {"notice": "ack_overdue", "minutes": HOSTILE}),
    "update_due": _notices({"notice": "update_due", "minutes": 15, "owner": "U0ALICE"},
                           {"notice": "update_due", "minutes": 30, "owner": None},
                           {"notice": "update_due", "minutes": HOSTILE, "owner": HOSTILE}),
    "pagerduty_assigned": _notices({"notice": "pagerduty_assigned", "verb": "escalated", "names": ["Ann Example"]},
                                   {"notice": "pagerduty_assigned", "verb": "reassigned",
                                    "names": ["Ann Example", "Bob Example"]},
                                   {"notice": "pagerduty_assigned", "verb": "reassigned",
                                    "names": ["<!here>", HOSTILE, "<@U123>"]}),
}

# A job queued before notices were data carries its own (trusted, composed by the bot) text.
LEGACY_NOTICE = {"text": ":rotating_light: Paging *L1 primary on-call* through PagerDuty: not acknowledged."}


def notices_legacy(now: datetime) -> Messages:
    del now
    return [{"payload": LEGACY_NOTICE, "text": notice_text(LEGACY_NOTICE)}]


def _storm_view(now: datetime) -> CardView:
    """A storm of 30 groups (one resolved every seventh, one title hostile): the table is cut, and says so."""
    members = [StormMember(id=n, storm_id=42, group_id=100 + n, joined_at=now - timedelta(minutes=30 - n),
                           status="resolved" if n % 7 == 0 else "firing", severity=("P1", "P2", "P3")[n % 3],
                           title=HOSTILE if n == 2 else f"Disk full on node-{n}", alertname=f"Disk{n % 4}",
                           firing=0 if n % 7 == 0 else 2, alerts=2, updated_at=now) for n in range(1, 31)]
    members.sort(key=lambda m: (m.status != "firing", m.severity, m.joined_at))
    incident = _incident(now, title="Alert storm: 30 groups", alertname="AlertStorm", severity="P1", kind=STORM,
                         service=None, namespace=None, annotations={}, external_url="")
    return CardView(incident=incident, alerts=[], timeline=_timeline(now), now=now, paging=_paging(now),
                    page_at=now + timedelta(minutes=3), storm=members, storm_rate=(10, 5))


def card_storm(now: datetime) -> Messages:
    return _card(_storm_view(now))


def card_storm_ja(now: datetime) -> Messages:
    return _card(dataclasses.replace(_storm_view(now), locale="ja"))


# -- the cases ------------------------------------------------------------------------------------------

CASES: dict[str, Callable[[datetime], Messages]] = {
    fn.__name__: fn for fn in (
        card_detected_pending_page, card_acknowledged_paged_delivered, card_page_pending_retrying, card_page_failed,
        card_maintenance_window, card_pagerduty_unconfigured, card_page_held_not_configured, card_acked_in_pagerduty,
        card_escalated, card_resolved, card_many_alerts, card_hostile, card_hostile_window, announcements,
        card_memory_en, card_memory_ja, card_memory_hostile, card_resolved_ja, card_escalated_ja,
        card_page_pending_retrying_ja, card_maintenance_window_ja, card_pagerduty_unconfigured_ja,
        runbook_service_down_en, runbook_service_down_ja, runbook_service_down_en_notes, runbook_service_down_ja_notes,
        runbook_disk_space_ja, runbook_disk_space_en_notes, runbook_hostile_labels, runbook_hostile_title,
        no_runbook, notices_legacy, card_storm, card_storm_ja,
    )
} | {f"notice_{kind}": render for kind, render in NOTICE_CASES.items()} \
  | {f"notice_{kind}_ja": functools.partial(_card_in, "ja", render) for kind, render in NOTICE_CASES.items()}

# Known escaping gaps, case name -> why: the invariant test expects those cases to fail (strict), so
# it turns red once one is fixed and the entry can go. (fallback_text and runbook_fallback_text were
# fixed while these tests were written: they escape the title now.)
KNOWN_UNESCAPED: dict[str, str] = {}


def render(name: str, now: datetime) -> Messages:
    return CASES[name](now)


# -- golden files ----------------------------------------------------------------------------------------

def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("base", list(BASES), ids=list(BASES))
@pytest.mark.parametrize("name", list(CASES))
def test_snapshot(name: str, base: str) -> None:
    now = base_now(BASES[base])
    output = render(name, now)
    check_slack_limits(output)
    normalised = normalise(output, now)
    path = GOLDEN / f"{name}.json"
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(normalised), encoding="utf-8")
        pytest.fail(f"wrote {path} ({'UPDATE_GOLDEN=1' if UPDATE else 'it was missing'}): inspect it, then run "
                    "the tests again without UPDATE_GOLDEN", pytrace=False)
    assert normalised == json.loads(path.read_text(encoding="utf-8")), (
        f"{name} differs from {path}; if the change is intended, run with UPDATE_GOLDEN=1 and review the diff")


def test_every_golden_file_belongs_to_a_case() -> None:
    stale = sorted(p.stem for p in GOLDEN.glob("*.json") if p.stem not in CASES)
    assert stale == [], f"golden files without a case (delete them): {stale}"


def test_every_notice_kind_has_a_snapshot() -> None:
    assert set(NOTICE_CASES) == set(NOTICE_KINDS)
    with pytest.raises(ValueError, match="unknown notice"):
        notice_text({"notice": "from-the-future"})


# -- Slack's limits --------------------------------------------------------------------------------------

def check_slack_limits(messages: Messages) -> None:
    for message in messages:
        text = message["text"]
        assert isinstance(text, str) and len(text) <= 4000, "chat.update refuses a text over 4000 characters"
        if "blocks" in message:
            assert validate_blocks(message["blocks"]) == [], message["blocks"]
        else:
            assert text, "a message without blocks needs a text"


# -- escaping ---------------------------------------------------------------------------------------------

def parsed_strings(obj: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(JSON path, string) of every string Slack parses as mrkdwn: a message's `text`, mrkdwn
    objects. plain_text objects (headers, buttons, confirm dialogs) are shown as is: not parsed;
    ids and values (action_id, block_id, a button's value) are never shown."""
    if isinstance(obj, dict):
        if obj.get("type") == "plain_text":
            return
        for key, value in obj.items():
            if key == "payload":
                continue  # a notice's input, kept in the snapshot for the reader
            if isinstance(value, str):
                if key == "text":
                    yield f"{path}/{key}", value
            else:
                yield from parsed_strings(value, f"{path}/{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from parsed_strings(value, f"{path}/{i}")


def escaping_problems(messages: Messages, now: datetime) -> list[str]:
    problems = []
    for where, text in parsed_strings(normalise(messages, now)):
        for bad in FORBIDDEN:
            if bad in text:
                problems.append(f"{where}: {bad!r} unescaped in {text!r}")
        for token in re.findall(r"<[^<>]*>?", text):
            if token not in ALLOWED_MENTIONS and not ALLOWED_TOKEN.fullmatch(token):
                problems.append(f"{where}: {token!r} is not a mention, date or link the builder composed")
        if re.search(r"&(?!(amp|lt|gt);)", re.sub(r"<[^<>]*>", "", text)):  # a link's URL may keep its '&'
            problems.append(f"{where}: a bare '&' in {text!r}")
    return problems


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_UNESCAPED[name]))
    if name in KNOWN_UNESCAPED else name for name in CASES])
def test_no_untrusted_mention_or_link_reaches_slack(name: str) -> None:
    now = base_now(timedelta())
    problems = escaping_problems(render(name, now), now)
    assert problems == []


def test_the_hostile_text_is_shown_escaped() -> None:
    """The hostile cases do show the hostile text, escaped (not dropped)."""
    now = base_now(timedelta())
    escaped = "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|click&gt; &amp;lt; `tick` *bold*"
    for name in ("card_hostile", "card_hostile_window", "runbook_hostile_labels", "runbook_hostile_title",
                 "no_runbook", "notice_paging",
                 "notice_page_held", "notice_pagerduty_assigned", "notice_acknowledged"):
        strings = [text for _, text in parsed_strings(render(name, now))]
        assert any("&lt;!channel&gt;" in s or "&lt;!here&gt;" in s for s in strings), name
    card = json.dumps(render("card_hostile", now)[0]["blocks"], ensure_ascii=False)
    assert escaped in card


def test_the_invariant_catches_what_it_should() -> None:
    now = base_now(timedelta())
    assert escaping_problems([{"text": "hi <!channel>", "blocks": []}], now)
    assert escaping_problems([{"text": "hi <@U0EVE>"}], now)
    assert escaping_problems([{"text": "<https://evil.test|x>"}], now)
    assert escaping_problems([{"text": "a & b"}], now)
    assert escaping_problems([{"text": "", "blocks": [{"type": "section", "text": {"type": "mrkdwn",
                                                                                    "text": "<!here>"}}]}], now)
    assert not escaping_problems([{"text": "", "blocks": [{"type": "header", "text": {"type": "plain_text",
                                                                                       "text": "<!here>"}}]}], now)
    assert not escaping_problems([{"text": f"<@U0ALICE> {slack_time(now, now)} &lt;!here&gt; &amp;"}], now)
