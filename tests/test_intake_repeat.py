"""POST /alertmanager: an exact repeat (Alertmanager's repeat_interval, an HA peer) is answered
from a read, without a write or a lock; any change takes the full transaction, and a repeat
behaves as it did before when the incident changed since. On SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import copy
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as NoAnswerYet
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlmodel import SQLModel, col

from bot.db import CHANGES_CHANNEL, Database, sqlite_path
from bot.incident_ops import change_severity
from bot.incidents import ingest
from bot.jobs import JOB_OPEN
from bot.lifecycle import transition
from bot.models import Incident, IncidentStatus, Job, JobStatus, Timer, TimerStatus
from integrations.alertmanager import WebhookMessage
from tests.alerts import alert, group, resolved
from tests.conftest import FakeClock, RunningBot, wait_for

Payload = dict[str, Any]


def _pair() -> Payload:
    """A group of two firing alerts, so that one can resolve while the group still fires."""
    return group(alert(labels={"instance": "a"}), alert(labels={"instance": "b"}))


def _settle(bot: RunningBot) -> None:
    """Wait until the timers have fired what is due (the page) and the outbox has run every job
    (the channel, the card, the runbook): rows stop moving."""
    def idle() -> bool:
        # Timers due in the next seconds count as due: the page on open is due a moment after the
        # webhook, and one firing between the two dumps of a test would look like the repeat's doing.
        now = bot.services.clock() + timedelta(seconds=5)
        jobs = (col(Job.status).in_([JobStatus.PENDING, JobStatus.RUNNING]),)  # a card redraw may wait a little
        timers = col(Timer.status) == TimerStatus.PENDING, col(Timer.due_at) <= now
        with bot.services.db.read() as session:
            return session.scalars(select(Job).where(*jobs)).first() is None and \
                session.scalars(select(Timer).where(*timers)).first() is None
    wait_for(idle, what="the timers and the outbox to finish what is due")


def _dump(bot: RunningBot, *, versions: bool = True) -> dict[str, list[Any]]:
    """Every row of every table; on PostgreSQL (`versions`) also each group's, incident's and alert's
    xmin/xmax, which an UPDATE changes and so does a row lock (SELECT ... FOR UPDATE)."""
    db = bot.services.db
    with db.read() as session:
        rows = {table.name: [tuple(r) for r in session.execute(select(table).order_by(*table.primary_key.columns))]
                for table in SQLModel.metadata.sorted_tables}
        if versions and not db.is_sqlite:
            for name in ("alert_group", "incident", "alert"):
                found = session.execute(text(f"SELECT id, xmin::text, xmax::text FROM {name} ORDER BY id"))
                rows[f"{name} (xmin, xmax)"] = [tuple(r) for r in found]
    return rows


def _opened(bot: RunningBot, payload: Payload) -> int:
    reply = bot.post_alerts(payload)
    assert reply.status_code == 200 and reply.json()["outcome"] == "created", reply.text
    _settle(bot)
    incident_id: int = reply.json()["incident_id"]
    return incident_id


def _incident(bot: RunningBot, incident_id: int) -> Incident:
    with bot.services.db.read() as session:
        row = session.get(Incident, incident_id)
    assert row is not None
    return row


def test_an_exact_repeat_changes_no_row_queues_no_job_and_answers_the_same(bot: RunningBot) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    before = _dump(bot)
    for _ in range(3):
        assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "unchanged"}
    assert _dump(bot) == before  # jobs included: nothing queued


@contextmanager
def _group_locked(database_url: str, group_key: str) -> Iterator[None]:
    """Another transaction holds the group's row (PostgreSQL) or the write lock (SQLite)."""
    path = sqlite_path(database_url)
    if path is not None:
        sqlite = sqlite3.connect(path, isolation_level=None)
        sqlite.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            sqlite.execute("ROLLBACK")
            sqlite.close()
        return
    with psycopg.connect(database_url) as pg:
        assert pg.execute("SELECT id FROM alert_group WHERE group_key = %s FOR UPDATE", (group_key,)).fetchone()
        try:
            yield
        finally:
            pg.rollback()


def test_a_repeat_is_answered_while_another_transaction_holds_the_group(bot: RunningBot, database_url: str) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    changed = copy.deepcopy(payload)
    changed["alerts"][0]["annotations"]["description"] = "p99 over 2 s"
    with ThreadPoolExecutor(1) as pool, _group_locked(database_url, payload["groupKey"]):
        # The client gives up after 10 s; a repeat that waited for the lock would never answer in time.
        assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "unchanged"}
        change = pool.submit(bot.post_alerts, changed)
        with pytest.raises(NoAnswerYet):  # a change takes the full transaction: it waits for the lock
            change.result(timeout=0.5)
    assert change.result(timeout=10).json() == {"incident_id": incident_id, "outcome": "updated"}


def _label(p: Payload) -> None:
    p["alerts"][0]["labels"]["pod"] = "api-7"  # same fingerprint: only the labels tell


def _annotation(p: Payload) -> None:
    p["alerts"][1]["annotations"]["description"] = "p99 over 2 s"


def _alert_resolved(p: Payload) -> None:
    p["alerts"][1].update(status="resolved", endsAt=p["alerts"][1]["startsAt"])


def _common_annotation(p: Payload) -> None:
    p["commonAnnotations"]["summary"] = "checkout is down"


def _truncated(p: Payload) -> None:
    p["truncatedAlerts"] = 3


def _one_alert_more(p: Payload) -> None:
    p["alerts"].append(alert(labels={"instance": "c"}))


@pytest.mark.parametrize("change", [_label, _annotation, _alert_resolved, _common_annotation, _truncated,
                                    _one_alert_more], ids=lambda f: f.__name__.strip("_"))
def test_any_single_change_takes_the_full_path_and_its_repeat_does_not(
        bot: RunningBot, change: Callable[[Payload], None]) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    changed = copy.deepcopy(payload)
    change(changed)
    assert bot.post_alerts(changed).json() == {"incident_id": incident_id, "outcome": "updated"}
    _settle(bot)  # the card redraw
    before = _dump(bot)
    assert bot.post_alerts(changed).json() == {"incident_id": incident_id, "outcome": "unchanged"}
    assert _dump(bot) == before  # the full path stored the new digest with the change


def test_the_group_resolving_takes_the_full_path_and_so_do_its_repeats(bot: RunningBot) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    done = resolved(payload)
    assert bot.post_alerts(done).json() == {"incident_id": incident_id, "outcome": "resolved"}
    # Resolved: the clock decides (reopen window), so repeats take the full path, answered as before.
    assert bot.post_alerts(done).json() == {"incident_id": incident_id, "outcome": "unchanged"}
    assert _incident(bot, incident_id).status == IncidentStatus.RESOLVED


def _another_peer(p: Payload) -> None:
    p["externalURL"] = "http://alertmanager-1.example.com:9093"  # HA: the other Alertmanager of the pair


def _starts_at(p: Payload) -> None:
    p["alerts"][0]["startsAt"] = p["alerts"][1]["startsAt"] = p["alerts"][0]["startsAt"][:-6] + "-07:00"


def _generator_url(p: Payload) -> None:
    p["alerts"][0]["generatorURL"] = "http://prometheus-1.example.com/graph?g0.expr=up"


def _ends_at_of_a_resolved_alert(p: Payload) -> None:
    p["alerts"][1]["endsAt"] = p["alerts"][1]["startsAt"][:-6] + "-07:00"


def _fields_never_read(p: Payload) -> None:
    p.update(notification_reason="repeat_interval", routeLabels={"team": "payments"})


@pytest.mark.parametrize("change", [_another_peer, _starts_at, _generator_url, _ends_at_of_a_resolved_alert,
                                    _fields_never_read], ids=lambda f: f.__name__.strip("_"))
def test_what_ingest_does_not_act_on_is_answered_as_a_repeat(bot: RunningBot, change: Callable[[Payload], None]) \
        -> None:
    payload = _pair()
    _alert_resolved(payload)  # one alert resolved (its endsAt stored), the other firing
    incident_id = _opened(bot, payload)
    variant = copy.deepcopy(payload)
    change(variant)
    before = _dump(bot)
    assert bot.post_alerts(variant).json() == {"incident_id": incident_id, "outcome": "unchanged"}
    assert _dump(bot) == before
    # The full transaction agrees: it changes nothing for it either (were that to change, the field
    # would belong in bot.incidents.applied_digest).
    with bot.services.db.session() as session:
        message = WebhookMessage.model_validate(variant)
        result = ingest(session, bot.services.settings.config, message, now=bot.services.clock())
    assert result.outcome == "unchanged"
    assert _dump(bot, versions=False) == _dump_without_versions(before)


def _dump_without_versions(dump: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {name: rows for name, rows in dump.items() if "(xmin, xmax)" not in name}


def test_a_repeat_after_a_manual_resolution_behaves_as_before(bot: RunningBot, clock: FakeClock) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    with bot.services.db.session() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        transition(session, row, IncidentStatus.RESOLVED, actor="U0ALICE", now=clock())
    # As tests/test_incident_flow.py has it: Alertmanager's repeats do not reopen it ...
    assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "unchanged"}
    assert _incident(bot, incident_id).status == IncidentStatus.RESOLVED
    # ... and past the reopen window the group still firing is a new episode: the clock decides.
    clock.advance(minutes=bot.services.settings.config.incidents.reopen_window_minutes + 1)
    again = bot.post_alerts(payload).json()
    assert again["outcome"] == "created" and again["incident_id"] != incident_id


def test_a_repeat_after_a_person_lowered_the_severity_raises_it_again_as_before(
        bot: RunningBot, clock: FakeClock) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    assert _incident(bot, incident_id).severity == "P1"
    with bot.services.db.session() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        change_severity(session, row, "P3", "U0ALICE", clock(), bot.services.settings.config)
    assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "updated"}
    assert _incident(bot, incident_id).severity == "P1"  # only ever raised, from what the alerts say


def test_a_resolved_repeat_after_a_person_reopened_resolves_again_as_before(bot: RunningBot, clock: FakeClock) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    done = resolved(payload)
    assert bot.post_alerts(done).json()["outcome"] == "resolved"
    with bot.services.db.session() as session:
        row = session.get(Incident, incident_id)
        assert row is not None
        transition(session, row, IncidentStatus.DETECTED, actor="U0ALICE", now=clock(), reason="reopened by hand")
    assert bot.post_alerts(done).json() == {"incident_id": incident_id, "outcome": "resolved"}


def test_concurrent_deliveries_apply_each_group_exactly_once(bot: RunningBot) -> None:
    payloads = [group(alert(f"Storm{i}", labels={"instance": f"api-{i}"}), group_key=f'{{}}:{{alertname="Storm{i}"}}')
                for i in range(6)]
    sends = [p for p in payloads for _ in range(8)]
    random.Random(13).shuffle(sends)
    for wave in ("first deliveries and their repeats", "repeats only"):
        with ThreadPoolExecutor(12) as pool:
            replies = list(pool.map(bot.post_alerts, sends))
        outcomes: dict[str, Counter[str]] = {p["groupKey"]: Counter() for p in payloads}
        for sent, reply in zip(sends, replies, strict=True):
            assert reply.status_code == 200, reply.text
            outcomes[sent["groupKey"]][reply.json()["outcome"]] += 1
        expected = Counter(created=1, unchanged=7) if wave.startswith("first") else Counter(unchanged=8)
        assert all(seen == expected for seen in outcomes.values()), (wave, outcomes)
        with bot.services.db.read() as session:
            assert session.scalar(select(func.count()).select_from(Incident)) == len(payloads)
            opens = select(func.count()).select_from(Job).where(col(Job.kind) == JOB_OPEN)
            assert session.scalar(opens) == len(payloads)


def test_sqlite_write_transactions_take_turns_across_databases_on_one_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'oncall.db'}"
    first, second = Database(url), Database(url)
    first.migrate()
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:
        with first.session():
            holding.set()
            release.wait(10)
            order.append("first committed")

    def enter() -> None:
        holding.wait(10)
        with second.session():  # no statement: SQLite's own lock would not have been asked for yet
            order.append("second began")

    threads = [threading.Thread(target=hold), threading.Thread(target=enter)]
    try:
        for thread in threads:
            thread.start()
        holding.wait(10)
        threads[1].join(timeout=0.3)  # time for the second writer to get in, were nothing to stop it
        release.set()
        for thread in threads:
            thread.join(timeout=10)
        assert order == ["first committed", "second began"]
    finally:
        release.set()
        first.dispose()
        second.dispose()


# -- repeats answered from memory (bot.incidents.Repeats, bot.db.Database.changes) --------------------

def _written_elsewhere(database_url: str, statement: str) -> None:
    """`statement` committed by another process's connection: what another replica or the CLI does."""
    path = sqlite_path(database_url)
    if path is not None:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as sqlite:
            sqlite.execute(statement)
        return
    with psycopg.connect(database_url, autocommit=True) as pg:
        pg.execute(statement)


def _moved(db: Database, before: tuple[int, int] | None) -> bool:
    now = db.changes()
    return now is not None and now != before


def test_a_change_another_process_commits_is_seen_by_the_next_repeat(bot: RunningBot, database_url: str) -> None:
    payload = _pair()
    incident_id = _opened(bot, payload)
    db = bot.services.db
    for _ in range(2):  # the second is answered from memory
        assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "unchanged"}
    before = db.changes()
    assert before is not None, "the bot hears of other processes' changes on both databases"
    # A person lowers the severity from psql (or another replica does): the bot did not write it.
    _written_elsewhere(database_url, f"UPDATE incident SET severity = 'P3' WHERE id = {incident_id}")
    wait_for(lambda: _moved(db, before), what="the other process's change to be heard")
    assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "updated"}
    assert _incident(bot, incident_id).severity == "P1"  # raised again, as when a person lowers it in Slack


def test_a_write_to_other_tables_keeps_what_was_read_and_one_to_the_incident_tables_does_not(
        database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        wait_for(lambda: db.changes() is not None, what="the database's changes to be watched")
        before = db.changes()
        with db.session() as session:
            session.execute(text("UPDATE job SET attempts = attempts + 1 WHERE id < 0"))
        if not db.is_sqlite:  # (SQLite's data_version moves on any other connection's write, any table)
            assert db.changes() == before
        with db.session() as session:
            session.execute(text("UPDATE incident SET severity = severity WHERE id < 0"))
        assert db.changes() != before  # at once, on both: this process's own transaction
        broken = db.changes()
        with pytest.raises(RuntimeError), db.session():
            raise RuntimeError("a transaction ends in an error: whether it committed is not known")
        assert db.changes() != broken
    finally:
        db.dispose()


def test_an_in_memory_database_keeps_nothing_across_reads() -> None:
    db = Database("sqlite://")
    try:
        assert db.changes() is None
    finally:
        db.dispose()


def test_while_change_notifications_are_not_heard_repeats_are_read_and_after_they_return_kept_anew(
        bot: RunningBot, database_url: str) -> None:
    if sqlite_path(database_url) is not None:
        pytest.skip("PostgreSQL's notification connection; SQLite reads data_version on every repeat")
    payload = _pair()
    incident_id = _opened(bot, payload)
    db = bot.services.db
    assert bot.post_alerts(payload).json()["outcome"] == "unchanged"
    wait_for(lambda: db.changes() is not None, what="the bot to listen")
    before = db.changes()
    with psycopg.connect(database_url, autocommit=True) as pg:  # the listener's connection dies
        killed = pg.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            f"WHERE query = 'LISTEN {CHANGES_CHANNEL}' AND pid <> pg_backend_pid()").fetchall()
        assert killed and all(ok for (ok,) in killed)
        pg.execute(f"UPDATE incident SET severity = 'P3' WHERE id = {incident_id}")  # missed while down
    wait_for(lambda: _moved(db, before), what="the bot to hear again")
    # Nothing kept from before the drop: the repeat reads the live row and raises the severity again.
    assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "updated"}
    assert bot.post_alerts(payload).json() == {"incident_id": incident_id, "outcome": "unchanged"}
