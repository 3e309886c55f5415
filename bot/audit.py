"""The audit log: an append-only, hash-chained record of what was run, asked for and decided.

The guarantee: every entry carries the SHA-256 of its own content and of the entry before it
(`prev_hash`), so an entry edited, inserted or deleted in the database by hand (SQL, a restore
of an old row) breaks the chain there, and `verify` names that entry and what is wrong with it.
Appends are serialised (a transaction-scoped advisory lock on PostgreSQL, the write lock on
SQLite) and take the next id under that lock, so concurrent writers, across replicas, make one
chain with dense ids, and an append rolled back with its transaction leaves no gap; two writers
that ever read the same last entry would collide on the primary key rather than fork the chain.

What the chain alone does not catch: the hash is not keyed, so someone with write access who
deletes the newest entries, or who recomputes every hash from the tampered entry onwards, leaves
a chain that verifies. That needs a witness outside the database, an anchor: the head (`head`:
the last entry's id, hash and time) kept elsewhere, checked by `check_anchors`. Two witnesses:
every committed append is logged (`bot.audit`, "audit appended", with its id, event, hash and
time; the logs ship off the box), and `oncall-bot audit head` prints the head for a cron job to
store. The log line is written after the transaction commits (the session's `after_commit`; a
savepoint rolled back forgets what it appended), so the log never names an entry that was rolled
back: an anchored entry that is missing was deleted. A crash between the commit and the log line
loses only that line; the next append's line anchors the entry with it.

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
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import func, select, text
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session, col

from bot.models import AuditEntry

__all__ = ["GENESIS_HASH", "Anchor", "AnchorError", "AnchorProblem", "Problem", "check_anchors", "entry_hash",
           "export", "head", "parse_anchors", "record", "verify"]

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64  # the prev_hash of the first entry
# pg_advisory_xact_lock key of the append lock: b"oncaudit" as a bigint; nothing else uses it.
_APPEND_LOCK = 0x6F6E636175646974
_EVENT_LENGTH, _ACTOR_LENGTH, _ACTION_LENGTH = 32, 128, 64
# session.info key: the entries appended in the session's open transaction, logged at its commit.
_APPENDED = "bot.audit.appended"


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
    _log_at_commit(session, entry)
    return entry


def _log_at_commit(session: Session, entry: AuditEntry) -> None:
    """Remember the new head, with the (innermost) transaction that wrote it, for `_log_committed`."""
    appended: list[tuple[SessionTransaction | None, dict[str, Any]]] | None = session.info.get(_APPENDED)
    if appended is None:
        appended = session.info[_APPENDED] = []
        sa_event.listen(session, "after_commit", _log_committed)
        sa_event.listen(session, "after_soft_rollback", _forget_rolled_back)
    written_in = session.get_nested_transaction() or session.get_transaction()
    appended.append((written_in, {"audit_id": entry.id, "event": entry.event, "hash": entry.hash,
                                  "at": _iso(entry.at)}))


def _log_committed(session: Session) -> None:
    """after_commit: the appends are in the database now; log each as an anchor (oldest first)."""
    if session.in_nested_transaction():
        return  # a savepoint released: its appends commit (or roll back) with the transaction around it
    appended = session.info.get(_APPENDED) or []
    for _, fields in appended:
        log.info("audit appended", extra=fields)
    appended.clear()


def _forget_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    """after_soft_rollback: appends made in the rolled-back transaction (or a savepoint inside it) are gone."""
    def inside(transaction: SessionTransaction | None) -> bool:
        while transaction is not None:
            if transaction is previous_transaction:
                return True
            transaction = transaction.parent
        return False

    appended = session.info.get(_APPENDED)
    if appended:
        appended[:] = [(written_in, fields) for written_in, fields in appended if not inside(written_in)]


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


def head(session: Session) -> dict[str, Any]:
    """The newest entry as an anchor: `{"id", "hash", "at"}` (an empty log: id 0, the genesis hash, no time)."""
    last = session.scalars(select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(1)).first()
    if last is None:
        return {"id": 0, "hash": GENESIS_HASH, "at": None}
    return {"id": last.id, "hash": last.hash, "at": _iso(last.at)}


# -- anchors: heads kept outside the database ---------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ANCHOR_FORMAT = ('a JSON object {"id": N, "hash": "<64 hex digits>", "at": "..."} as `oncall-bot audit head` '
                  'prints (an `audit export` line or the bot\'s "audit appended" log line also works)')


class AnchorError(ValueError):
    """An anchor that cannot be read; the message names where (source:line) and the format."""


@dataclass(frozen=True, order=True)
class Anchor:
    """The head at some moment, kept outside the database: entry `id` had `hash` (`at`: its time)."""

    id: int
    hash: str
    at: str | None = None

    @property
    def named(self) -> str:
        return f"the anchor from {self.at}" if self.at else "the anchor"


def _anchor(value: Any, where: str) -> Anchor:
    if not isinstance(value, dict):
        raise AnchorError(f"{where}: not an anchor but {_shown(value)}; write {_ANCHOR_FORMAT}")
    key = "id" if "id" in value else "audit_id"  # audit head / export: id; the log line: audit_id
    entry_id, entry_hash_, at = value.get(key), value.get("hash"), value.get("at")
    if isinstance(entry_id, bool) or not isinstance(entry_id, int) or entry_id < 0:
        got = "it has none" if key not in value else f"not {_shown(entry_id)}"
        raise AnchorError(f"{where}: \"id\" must be an entry id (a whole number, 0 or more), {got}; "
                          f"write {_ANCHOR_FORMAT}")
    if not isinstance(entry_hash_, str) or not _HEX64.fullmatch(entry_hash_.lower()):
        got = "it has none" if "hash" not in value else f"not {_shown(entry_hash_)}"
        raise AnchorError(f"{where}: \"hash\" must be the entry's SHA-256 as 64 hex digits, {got}; "
                          f"write {_ANCHOR_FORMAT}")
    if at is not None and not isinstance(at, str):
        raise AnchorError(f"{where}: \"at\" must be the entry's time as text, not {_shown(at)}")
    if entry_id == 0 and entry_hash_.lower() != GENESIS_HASH:
        raise AnchorError(f"{where}: id 0 is the start of the log, whose hash is {GENESIS_HASH}")
    return Anchor(entry_id, entry_hash_.lower(), at)


def _shown(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 80 else shown[:79] + "…"


def parse_anchors(source: str, content: str) -> list[Anchor]:
    """Anchors in `content` (read from `source`, named in errors): one JSON object, a JSON list of
    them, or JSON lines (blank lines skipped). Raises AnchorError for anything else."""
    try:
        whole = json.loads(content)
    except json.JSONDecodeError:
        anchors = list(_anchor_lines(source, content))
    else:
        items = whole if isinstance(whole, list) else [whole]
        anchors = [_anchor(item, source if item is whole else f"{source}: item {n}") for n, item in enumerate(items, 1)]
    if not anchors:
        raise AnchorError(f"{source}: no anchors in it; write {_ANCHOR_FORMAT}, one per line")
    return anchors


def _anchor_lines(source: str, content: str) -> Iterator[Anchor]:
    for number, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AnchorError(f"{source}:{number}: not JSON ({exc.msg}); write {_ANCHOR_FORMAT}, one per "
                              "line") from None
        yield _anchor(value, f"{source}:{number}")


@dataclass(frozen=True)
class AnchorProblem:
    """An anchor the database no longer matches: the entry (by id) and the whole sentence."""

    entry_id: int
    what: str

    def __str__(self) -> str:
        return self.what


def check_anchors(session: Session, anchors: Sequence[Anchor]) -> list[AnchorProblem]:
    """Each anchored entry must still be there with the anchored hash. A failing anchor is named
    once per way of failing (the newest entries deleted, an entry within deleted, re-hashed), at
    the lowest id: every later anchor then fails too, as each entry's hash covers the one before."""
    ordered = sorted({(a.id, a.hash): a for a in anchors}.values())  # the same anchor twice counts once
    stored: dict[int, str] = {}
    wanted = sorted({a.id for a in ordered if a.id})
    for ids in (wanted[n:n + 500] for n in range(0, len(wanted), 500)):
        rows = session.execute(select(col(AuditEntry.id), col(AuditEntry.hash)).where(col(AuditEntry.id).in_(ids)))
        stored.update((entry_id, entry_hash_) for entry_id, entry_hash_ in rows)
    last_id = session.scalar(select(func.max(AuditEntry.id))) or 0
    first: dict[str, tuple[AnchorProblem, list[Anchor]]] = {}  # way of failing: its first problem, the rest
    held = 0  # the highest id whose anchor holds so far
    for anchor in ordered:
        found = GENESIS_HASH if anchor.id == 0 else stored.get(anchor.id)
        if found == anchor.hash:
            held = max(held, anchor.id)
            continue
        missing = f"entry {anchor.id} of {anchor.named} is missing"
        if found is None and anchor.id > last_id:
            now = "the log is now empty" if last_id == 0 else f"the log now ends at entry {last_id}"
            kind, what = "newest deleted", f"{missing}: entries from {last_id + 1} on were deleted ({now})"
        elif found is None:
            kind, what = "deleted", f"{missing}: it was deleted (the entries after it are still there)"
        else:
            after = f" (after entry {held}, whose anchor holds)" if held else ""
            kind, what = "rewritten", (f"entry {anchor.id} no longer has the hash of {anchor.named}: the chain was "
                                       f"rewritten from there or from an earlier entry{after}")
        if kind in first:
            first[kind][1].append(anchor)
        else:
            first[kind] = (AnchorProblem(anchor.id, what), [])
    problems = []
    for problem, later in first.values():
        if later:
            last = max(a.id for a in later)
            more = (f"1 later anchor (entry {last}) fails" if len(later) == 1
                    else f"{len(later)} later anchors (to entry {last}) fail")
            problem = AnchorProblem(problem.entry_id, f"{problem.what}; {more} the same way")
        problems.append(problem)
    return sorted(problems, key=lambda p: p.entry_id)
