"""Storage on SQLite and PostgreSQL: migrations, the intake transaction and its constraints."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

from bot.config import OncallConfig
from bot.db import Database
from bot.incidents import ingest
from bot.jobs import JOB_CARD, JOB_OPEN, JOB_RUNBOOK_POST
from bot.lifecycle import InvalidTransition, transition
from bot.models import Alert, AlertGroup, Incident, IncidentStatus, Job, TimelineEntry
from integrations.alertmanager import WebhookMessage
from tests.alerts import alert, group, resolved

NOW = datetime.now(UTC).replace(microsecond=0)  # from the clock, never a calendar literal


def _ingest(db: Database, payload: dict, now: datetime = NOW):  # type: ignore[no-untyped-def]
    with db.session() as session:
        return ingest(session, OncallConfig(), WebhookMessage.model_validate(payload), now=now)


def test_migrations_match_the_models_and_are_idempotent(db: Database) -> None:
    db.migrate()  # a second run is a no-op
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []


def test_ingest_writes_incident_alerts_timeline_and_jobs_in_one_transaction(db: Database) -> None:
    result = _ingest(db, group(alert(labels={"instance": "a"}), alert(labels={"instance": "b"})))
    assert result.outcome == "created"
    with db.session() as session:
        incident = session.get(Incident, result.incident_id)
        assert incident.severity == "P1" and incident.status == IncidentStatus.DETECTED
        assert incident.created_at == NOW  # timezone-aware on both databases
        assert len(session.scalars(select(Alert)).all()) == 2
        assert [j.kind for j in session.scalars(select(Job))] == [JOB_OPEN, JOB_RUNBOOK_POST]
        assert len(session.scalars(select(TimelineEntry)).all()) == 3  # created + two alerts


def test_an_error_midway_leaves_nothing_behind(db: Database) -> None:
    payload = group()
    with pytest.raises(RuntimeError), db.session() as session:
        ingest(session, OncallConfig(), WebhookMessage.model_validate(payload), now=NOW)
        raise RuntimeError("the process died here")
    with db.session() as session:
        assert session.scalars(select(AlertGroup)).all() == []
        assert session.scalars(select(Incident)).all() == []
        assert session.scalars(select(Job)).all() == []


def test_concurrent_deliveries_of_one_group_create_one_incident(db: Database) -> None:
    payload = group()
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        outcomes.append(_ingest(db, payload).outcome)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] + ["unchanged"] * 7
    with db.session() as session:
        assert len(session.scalars(select(Incident)).all()) == 1
        assert len(session.scalars(select(Job).where(Job.kind == JOB_OPEN)).all()) == 1


def test_the_database_refuses_a_second_incident_for_the_same_episode(db: Database) -> None:
    result = _ingest(db, group())
    with pytest.raises(IntegrityError), db.session() as session:
        first = session.get(Incident, result.incident_id)
        session.add(Incident(group_id=first.group_id, episode=first.episode, title="dup", alertname="x",
                             severity="P1"))
        session.flush()
    with pytest.raises(IntegrityError), db.session() as session:
        session.add(AlertGroup(receiver="oncall-bot", group_key=group()["groupKey"]))
        session.flush()


def test_update_resolve_and_transitions(db: Database) -> None:
    payload = group(alert(labels={"instance": "a"}))
    incident_id = _ingest(db, payload).incident_id
    assert _ingest(db, payload).outcome == "unchanged"
    assert _ingest(db, resolved(payload)).outcome == "resolved"
    with db.session() as session:
        incident = session.get(Incident, incident_id)
        assert incident.status == IncidentStatus.RESOLVED and incident.resolved_by == "alertmanager"
        assert session.scalars(select(Job).where(Job.kind == JOB_CARD)).all()
        transition(session, incident, IncidentStatus.POSTMORTEM, actor="U0ALICE", now=NOW)
        with pytest.raises(InvalidTransition, match="postmortem cannot become detected"):
            transition(session, incident, IncidentStatus.DETECTED, actor="U0ALICE", now=NOW)
        entries = session.scalars(select(TimelineEntry).where(TimelineEntry.kind == "status")).all()
        assert [(e.actor, e.text) for e in entries] == [
            ("alertmanager", "detected → resolved: all alerts resolved"),
            ("U0ALICE", "resolved → postmortem"),
        ]


def _upgrade(database: Database, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from bot.db import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with database.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def test_migration_0003_makes_alert_columns_text_and_keeps_the_rows(database_url: str) -> None:
    from sqlalchemy import text

    database = Database(database_url)
    try:
        _upgrade(database, "0002")
        with database.engine.begin() as connection:
            connection.execute(text("INSERT INTO alert_group (receiver, group_key, created_at) "
                                    "VALUES ('oncall-bot', 'g1', :now)"), {"now": NOW})
        _upgrade(database, "0003")
        with database.engine.begin() as connection:
            assert connection.scalar(text("SELECT receiver FROM alert_group WHERE group_key = 'g1'")) == "oncall-bot"
            # VARCHAR(256) on PostgreSQL refused this before 0003.
            connection.execute(text("UPDATE alert_group SET receiver = :receiver"), {"receiver": "r" * 5000})
            assert connection.scalar(text("SELECT length(receiver) FROM alert_group")) == 5000
    finally:
        database.dispose()


def test_title_follows_the_group_as_alerts_join(db: Database) -> None:
    def firing(n: int) -> dict:  # type: ignore[type-arg]
        alerts = [alert("HighLatency", labels={"instance": f"api-{i}"}, annotations={"summary": f"slow api-{i}"})
                  for i in range(n)]
        return group(*alerts, group_key='{}:{alertname="HighLatency"}')

    first = _ingest(db, firing(1))
    with db.read() as session:
        assert session.get(Incident, first.incident_id).title == "slow api-0"  # type: ignore[union-attr]
    _ingest(db, firing(3))
    with db.read() as session:
        assert session.get(Incident, first.incident_id).title == "HighLatency on api (3 alerts)"  # type: ignore[union-attr]


def test_replicas_starting_together_migrate_once_and_both_start(database_url: str) -> None:
    """Two replicas of a new deployment start at once on an empty database: each migrates, one
    waits for the other, neither fails on a table the other just created."""
    replicas = [Database(database_url) for _ in range(3)]
    errors: list[BaseException] = []

    def migrate(db: Database) -> None:
        try:
            db.migrate()
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(db,)) for db in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        replicas[0].check_schema()  # at head
    finally:
        for db in replicas:
            db.dispose()
