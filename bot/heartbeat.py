"""The Watchdog heartbeat: watch the watchers.

Alertmanager's always-firing alert (kube-prometheus' `Watchdog`; `heartbeat.alertname`) is sent
again at every repeat_interval of its route. Its groups open no incident: each arrival records
when (the one `heartbeat` row) and moves the one pending `heartbeat.missing` timer to
`missing_after_minutes` later. When that timer fires (bot.timers: once, across replicas), alerts
are not reaching the bot: it is marked lost, and PagerDuty (the bot's own dedup key) and the
announce channel are told, as outbox jobs written in the same transaction. The next arrival
resolves the page and says so. Which heartbeats count (`enabled`) is config.HeartbeatPolicy's.

Lock order: timer, then the heartbeat row (bot.timers holds the timer it fires). An arrival
holds the row and takes the timer only if no runner holds it (SKIP LOCKED); else it arms a new
one, and the firing one finds itself superseded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from bot.config import HeartbeatPolicy, OncallConfig
from bot.jobs import JOB_HEARTBEAT_PAGE, JOB_HEARTBEAT_POST, enqueue
from bot.models import Heartbeat, Timer, TimerStatus
from integrations.alertmanager import WebhookMessage
from integrations.pagerduty import PagerDutyEvent

__all__ = ["DEDUP_KEY", "LATE", "MISSING", "HeartbeatState", "episode", "fire", "pagerduty_event", "record",
           "routing_key_for", "split", "state", "watch_from_start"]

log = logging.getLogger(__name__)

MISSING = "heartbeat.missing"  # the timer kind (bot.timers hands it to fire())
DEDUP_KEY = "oncall-bot-heartbeat"  # the bot's own page: one open PagerDuty alert however often it is lost
# A timer firing later than this found no runner alive at its due time (the bot, or its database,
# was down): Alertmanager re-sends the heartbeat within a repeat_interval of the bot's return, so
# the bot waits one more period before paging about its own absence.
LATE = timedelta(seconds=60)
_ROW = 1


# -- intake ------------------------------------------------------------------------------------

def split(policy: HeartbeatPolicy, message: WebhookMessage) -> tuple[bool, WebhookMessage | None]:
    """(whether the notification brings a firing heartbeat, what is left of it for the intake:
    None when nothing). A group that also holds other alerts keeps those, its status theirs."""
    if not policy.active or not any(a.alertname == policy.alertname for a in message.alerts):
        return False, message
    beats = [a for a in message.alerts if a.alertname == policy.alertname]
    rest = [a for a in message.alerts if a.alertname != policy.alertname]
    firing = any(a.status == "firing" for a in beats)  # a resolved heartbeat is the absence of one
    if not rest:
        return firing, None
    status = "firing" if any(a.status == "firing" for a in rest) else "resolved"
    return firing, message.model_copy(update={"alerts": rest, "status": status})


def record(session: Session, policy: HeartbeatPolicy, *, now: datetime) -> bool:
    """A heartbeat arrived: remember when, re-arm the timer, and if it had been lost, say it is
    back. Returns whether jobs were queued. Call inside a transaction (Database.session())."""
    row = _lock(session, now)
    back = row.lost_at is not None
    if back:
        _came_back(session, row, policy, now)
    if row.last_seen_at is None or row.last_seen_at < now:
        row.last_seen_at = now
    _arm(session, row, row.last_seen_at + _missing_after(policy), now)
    return back


def watch_from_start(session: Session, policy: HeartbeatPolicy, *, now: datetime) -> bool:
    """`enabled: true`: expect a heartbeat within missing_after of the bot's first start, though
    none has ever arrived. Once per database; returns whether it armed the timer now."""
    if policy.enabled is not True:
        return False
    row = _lock(session, now)
    if row.last_seen_at is not None or row.watching_since is not None:
        return False  # watched already: by heartbeats, or since an earlier start
    row.watching_since = now
    _arm(session, row, now + _missing_after(policy), now)
    return True


# -- the timer ---------------------------------------------------------------------------------

def fire(session: Session, timer: Timer, config: OncallConfig, now: datetime) -> None:
    """bot.timers' effect for a MISSING timer, marked as bot.escalation.fire marks its own."""
    done, outcome = _fire(session, timer, config, now)
    timer.status = TimerStatus.FIRED if done else TimerStatus.SKIPPED
    timer.fired_at, timer.outcome = now, outcome
    timer.lateness_seconds = max(0.0, (now - timer.due_at).total_seconds())


def _fire(session: Session, timer: Timer, config: OncallConfig, now: datetime) -> tuple[bool, str]:
    row = session.get(Heartbeat, _ROW, with_for_update=True, populate_existing=True)
    if row is None or row.timer_id != timer.id:
        return False, "superseded: a heartbeat arrived and armed another timer"
    row.timer_id = None
    policy = config.heartbeat
    since = row.last_seen_at or row.watching_since
    if not policy.active or since is None or row.lost_at is not None:
        return False, "heartbeat.enabled is false" if not policy.active else "already lost"
    due = since + _missing_after(policy)
    if due > now:  # missing_after_minutes was raised since this timer was armed
        _arm(session, row, due, now)
        return True, f"not missing yet: re-armed for {due.isoformat()}"
    if now - timer.due_at > LATE:
        _arm(session, row, now + _missing_after(policy), now)
        return True, "fired late (no runner was up): waiting one more period for Alertmanager to re-send"
    return True, _lost(session, row, config, since, now)


def _lost(session: Session, row: Heartbeat, config: OncallConfig, since: datetime, now: datetime) -> str:
    row.lost_at, row.routing_key = now, config.pagerduty.routing_key
    facts = _facts(config.heartbeat, since, now, never=row.last_seen_at is None)
    if row.routing_key:
        enqueue(session, JOB_HEARTBEAT_PAGE, None, now=now, payload={"action": "trigger", **facts})
    enqueue(session, JOB_HEARTBEAT_POST, None, now=now, payload={"event": "lost", "paged": bool(row.routing_key),
                                                                  **facts})
    log.error("no %s heartbeat since %s: alerts are not reaching the bot", config.heartbeat.alertname,
              since.isoformat(), extra={"since": since.isoformat(), "paged": bool(row.routing_key)})
    return "lost: paged" if row.routing_key else "lost: PagerDuty is not configured, nobody was paged"


def _came_back(session: Session, row: Heartbeat, policy: HeartbeatPolicy, now: datetime) -> None:
    assert row.lost_at is not None
    since = row.last_seen_at or row.watching_since or row.lost_at
    facts = {**_facts(policy, since, now, never=row.last_seen_at is None), "episode": episode(row.lost_at)}
    if row.routing_key:  # the key it was paged with (routing_key is kept: the resolve job reads it)
        enqueue(session, JOB_HEARTBEAT_PAGE, None, now=now, payload={"action": "resolve", **facts})
    enqueue(session, JOB_HEARTBEAT_POST, None, now=now, payload={"event": "back", "paged": bool(row.routing_key),
                                                                  **facts})
    log.warning("the %s heartbeat is back after %.0f min", policy.alertname, (now - since).total_seconds() / 60,
                extra={"since": since.isoformat()})
    row.lost_at = None


def _facts(policy: HeartbeatPolicy, since: datetime, now: datetime, *, never: bool) -> dict[str, Any]:
    """What the jobs say, as data (commands.heartbeat words it): `episode` names the loss."""
    return {"alertname": policy.alertname, "since": since.isoformat(), "at": now.isoformat(), "never": never,
            "minutes": policy.missing_after_minutes, "episode": episode(now)}


def episode(lost_at: datetime) -> int:
    """The loss a job is about: its start, in whole seconds (what the Slack message is tagged with)."""
    return int(lost_at.timestamp())


# -- PagerDuty ---------------------------------------------------------------------------------

def pagerduty_event(payload: dict[str, Any], routing_key: str) -> PagerDutyEvent:
    """The Events API v2 event a JOB_HEARTBEAT_PAGE job sends (ValueError if it is not one)."""
    if payload.get("action") != "trigger":
        return PagerDutyEvent(action="resolve", routing_key=routing_key, dedup_key=DEDUP_KEY)
    what = f"no {payload['alertname']} heartbeat has arrived" if payload.get("never") else \
        f"no {payload['alertname']} heartbeat"
    since = datetime.fromisoformat(str(payload["since"]))
    return PagerDutyEvent.model_validate({
        "action": "trigger", "routing_key": routing_key, "dedup_key": DEDUP_KEY, "severity": "critical",
        "summary": f"Alerts are not reaching the bot: {what} since {since:%Y-%m-%d %H:%M} UTC",
        "source": "oncall-bot", "class": "heartbeat", "timestamp": datetime.fromisoformat(str(payload["at"])),
        "custom_details": {"alertname": payload["alertname"], "last_heartbeat": payload["since"],
                           "missing_after_minutes": payload["minutes"],
                           "check": "Alertmanager, and its route and webhook receiver for the bot"},
    })


def routing_key_for(session: Session, payload: dict[str, Any]) -> str | None:
    """Where a JOB_HEARTBEAT_PAGE job's event goes (the key the loss was paged with); None:
    nothing to send, a trigger for a loss that is over already (its resolve is queued behind it:
    PagerDuty would page someone for a moment about nothing)."""
    row = session.get(Heartbeat, _ROW)
    if row is None or not row.routing_key:
        return None
    if payload.get("action") == "trigger" and (row.lost_at is None or episode(row.lost_at) != payload.get("episode")):
        return None
    return row.routing_key


# -- what /readyz and /metrics show ------------------------------------------------------------

@dataclass(frozen=True)
class HeartbeatState:
    status: Literal["disabled", "waiting", "ok", "lost"]  # waiting: none has arrived yet
    alertname: str
    last_seen_at: datetime | None = None
    lost_at: datetime | None = None

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.last_seen_at is None else max(0.0, (now - self.last_seen_at).total_seconds())


def state(session: Session, policy: HeartbeatPolicy) -> HeartbeatState:
    """The heartbeat as the bot last saw it (a read)."""
    row = session.get(Heartbeat, _ROW)
    if not policy.active:
        return HeartbeatState("disabled", policy.alertname)
    if row is None:
        return HeartbeatState("waiting", policy.alertname)
    status: Literal["waiting", "ok", "lost"] = "lost" if row.lost_at else "ok" if row.last_seen_at else "waiting"
    return HeartbeatState(status, policy.alertname, row.last_seen_at, row.lost_at)


# -- small helpers -----------------------------------------------------------------------------

def _missing_after(policy: HeartbeatPolicy) -> timedelta:
    return timedelta(minutes=policy.missing_after_minutes)


def _lock(session: Session, now: datetime) -> Heartbeat:
    # Insert-if-absent then lock, as bot.incidents.lock_group: two replicas' first heartbeats
    # land on the one row and take turns.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(Heartbeat).values(id=_ROW).on_conflict_do_nothing(index_elements=["id"]))
    row = session.get(Heartbeat, _ROW, with_for_update=True, populate_existing=True)
    assert row is not None
    return row


def _arm(session: Session, row: Heartbeat, due: datetime, now: datetime) -> None:
    """Move the pending timer to `due`; if there is none, or a runner holds it (firing it right
    now: it will find itself superseded), arm a new one."""
    timer = None
    if row.timer_id is not None:
        timer = session.scalars(select(Timer).where(col(Timer.id) == row.timer_id,
                                                    col(Timer.status) == TimerStatus.PENDING)
                                .with_for_update(skip_locked=True)).first()
    if timer is not None:
        timer.due_at = due
        return
    timer = Timer(incident_id=None, kind=MISSING, due_at=due, created_at=now)
    session.add(timer)
    session.flush()
    row.timer_id = timer.id
