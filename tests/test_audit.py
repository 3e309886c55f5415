"""The audit log (bot.audit): one hash chain on SQLite and PostgreSQL, even with concurrent
writers; `verify` names every entry edited, inserted or deleted by hand; `oncall-bot audit`;
a diagnostic clicked in Slack is in it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from bot import audit
from bot.audit import GENESIS_HASH, Problem
from bot.db import Database
from bot.models import AuditEntry
from commands.cli import main
from tests.conftest import FakeClock, RunningBot, start_bot, wait_for
from tests.fakes.kubernetes import FakeKubernetes
from tests.fakes.slack import FakeSlack
from tests.test_cli import oncall_bot
from tests.test_runbook_flow import (
    CURRENT_LOGS,
    PREVIOUS_LOGS,
    by_id,
    click,
    open_incident,
    posted_steps,
    runbook_settings,
    timeline,
)

ISO_UTC_MICROSECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def write_chain(db: Database, clock: FakeClock, count: int = 5) -> list[AuditEntry]:
    """`count` entries a minute apart, each in its own transaction, as the bot writes them."""
    written = []
    for n in range(count):
        clock.advance(minutes=1)
        with db.session() as session:
            written.append(audit.record(session, event="diagnostic_run", actor="U0ALICE", at=clock(),
                                        incident_id=7, action="k8s.logs", params={"pod": f"api-{n}", "previous": True},
                                        data={"ok": True, "outcome": f"{n} log lines", "step": "previous-logs"}))
    return written


def entries(db: Database) -> list[AuditEntry]:
    with db.read() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))  # type: ignore[arg-type]


def problems(db: Database) -> list[Problem]:
    with db.read() as session:
        return audit.verify(session)


def tamper(db: Database, sql: str, **params: Any) -> None:
    """What someone with the database's password does: SQL, not bot.audit."""
    with db.engine.begin() as connection:
        connection.execute(text(sql), params)


def canonical_sha256(line: dict[str, Any]) -> str:
    """The documented hash, computed without bot.audit: SHA-256 of the canonical JSON of every field but `hash`."""
    content = {key: value for key, value in line.items() if key != "hash"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# -- the chain ---------------------------------------------------------------------------------------

def test_entries_are_chained_and_verify(db: Database, clock: FakeClock) -> None:
    start = clock()
    written = write_chain(db, clock, 3)
    with db.session() as session:  # non-ASCII text, a time in the data, a bot actor
        audit.record(session, event="expired", actor="oncall-bot", at=clock(), params={"ノード": "node-1"},
                     data={"expired_at": clock(), "reason": "nobody approved in 15 min"})
    stored = entries(db)
    assert [e.id for e in stored] == [1, 2, 3, 4]
    assert [e.hash for e in stored[:3]] == [e.hash for e in written]
    assert [e.prev_hash for e in stored] == [GENESIS_HASH, *(e.hash for e in stored[:3])]
    assert [e.at for e in stored[:3]] == [e.at for e in written] and stored[0].at > start  # to the microsecond
    assert stored[3].params == {"ノード": "node-1"} and ISO_UTC_MICROSECONDS.fullmatch(stored[3].data["expired_at"])
    assert problems(db) == []

    with db.read() as session:
        lines = list(audit.export(session, start))
    assert [line["id"] for line in lines] == [1, 2, 3, 4]
    assert all(canonical_sha256(line) == line["hash"] for line in lines)  # checkable without this code
    assert all(ISO_UTC_MICROSECONDS.fullmatch(line["at"]) for line in lines)
    assert lines[0] == {"id": 1, "at": lines[0]["at"], "event": "diagnostic_run", "actor": "U0ALICE", "incident_id": 7,
                        "action": "k8s.logs", "params": {"pod": "api-0", "previous": True},
                        "data": {"ok": True, "outcome": "0 log lines", "step": "previous-logs"},
                        "prev_hash": GENESIS_HASH, "hash": written[0].hash}


def test_an_append_rolled_back_with_its_transaction_leaves_no_gap(db: Database, clock: FakeClock) -> None:
    write_chain(db, clock, 2)
    with pytest.raises(RuntimeError), db.session() as session:
        audit.record(session, event="diagnostic_run", actor="U0ALICE", at=clock())
        raise RuntimeError("the transaction failed after the append")
    write_chain(db, clock, 1)
    assert [e.id for e in entries(db)] == [1, 2, 3]  # no sequence value lost (PostgreSQL would skip one)
    assert problems(db) == []


def test_concurrent_writers_make_one_unbroken_chain(db: Database, clock: FakeClock) -> None:
    writers, each = 8, 15
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            barrier.wait()
            for n in range(each):
                with db.session() as session:
                    audit.record(session, event="diagnostic_run", actor=f"U0WRITER{writer}", at=clock(),
                                 params={"n": n})
        except BaseException as exc:  # noqa: BLE001  (reported below, with the others)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert errors == []
    stored = entries(db)
    assert [e.id for e in stored] == list(range(1, writers * each + 1))
    assert [e.prev_hash for e in stored] == [GENESIS_HASH, *(e.hash for e in stored[:-1])]  # no fork
    assert {e.actor for e in stored} == {f"U0WRITER{w}" for w in range(writers)}
    assert problems(db) == []


# -- tampering ---------------------------------------------------------------------------------------

def test_verify_names_an_edited_entry(db: Database, clock: FakeClock) -> None:
    write_chain(db, clock)
    tamper(db, """UPDATE audit_entry SET params = '{"pod": "api-2", "previous": false}' WHERE id = 3""")
    assert problems(db) == [Problem(3, "edited: its content does not match its hash")]
    assert str(problems(db)[0]) == "entry 3: edited: its content does not match its hash"


def test_verify_names_the_entry_after_one_edited_and_re_hashed(db: Database, clock: FakeClock) -> None:
    write_chain(db, clock)
    third = entries(db)[2]
    third.actor = "U0MALLORY"
    tamper(db, "UPDATE audit_entry SET actor = 'U0MALLORY', hash = :hash WHERE id = 3", hash=audit.entry_hash(third))
    [problem] = problems(db)
    assert problem.entry_id == 4 and problem.what.startswith("does not follow entry 3: its prev_hash is not that "
                                                             "entry's hash")
    assert "re-hashed" in problem.what


_FORGE = ("INSERT INTO audit_entry (id, at, event, actor, incident_id, action, params, data, prev_hash, hash) "
          "SELECT :id, at, 'executed', 'U0MALLORY', incident_id, 'k8s.delete_pod', params, data, :prev, :forged "
          "FROM audit_entry WHERE id = 5")


def test_verify_names_an_entry_inserted_after_the_last(db: Database, clock: FakeClock) -> None:
    chain = write_chain(db, clock)
    tamper(db, _FORGE, id=6, prev=chain[2].hash, forged="a" * 64)  # claims to follow entry 3
    assert problems(db) == [Problem(6, "does not follow entry 5: its prev_hash is not that entry's hash (inserted, "
                                       "or the entry before it re-hashed, or entries deleted and renumbered); its "
                                       "content does not match its hash")]


def test_verify_names_an_entry_inserted_before_the_first(db: Database, clock: FakeClock) -> None:
    write_chain(db, clock)
    tamper(db, _FORGE, id=0, prev="f" * 64, forged="b" * 64)
    assert problems(db) == [Problem(0, "inserted: not in the chain (the entry after it follows the start of the log); "
                                       "its content does not match its hash")]  # entry 1 is not blamed


@pytest.mark.parametrize("deleted, expected", [
    ([3], Problem(3, "deleted: entry 3 is missing (the prev_hash of entry 4 is not the hash of entry 2)")),
    ([2, 3], Problem(2, "deleted: entries 2 to 3 are missing (the prev_hash of entry 4 is not the hash of entry 1)")),
    ([1], Problem(1, "deleted: entry 1 is missing (the prev_hash of entry 2 is not the hash of the start of the log)")),
], ids=["one", "two", "the first"])
def test_verify_names_a_deleted_entry(db: Database, clock: FakeClock, deleted: list[int], expected: Problem) -> None:
    write_chain(db, clock)
    for entry_id in deleted:
        tamper(db, "DELETE FROM audit_entry WHERE id = :id", id=entry_id)
    assert problems(db) == [expected]


# -- oncall-bot audit --------------------------------------------------------------------------------

@pytest.fixture
def db_env(db: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setenv("DATABASE_URL", db.url)
    return db


def test_audit_verify_passes_then_fails_after_tampering(db_env: Database, clock: FakeClock,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify"]) == 0
    assert capsys.readouterr().out == "audit log ok: 0 entries\n"
    write_chain(db_env, clock)
    assert main(["audit", "verify"]) == 0
    out, err = capsys.readouterr()
    assert out == "audit log ok: 5 entries\n" and err.startswith("oncall-bot: using the database ")
    tamper(db_env, """UPDATE audit_entry SET data = '{"ok": false}' WHERE id = 2""")
    tamper(db_env, "DELETE FROM audit_entry WHERE id = 4")
    assert main(["audit", "verify"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "entry 2: edited: its content does not match its hash",
        "entry 4: deleted: entry 4 is missing (the prev_hash of entry 5 is not the hash of entry 3)"]


def test_the_audit_console_script_exits_0_then_1(db_env: Database, clock: FakeClock) -> None:
    write_chain(db_env, clock, 2)

    def verify() -> subprocess.CompletedProcess[str]:
        return subprocess.run([oncall_bot(), "audit", "verify"], capture_output=True, text=True, timeout=60)

    ok = verify()
    assert (ok.returncode, ok.stdout) == (0, "audit log ok: 2 entries\n")
    tamper(db_env, "UPDATE audit_entry SET actor = 'U0MALLORY' WHERE id = 1")
    broken = verify()
    assert (broken.returncode, broken.stdout) == (1, "entry 1: edited: its content does not match its hash\n")


def test_audit_export_since_prints_json_lines(db_env: Database, clock: FakeClock,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with db_env.session() as session:
        for ago, event in ((timedelta(days=3), "requested"), (timedelta(hours=2), "approved"),
                           (timedelta(0), "executed")):
            audit.record(session, event=event, actor="U0BOB", at=clock() - ago, incident_id=9,
                         action="k8s.rollout_restart", params={"deployment": "api"})
    assert main(["audit", "export", "--since", "24h"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(line["id"], line["event"]) for line in lines] == [(2, "approved"), (3, "executed")]
    assert lines[1]["prev_hash"] == lines[0]["hash"] and all(canonical_sha256(line) == line["hash"] for line in lines)
    assert err.startswith("oncall-bot: using the database ")  # stdout is JSON lines only

    since = (clock() - timedelta(days=4)).isoformat()
    assert main(["audit", "export", "--since", since]) == 0
    assert [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines()] == \
        ["requested", "approved", "executed"]
    assert main(["audit", "export", "--since", "7d"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_audit_export_refuses_a_bad_since(tmp_path: Path, clock: FakeClock, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    database = tmp_path / "oncall.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    naive = clock().strftime("%Y-%m-%dT%H:%M:%S")
    for since, message in (("yesterday", "--since 'yesterday' is neither how long ago (24h, 7d, 1h30m) nor an ISO "
                                         "8601 time"),
                           (naive, f"--since '{naive}' has no time zone")):
        assert main(["audit", "export", "--since", since]) == 2
        assert message in capsys.readouterr().err
    assert not database.exists()  # checked before the database is touched


@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "export", "--since", "24h"]], ids=" ".join)
def test_audit_commands_create_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(command) == 2
    assert "no database at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- what the bot writes -----------------------------------------------------------------------------

@pytest.fixture
def audited_bot(database_url: str, slack: FakeSlack, clock: FakeClock, tmp_path: Path) -> Iterator[RunningBot]:
    with FakeKubernetes() as kubernetes:
        kubernetes.add_pod("prod", "api-7d9f-x2", labels={"app": "api"}, restarts=5, logs=CURRENT_LOGS,
                           previous_logs=PREVIOUS_LOGS)
        running = start_bot(runbook_settings(database_url, slack, kubernetes.kubeconfig(tmp_path / "kubeconfig")),
                            clock=clock)
        try:
            yield running
        finally:
            running.stop()
            running.services.db.dispose()


def test_a_diagnostic_clicked_in_slack_is_audited(audited_bot: RunningBot, slack: FakeSlack,
                                                  clock: FakeClock) -> None:
    incident = open_incident(audited_bot)
    logs = by_id(posted_steps(audited_bot, incident), "previous-logs")
    clock.advance(hours=3)  # the entry's time is the bot's clock, not the wall clock
    clicked = clock()
    assert click(audited_bot, slack, logs, "U0ALICE").status_code == 200
    wait_for(lambda: timeline(audited_bot, incident.id or 0, "diagnostic"), what="the diagnostic to run")

    [entry] = [e for e in entries(audited_bot.services.db) if e.event == "diagnostic_run"]
    assert (entry.event, entry.actor, entry.incident_id, entry.action) == \
        ("diagnostic_run", "U0ALICE", incident.id, "k8s.logs")
    assert entry.params == logs.params
    assert entry.data["ok"] is True and entry.data["step"] == "previous-logs"
    assert entry.data["outcome"].startswith("3 log lines")
    assert clicked <= entry.at <= clock()
    assert problems(audited_bot.services.db) == []
