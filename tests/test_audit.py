"""The audit log (bot.audit): one hash chain on SQLite and PostgreSQL, even with concurrent
writers; `verify` names every entry edited, inserted or deleted by hand; anchors kept outside the
database (`audit head`, the "audit appended" log line, logged only once committed) catch the
newest entries deleted or re-hashed; `oncall-bot audit`; a diagnostic clicked in Slack is in it."""

from __future__ import annotations

import hashlib
import json
import logging
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
from bot.logs import JsonFormatter
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


@pytest.mark.parametrize("command", [["audit", "verify"], ["audit", "export", "--since", "24h"], ["audit", "head"]],
                         ids=" ".join)
def test_audit_commands_create_no_database(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(command) == 2
    assert "no database at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- anchors: the head kept outside the database --------------------------------------------------------

def head_now(capsys: pytest.CaptureFixture[str]) -> str:
    """What `oncall-bot audit head` prints (one JSON line), as a cron job would store it."""
    assert main(["audit", "head"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return out.strip()


def verify_with(capsys: pytest.CaptureFixture[str], *anchors: str) -> tuple[int, list[str]]:
    code = main(["audit", "verify", *(arg for anchor in anchors for arg in ("--anchor", anchor))])
    return code, capsys.readouterr().out.splitlines()


def appended(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.audit" and r.getMessage() == "audit appended"]


def logged(record: logging.LogRecord) -> dict[str, Any]:
    return {key: record.__dict__[key] for key in ("audit_id", "event", "hash", "at")}


def test_audit_head_prints_the_newest_entry(db_env: Database, clock: FakeClock,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert json.loads(head_now(capsys)) == {"id": 0, "hash": GENESIS_HASH, "at": None}  # an empty log
    start = clock()
    write_chain(db_env, clock, 3)
    with db_env.read() as session:
        last = list(audit.export(session, start))[-1]
    assert json.loads(head_now(capsys)) == {"id": 3, "hash": last["hash"], "at": last["at"]}


@pytest.mark.parametrize("kept, expected", [
    (3, "entries from 4 on were deleted (the log now ends at entry 3)"),
    (0, "entries from 1 on were deleted (the log is now empty)"),
], ids=["the newest two", "all"])
def test_the_newest_entries_deleted_pass_the_chain_but_not_the_anchor(
        db_env: Database, clock: FakeClock, capsys: pytest.CaptureFixture[str], kept: int, expected: str) -> None:
    write_chain(db_env, clock)
    anchor = head_now(capsys)
    assert verify_with(capsys, anchor) == (0, ["audit log ok: 5 entries, matching 1 anchor (entry 5)"])
    tamper(db_env, "DELETE FROM audit_entry WHERE id > :kept", kept=kept)
    assert verify_with(capsys) == (0, [f"audit log ok: {kept} entries"])  # the gap the anchor closes
    at = json.loads(anchor)["at"]
    assert verify_with(capsys, anchor) == (1, [f"entry 5 of the anchor from {at} is missing: {expected}"])


def test_the_tail_rewritten_and_re_hashed_passes_the_chain_but_not_the_anchors(
        db_env: Database, clock: FakeClock, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"  # a head stored after every append
    for _ in range(5):
        write_chain(db_env, clock, 1)
        with anchors.open("a") as kept:
            kept.write(head_now(capsys) + "\n")
    at = [json.loads(line)["at"] for line in anchors.read_text().splitlines()]

    # What someone with the password and the README does: edit entry 4, re-hash it and entry 5.
    with db_env.read() as session:
        lines = list(audit.export(session, clock() - timedelta(days=1)))
    prev = lines[2]["hash"]
    for line in lines[3:]:
        line.update(actor="U0MALLORY", prev_hash=prev)
        prev = line["hash"] = canonical_sha256(line)
        tamper(db_env, "UPDATE audit_entry SET actor = :actor, prev_hash = :prev, hash = :hash WHERE id = :id",
               actor=line["actor"], prev=line["prev_hash"], hash=line["hash"], id=line["id"])
    assert verify_with(capsys) == (0, ["audit log ok: 5 entries"])
    rewritten = (f"entry 4 no longer has the hash of the anchor from {at[3]}: the chain was rewritten from there or "
                 "from an earlier entry (after entry 3, whose anchor holds)")
    assert verify_with(capsys, str(anchors)) == (1, [f"{rewritten}; 1 later anchor (entry 5) fails the same way"])

    tamper(db_env, "DELETE FROM audit_entry WHERE id = 5")  # and then the newest one deleted as well
    assert verify_with(capsys, str(anchors)) == (1, [
        rewritten, f"entry 5 of the anchor from {at[4]} is missing: entries from 5 on were deleted (the log now "
                   "ends at entry 4)"])


def test_anchors_that_hold_pass(db_env: Database, clock: FakeClock, capsys: pytest.CaptureFixture[str],
                                caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.INFO, logger="bot.audit")
    empty = head_now(capsys)
    start = clock()
    write_chain(db_env, clock, 2)
    second = head_now(capsys)
    write_chain(db_env, clock, 3)
    with db_env.read() as session:
        export_line = json.dumps(list(audit.export(session, start))[3])  # entry 4, every column
    log_lines = tmp_path / "bot.log"  # the shipped logs, grepped for "audit appended"
    log_lines.write_text("".join(JsonFormatter().format(record) + "\n" for record in appended(caplog)))
    listed = json.dumps([json.loads(second), json.loads(head_now(capsys))])

    assert verify_with(capsys, empty, second, export_line, listed) == \
        (0, ["audit log ok: 5 entries, matching 4 anchors (up to entry 5)"])  # 0, 2, 4, 5
    assert verify_with(capsys, str(log_lines)) == (0, ["audit log ok: 5 entries, matching 5 anchors (up to entry 5)"])
    tamper(db_env, "DELETE FROM audit_entry WHERE id >= 4")
    code, out = verify_with(capsys, str(log_lines))
    assert code == 1 and out == [f"entry 4 of the anchor from {json.loads(export_line)['at']} is missing: entries "
                                 "from 4 on were deleted (the log now ends at entry 3); 1 later anchor (entry 5) "
                                 "fails the same way"]


_HASH = "ab" * 32
_FORMAT = 'write a JSON object {"id": N, "hash": "<64 hex digits>", "at": "..."} as `oncall-bot audit head` prints'


@pytest.mark.parametrize("anchor, message", [
    ('{"id": 5}', '--anchor: "hash" must be the entry\'s SHA-256 as 64 hex digits, it has none; ' + _FORMAT),
    (f'{{"hash": "{_HASH}"}}', '--anchor: "id" must be an entry id (a whole number, 0 or more), it has none; '
                              + _FORMAT),
    (f'{{"id": "5", "hash": "{_HASH}"}}', '--anchor: "id" must be an entry id (a whole number, 0 or more), not "5"'),
    (f'{{"id": -1, "hash": "{_HASH}"}}', '--anchor: "id" must be an entry id (a whole number, 0 or more), not -1'),
    ('{"id": 5, "hash": "5f3a"}', '--anchor: "hash" must be the entry\'s SHA-256 as 64 hex digits, not "5f3a"'),
    (f'{{"id": 5, "hash": "{_HASH}", "at": 1733000000}}', '--anchor: "at" must be the entry\'s time as text, not '
                                                          '1733000000'),
    (f'{{"id": 0, "hash": "{_HASH}"}}', f"--anchor: id 0 is the start of the log, whose hash is {GENESIS_HASH}"),
    ("[5]", "--anchor: item 1: not an anchor but 5; " + _FORMAT),
    ("{id: 5}", "--anchor:1: not JSON (Expecting property name enclosed in double quotes); " + _FORMAT),
    ("head.json", "--anchor 'head.json': cannot read it (No such file or directory); give a file of what "
                  "`oncall-bot audit head` printed, or that JSON itself"),
    ("anchors.jsonl", "anchors.jsonl:3: not JSON (Expecting value); " + _FORMAT),
    ("empty.jsonl", "empty.jsonl: no anchors in it; " + _FORMAT),
], ids=["no hash", "no id", "id text", "id negative", "hash short", "at number", "id 0 not genesis", "a list",
        "not json", "no such file", "a bad line", "empty file"])
def test_a_malformed_anchor_is_refused_before_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch, anchor: str,
                                                            message: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'oncall.db'}")
    (tmp_path / "anchors.jsonl").write_text(f'{{"id": 1, "hash": "{_HASH}"}}\n\nnot json\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    assert main(["audit", "verify", "--anchor", anchor]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"oncall-bot: {message}") and err.count("\n") == 1
    assert not (tmp_path / "oncall.db").exists()  # checked before the database is touched


def test_each_committed_append_is_logged_as_the_head(db_env: Database, clock: FakeClock,
                                                     capsys: pytest.CaptureFixture[str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.audit")
    start = clock()
    with db_env.session() as session:
        audit.record(session, event="requested", actor="U0BOB", at=clock(), incident_id=9, action="k8s.scale")
        assert appended(caplog) == []  # not before the commit
    assert len(appended(caplog)) == 1
    write_chain(db_env, clock, 2)
    with db_env.read() as session:
        stored = list(audit.export(session, start))
    records = appended(caplog)
    assert [logged(r) for r in records] == [
        {"audit_id": line["id"], "event": line["event"], "hash": line["hash"], "at": line["at"]} for line in stored]
    assert [line["event"] for line in stored] == ["requested", "diagnostic_run", "diagnostic_run"]
    last = logged(records[-1])
    assert json.loads(head_now(capsys)) == {"id": last["audit_id"], "hash": last["hash"], "at": last["at"]}
    shipped = json.loads(JsonFormatter().format(records[-1]))  # as it leaves the box
    assert (shipped["logger"], shipped["message"], shipped["audit_id"], shipped["hash"]) == \
        ("bot.audit", "audit appended", 3, last["hash"])


def test_a_rolled_back_append_is_never_logged(db: Database, clock: FakeClock,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.audit")

    def append(session: Any, event: str) -> None:
        audit.record(session, event=event, actor="oncall-bot", at=clock())

    with pytest.raises(RuntimeError), db.session() as session:
        append(session, "rolled_back")
        raise RuntimeError("the transaction failed after the append")
    with db.session() as session:  # a savepoint rolled back inside a committed transaction (bot.timers does this)
        append(session, "kept")
        with pytest.raises(RuntimeError), session.begin_nested():
            append(session, "in_failed_savepoint")
            raise RuntimeError("one timer failed")
    with pytest.raises(RuntimeError), db.session() as session:  # a savepoint released, then all rolled back
        with session.begin_nested():
            append(session, "released_then_rolled_back")
        raise RuntimeError("the transaction failed after the savepoint")
    with db.session() as session:  # a savepoint released into a transaction that commits
        with session.begin_nested():
            append(session, "in_released_savepoint")
        assert [r.__dict__["event"] for r in appended(caplog)] == ["kept"]  # released is not committed
    records = appended(caplog)
    assert [r.__dict__["event"] for r in records] == ["kept", "in_released_savepoint"]
    assert [(r.__dict__["audit_id"], r.__dict__["hash"]) for r in records] == [(e.id, e.hash) for e in entries(db)]
    assert problems(db) == []


def test_the_console_script_keeps_and_checks_an_anchor(db_env: Database, clock: FakeClock) -> None:
    write_chain(db_env, clock, 3)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([oncall_bot(), "audit", *args], input=stdin, capture_output=True, text=True, timeout=60)

    head = run("head")
    assert head.returncode == 0 and json.loads(head.stdout)["id"] == 3
    ok = run("verify", "--anchor", "-", stdin=head.stdout)  # e.g. `aws s3 cp s3://bucket/head.json - | ...`
    assert (ok.returncode, ok.stdout) == (0, "audit log ok: 3 entries, matching 1 anchor (entry 3)\n")
    tamper(db_env, "DELETE FROM audit_entry WHERE id = 3")
    broken = run("verify", "--anchor", "-", stdin=head.stdout)
    assert (broken.returncode, broken.stdout) == (1, f"entry 3 of the anchor from {json.loads(head.stdout)['at']} is "
                                                     "missing: entries from 3 on were deleted (the log now ends at "
                                                     "entry 2)\n")


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
