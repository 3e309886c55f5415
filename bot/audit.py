"""The audit log: an append-only, hash-chained record of what was run, asked for and decided.

The guarantee: every entry carries the SHA-256 of its own content and of the entry before it
(`prev_hash`), so an entry edited, inserted or deleted in the database by hand (SQL, a restore
of an old row) breaks the chain there, and `verify` names that entry and what is wrong with it.
Appends are serialised (a transaction-scoped advisory lock on PostgreSQL, the write lock on
SQLite) and take the next id under that lock, so concurrent writers, across replicas, make one
chain with dense ids, and an append rolled back with its transaction leaves no gap; two writers
that ever read the same last entry would collide on the primary key rather than fork the chain.

What it does not guarantee: the hash is not keyed, so someone with write access who also
recomputes every hash from the tampered entry onwards, or who deletes the newest entries, leaves
a chain that verifies; keep the head's hash somewhere else (`audit export` of the last entry) to
catch that.

The hash is over the canonical JSON of every column but `hash` (sorted keys, no whitespace,
UTF-8 without escapes, the time as ISO 8601 UTC with microseconds), so it can be checked
without this code. `record` writes in the caller's transaction: call it last in that
transaction, after the rows it is about are locked, since the append lock is held until commit.

Events so far: diagnostic_run, requested (bot.steps); approved, denied, expired, executed,
result and reconciled are the approval flow's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlmodel import Session, col

from bot.models import AuditEntry

__all__ = ["GENESIS_HASH", "Problem", "entry_hash", "export", "record", "verify"]

GENESIS_HASH = "0" * 64  # the prev_hash of the first entry
# pg_advisory_xact_lock key of the append lock: b"oncaudit" as a bigint; nothing else uses it.
_APPEND_LOCK = 0x6F6E636175646974
_EVENT_LENGTH, _ACTOR_LENGTH, _ACTION_LENGTH = 32, 128, 64


@dataclass(frozen=True)
class Problem:
    """One broken link in the chain: the entry (by id) and what is wrong with it."""

    entry_id: int
    what: str

    def __str__(self) -> str:
        return f"entry {self.entry_id}: {self.what}"


def record(session: Session, *, event: str, actor: str, at: datetime, incident_id: int | None = None,
           action: str | None = None, params: dict[str, Any] | None = None,
           data: dict[str, Any] | None = None) -> AuditEntry:
    """Append one entry to the chain, in the caller's transaction (it commits or rolls back with it)."""
    if not event or len(event) > _EVENT_LENGTH:
        raise ValueError(f"an audit event is 1 to {_EVENT_LENGTH} characters, not {event!r}")
    if at.tzinfo is None:
        raise ValueError("naive datetime given to the audit log; use the injected clock (UTC)")
    _lock_for_append(session)
    last = session.execute(select(col(AuditEntry.id), col(AuditEntry.hash))
                           .order_by(col(AuditEntry.id).desc()).limit(1)).first()
    entry = AuditEntry(
        id=last[0] + 1 if last else 1, at=at.astimezone(UTC), event=event, actor=actor[:_ACTOR_LENGTH],
        incident_id=incident_id, action=action[:_ACTION_LENGTH] if action is not None else None,
        params=_plain(params or {}), data=_plain(data or {}), prev_hash=last[1] if last else GENESIS_HASH, hash="")
    entry.hash = entry_hash(entry)
    session.add(entry)
    session.flush()
    return entry


def _lock_for_append(session: Session) -> None:
    """Serialise appends before the last entry is read, so two writers never chain onto the same one."""
    dialect = session.connection().dialect.name
    if dialect == "postgresql":
        # Held until this transaction ends; READ COMMITTED then reads the last writer's entry.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _APPEND_LOCK})
    elif dialect == "sqlite":
        # A write takes SQLite's one write lock (bot.db's sessions already BEGIN IMMEDIATE; this
        # makes it so in any transaction), and it is held until commit: the read below is current.
        session.execute(text("UPDATE audit_entry SET id = id WHERE 0"))


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """The value as the JSON column gives it back (string keys, lists, times as ISO strings), so
    the hash of what is stored is the hash of what was written."""
    def encode(item: Any) -> Any:
        if isinstance(item, datetime):
            return _iso(item)
        raise TypeError(f"the audit log stores JSON values, not {type(item).__name__}")

    plain = json.loads(json.dumps(value, default=encode, allow_nan=False, ensure_ascii=False))
    if not isinstance(plain, dict):
        raise TypeError("audit params and data are JSON objects")
    return plain


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _content(entry: AuditEntry) -> dict[str, Any]:
    """Every column but `hash`, as it is hashed and exported."""
    return {"id": entry.id, "at": _iso(entry.at), "event": entry.event, "actor": entry.actor,
            "incident_id": entry.incident_id, "action": entry.action, "params": entry.params, "data": entry.data,
            "prev_hash": entry.prev_hash}


def entry_hash(entry: AuditEntry) -> str:
    """SHA-256 (hex) of the entry's canonical JSON: sorted keys, no whitespace, UTF-8 unescaped."""
    canonical = json.dumps(_content(entry), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class _Link:
    """An entry as the walk saw it; its problem is worded once the entry after it was seen."""

    id: int
    hash: str
    content_ok: bool = True
    follows: bool = True  # its prev_hash is the hash of the entry before it (the first: the genesis)
    inserted: bool = False  # the entry after it follows the one before it: it is not in the chain

    @property
    def name(self) -> str:
        return "the start of the log" if (self.id, self.hash) == (0, GENESIS_HASH) else f"entry {self.id}"

    def problem(self, prev: _Link) -> Problem | None:
        forged = "" if self.content_ok else "; its content does not match its hash"
        if self.inserted:
            return Problem(self.id, f"inserted: not in the chain (the entry after it follows {prev.name}){forged}")
        if not self.follows:
            return Problem(self.id, f"does not follow {prev.name}: its prev_hash is not that entry's hash (inserted, "
                                    f"or the entry before it re-hashed, or entries deleted and renumbered){forged}")
        return None if self.content_ok else Problem(self.id, "edited: its content does not match its hash")


def verify(session: Session) -> list[Problem]:
    """Walk the chain in id order and name every entry edited, inserted or deleted, in id order
    (a deletion by the first missing id); no problems: the chain is whole."""
    problems: list[Problem] = []
    before, prev = _Link(0, GENESIS_HASH), _Link(0, GENESIS_HASH)  # "entry 0": the genesis
    query = select(AuditEntry).order_by(col(AuditEntry.id)).execution_options(yield_per=500)
    for entry in session.scalars(query):
        assert entry.id is not None
        link = _Link(entry.id, entry.hash, content_ok=entry_hash(entry) == entry.hash)
        if entry.prev_hash == prev.hash:
            pass
        elif not prev.follows and entry.prev_hash == before.hash and prev is not before:
            prev.inserted = True  # this entry follows the one before it, past it
        elif entry.id > prev.id + 1:
            first, last = prev.id + 1, entry.id - 1
            missing = f"entry {first} is" if first == last else f"entries {first} to {last} are"
            problems.append(Problem(first, f"deleted: {missing} missing (the prev_hash of entry {entry.id} is not "
                                           f"the hash of {prev.name})"))
        else:
            link.follows = False
        if (found := prev.problem(before)) is not None:
            problems.append(found)
        before, prev = (before, link) if prev.inserted else (prev, link)
    if (found := prev.problem(before)) is not None:
        problems.append(found)
    problems.sort(key=lambda p: p.entry_id)
    return problems


def export(session: Session, since: datetime) -> Iterator[dict[str, Any]]:
    """Entries from `since` on, in chain order, one JSON-ready dict each (every column, `hash` too)."""
    query = (select(AuditEntry).where(col(AuditEntry.at) >= since).order_by(col(AuditEntry.id))
             .execution_options(yield_per=500))
    for entry in session.scalars(query):
        yield {**_content(entry), "hash": entry.hash}
