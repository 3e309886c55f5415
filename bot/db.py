"""Engine, sessions and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlmodel import Session, create_engine

__all__ = ["CHANGES_CHANNEL", "MIGRATIONS", "Database", "DatabaseUnavailable", "normalise_url", "shown_url",
           "sqlite_path"]

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Let users write postgresql:// (or postgres://) and still get the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class DatabaseUnavailable(Exception):
    """The database cannot be used; the message names DATABASE_URL, the cause and the fix."""


def shown_url(url: str) -> str:
    """The URL as it may be printed or logged: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


def _cause(exc: DBAPIError) -> str:
    """`connection refused`, `database "x" does not exist`: the driver's reason, without its framing."""
    first = str(exc.orig or exc).strip().splitlines()[0]
    reason = first.rsplit("failed: ", 1)[-1].removeprefix("FATAL:").strip()
    return reason[:1].lower() + reason[1:]


def _migrations() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


_BUSY_SECONDS = 30  # how long a writer waits for another before giving up (the endpoint answers 503)

# One writer per SQLite file in this process. SQLite lets one transaction write at a time; a
# thread that finds the file taken waits in SQLite's busy handler, which sleeps (up to 100 ms a
# try) instead of being woken, and under a burst those sleeps are the slowest answers. Taking
# turns on a lock wakes the next writer as soon as the last one is done. Keyed by the file, so
# that every Database on it in this process shares the lock; other processes on the file (the
# CLI) still meet SQLite's own lock and busy_timeout.
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(url: str) -> threading.RLock:
    path = sqlite_path(url)
    if path is None:  # in-memory: a database per Database
        return threading.RLock()
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(str(path), threading.RLock())


# An execution option: the connection's "transaction" sends no BEGIN (Database.statement).
_NO_BEGIN = "oncall_no_begin"


def _sqlite_engine(url: str, *, writer: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": _BUSY_SECONDS})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not the driver, open transactions (see _on_begin), and use WAL
        # so that readers (the worker, /readyz) do not block the webhook writer.
        dbapi_connection.isolation_level = None
        # The busy timeout first: switching a new file to WAL waits for another connection's lock.
        dbapi_connection.execute(f"PRAGMA busy_timeout={_BUSY_SECONDS * 1000}")
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # Writers take the write lock up front: two concurrent deliveries of one alert group
        # then serialise instead of both reading "no incident" and racing to create one.
        # Readers use WAL snapshots and never wait for a writer.
        if not conn.get_execution_options().get(_NO_BEGIN):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


class _Generation:
    """A counter that moves whenever this process may have missed a change of the incident
    tables (CHANGED_TABLES): after each of this process's transactions that wrote one of them
    (or ended in an error: its outcome unknown), and on what the watch hears of the others
    (Database.changes)."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = threading.Lock()
        self._local = threading.local()  # per thread: how many statements wrote CHANGED_TABLES

    def bump(self) -> None:
        with self._lock:
            self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def writes(self) -> int:
        return getattr(self._local, "writes", 0)

    def saw(self, statement: str) -> None:
        """A statement this thread sends (the engine's before_cursor_execute)."""
        found = _WRITES.match(statement)
        if found is not None and found.group(1).lower() in CHANGED_TABLES:
            self._local.writes = self.writes() + 1


# The tables whose rows bot.incidents.Repeats keeps (and migration 0020's triggers watch).
CHANGED_TABLES = frozenset({"incident", "alert_group"})
_WRITES = re.compile(r'\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+"?(\w+)',
                     re.IGNORECASE)


class _SqliteWatch:
    """Other connections' commits to an SQLite file, read off one connection of its own:
    `PRAGMA data_version` moves when any other connection (this process's or another's)
    commits, and reads the WAL index in shared memory, no file and no lock."""

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()

    def version(self) -> int:
        with self._lock:
            return int(self._connection.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        self._connection.close()


class _PostgresWatch:
    """Other processes' commits to the incident tables, heard on a LISTEN connection of its own
    (migration 0020's triggers NOTIFY CHANGES_CHANNEL after every statement on them).
    `listening` is False while the connection is down: a notification may have been missed then,
    so each drop and each new LISTEN moves the generation. A connection that stops answering
    without closing (a partition) is found by a ping every PING_SECONDS."""

    PING_SECONDS = 2.0

    def __init__(self, url: str, generation: _Generation) -> None:
        self._dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._generation = generation
        self.listening = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="db-changes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as connection:
                    connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._generation.bump()
                    self.listening, backoff = True, 1.0
                    self._listen(connection)
            except psycopg.Error as exc:
                if "does not exist" in str(exc):  # dropped: safe to stop (every repeat is read)
                    log.error("the database is gone: not listening for its changes any more",
                              extra={"error": str(exc).strip()[:300]})
                    self._stopped.set()
                else:
                    log.warning("not hearing the database's change notifications; repeats are read from the "
                                "database until they return", extra={"error": str(exc).strip()[:300],
                                                                      "retry_in_seconds": backoff})
            finally:
                self.listening = False
                self._generation.bump()
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _listen(self, connection: psycopg.Connection) -> None:
        while not self._stopped.is_set():
            for _ in connection.notifies(timeout=self.PING_SECONDS):
                self._generation.bump()
            connection.execute("SELECT 1")

    def close(self) -> None:
        """Stop listening (within PING_SECONDS; not waited for: dispose() must not take that long)."""
        self._stopped.set()


# The NOTIFY channel of migration 0020's triggers on the incident and alert_group tables.
CHANGES_CHANNEL = "oncall_changes"

# pg_advisory_xact_lock's key for migrations: any constant no other lock of ours uses.
_MIGRATION_LOCK = 0x6F6E63616C6C  # 'oncall'


class Database:
    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.shown_url = shown_url(url)  # as the user wrote it, without the password
        self.is_sqlite = self.url.startswith("sqlite")
        # Write transactions on SQLite take turns on one lock (_writer_lock); PostgreSQL needs none.
        self._writer: threading.RLock | None = None
        self._generation = _Generation()
        self._watch: _SqliteWatch | _PostgresWatch | None = None
        self._watch_guard = threading.Lock()
        self._unwatchable = False
        if self.is_sqlite:
            self.engine = _sqlite_engine(self.url, writer=True)
            self._read_engine = _sqlite_engine(self.url, writer=False)
            self._writer = _writer_lock(self.url)
            self._statements: Engine = self._read_engine.execution_options(**{_NO_BEGIN: True})
        else:
            # A host that drops packets must not hang the bot or the CLI: give up after 10 s.
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=10,
                                        connect_args={"connect_timeout": 10})
            self._read_engine = self.engine
            # No pre-ping for the hottest reads: it is a round trip of its own on every checkout.
            # After a server restart the first statement fails instead (a 503: Alertmanager
            # retries), and SQLAlchemy then drops every pooled connection of that engine.
            self._statements = create_engine(self.url, pool_size=10, max_overflow=10, isolation_level="AUTOCOMMIT",
                                             connect_args={"connect_timeout": 10})
        event.listen(self.engine, "before_cursor_execute", self._saw)

    def _saw(self, _conn: Connection, _cursor: object, statement: str, *_args: object) -> None:
        self._generation.saw(statement)

    @classmethod
    def existing(cls, url: str) -> Database:
        """The bot's database, for the CLI: never created nor migrated here, so that a command run
        in the wrong directory or against the wrong server says so instead of using an empty one."""
        path = sqlite_path(normalise_url(url))
        if path is not None and not path.is_file():
            raise DatabaseUnavailable(
                f"DATABASE_URL={shown_url(url)}: no database at {path}; run this from the bot's directory "
                "or set DATABASE_URL to the bot's database")
        db = cls(url)
        try:
            db.check_connection()
            db.check_schema()
        except DatabaseUnavailable:
            db.dispose()
            raise
        return db

    def check_connection(self) -> None:
        """Raise DatabaseUnavailable, naming the cause and the fix, when the database cannot be reached."""
        try:
            self.ping()
        except DBAPIError as exc:
            cause = _cause(exc)
            fix = ("create the database or fix DATABASE_URL" if "does not exist" in cause
                   else "fix DATABASE_URL" if self.is_sqlite else "start PostgreSQL or fix DATABASE_URL")
            raise DatabaseUnavailable(f"DATABASE_URL={self.shown_url}: cannot connect ({cause}); {fix}") from exc

    def check_schema(self) -> None:
        """Raise DatabaseUnavailable unless the schema is the one this version of the bot migrates to."""
        head = ScriptDirectory.from_config(_migrations()).get_current_head()
        with self._read_engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        if current is None:
            raise DatabaseUnavailable(
                f"DATABASE_URL={self.shown_url}: not the bot's database (it has no oncall-bot tables); "
                "point DATABASE_URL at the database `oncall-bot serve` uses")
        if current != head:
            raise DatabaseUnavailable(
                f"DATABASE_URL={self.shown_url}: the schema is at revision {current}, this oncall-bot needs "
                f"{head}; start `oncall-bot serve` of this version once (it migrates), or use the matching CLI")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on any error."""
        writes = self._generation.writes()
        try:
            with self._one_writer(), Session(self.engine, expire_on_commit=False) as session, session.begin():
                yield session
        except BaseException:
            self._generation.bump()  # rolled back, or a commit whose outcome is unknown
            raise
        if self._generation.writes() != writes:  # after the commit: see changes()
            self._generation.bump()

    def changes(self) -> tuple[int, int] | None:
        """A value that differs from any earlier one whenever the rows may have changed since:
        what was read while it had one value may be kept for as long as it keeps it. None while
        this process cannot tell (a PostgreSQL notification connection down, in-memory SQLite).

        Read it before reading the rows, and keep what was read under it: a change committed
        between the two moves it, so that what was read is not used under the new value.
        This process's transactions that wrote an incident table move it when they end (the
        engine sees every statement, whichever way it was written). Other processes' commits: on SQLite
        at once (data_version); on PostgreSQL when their notification arrives, a few ms after
        their commit, so a change another replica just committed may not be seen for those few
        ms (bot.incidents.Repeats says why that is an order the bot may choose)."""
        if self._unwatchable:
            return None
        watch = self._watch or self._start_watch()
        if isinstance(watch, _SqliteWatch):
            return self._generation.count, watch.version()
        if watch is None or not watch.listening:
            return None
        return self._generation.count, 0

    def _start_watch(self) -> _SqliteWatch | _PostgresWatch | None:
        with self._watch_guard:
            if self._watch is None:
                if not self.is_sqlite:
                    self._watch = _PostgresWatch(self.url, self._generation)
                    weakref.finalize(self, self._watch.close)  # a Database dropped without dispose()
                elif (path := sqlite_path(self.url)) is not None:
                    self._watch = _SqliteWatch(path)
                else:
                    self._unwatchable = True  # in-memory: no other connection sees the same database
            return self._watch

    @contextmanager
    def _one_writer(self) -> Iterator[None]:
        if self._writer is None:
            yield
            return
        # Reentrant: a transaction opened inside another on the same thread meets SQLite's own
        # lock and busy_timeout, as it did before this lock, rather than waiting here forever.
        if not self._writer.acquire(timeout=_BUSY_SECONDS):
            raise sa_exc.TimeoutError(f"DATABASE_URL={self.shown_url}: another write held the database "
                                      f"for {_BUSY_SECONDS} s")
        try:
            yield
        finally:
            self._writer.release()

    @contextmanager
    def statement(self) -> Iterator[Connection]:
        """A connection for one read statement outside any transaction: a statement is its own
        snapshot on both databases, and there is no BEGIN and COMMIT to send (on PostgreSQL, two
        round trips of three). For the hottest reads (bot.incidents.Repeats); else read()."""
        with self._statements.connect() as connection:
            yield connection

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (on SQLite it does not wait for writers)."""
        with Session(self._read_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        cfg = _migrations()
        # SQLite: in this process, one Database migrates at a time (the others then find the
        # schema at head); a new file's first connections otherwise race to switch it to WAL.
        with self._one_writer(), self.engine.begin() as connection:
            if not self.is_sqlite:
                # Replicas of a new deployment start together: one migrates while the others wait
                # here, then find the schema at head. (Without it, each CREATEs the same tables
                # and they deadlock or fail. SQLite: BEGIN IMMEDIATE already lets one in at a time.)
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
        log.info("database schema is current", extra={"database": self.engine.url.render_as_string()})

    def ping(self) -> None:
        with self._read_engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self.engine.dispose()
        self._read_engine.dispose()
        if not self.is_sqlite:
            self._statements.dispose()
