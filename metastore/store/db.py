"""Engines and schema migrations for the metastore database.

This module owns how a URL becomes a working engine (SQLite pragmas and
transactional DDL, PostgreSQL through psycopg 3), how passwords are kept out
of messages (:func:`redact`), how driver errors become metastore's
(:func:`map_driver_errors`, the one place they are classified), who may
watch the SQL sent (:func:`on_statement`), and the Alembic operations the
library and the ``metastore db`` commands use: :func:`upgrade`,
:func:`downgrade`, :func:`current`, :func:`is_at_head` and
:func:`ensure_schema`.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote_plus

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    OperationalError,
    SQLAlchemyError,
)

from metastore.errors import (
    ConnectionLostError,
    DatabaseNotFoundError,
    DataRefusedError,
    SchemaError,
    SchemaNotAtHeadError,
    StoreError,
)

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "DEFAULT_URL",
    "VERSION_TABLE",
    "alembic_config",
    "announce_statement",
    "create_engine",
    "current",
    "database_files",
    "downgrade",
    "ensure_schema",
    "head",
    "is_at_head",
    "known_revision",
    "map_driver_errors",
    "on_statement",
    "redact",
    "require_database",
    "script_location",
    "scrub",
    "secrets",
    "upgrade",
]

log = logging.getLogger(__name__)

#: The database used when none is given: a SQLite file in the working folder.
DEFAULT_URL = "sqlite:///metastore.sqlite"
#: Alembic's version table, named so metastore can share a PostgreSQL database.
VERSION_TABLE = "metastore_alembic_version"
#: Key of ``pg_advisory_xact_lock`` taken by :func:`upgrade` ("metastor" in ASCII).
MIGRATION_LOCK_KEY = 0x6D65746173746F72
#: The newest migration's revision id.  Checked against the migration
#: scripts by tests/test_migrations.py; lets ensure_schema skip Alembic.
HEAD_REVISION = "0007"
#: Milliseconds a SQLite connection waits for another writer before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: WAL pages after which a SQLite commit checkpoints (SQLite's default is
#: 1,000, 4 MB).  The module value digests and imageId keys are random, so
#: at a million instances each batch dirties index leaves all over the file,
#: and checkpointing every few batches wrote the same leaves back again and
#: again: at 16,384 pages (64 MB of WAL at most, folded into the file and
#: removed when the last connection closes) SQLite's default cost the writing
#: process 1.04-1.13x the CPU on new instances into a million-instance
#: database, and the same into an empty one (scripts/bench_growth.py, four
#: runs; docs/benchmarks.md).
SQLITE_WAL_AUTOCHECKPOINT = 16_384


#: Names of URL query parameters whose value is a secret, or a file or
#: connection string leading to one: libpq's ``password``, ``sslpassword``,
#: ``passfile`` and ``sslkey``, and anything named like a password, secret,
#: token or key (any driver's).  Matched anywhere in the name, any case.
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential", re.IGNORECASE)
#: A secret inside a value: ``password=...`` of a libpq connection string
#: (libpq expands a ``dbname`` holding ``=`` into one), or the userinfo of
#: a URL (``//user:secret@``).
_SECRET_INSIDE = re.compile(
    r"(?:pass|pwd|secret|token|key|credential)\w*\s*=|//[^/@]*:[^/]*@", re.IGNORECASE
)
#: What :func:`redact` shows instead of a secret.
HIDDEN = "***"
#: Stands for :data:`HIDDEN` inside a URL until it is rendered (SQLAlchemy
#: would percent-encode the asterisks; underscores are left alone).
_HIDDEN_TOKEN = "__metastore_hidden__"


def redact(url: str | URL) -> str:
    """Return ``url`` as text with every secret replaced by ``***``.

    Hidden: the password of the userinfo (and, when it held an unescaped
    ``@``, the part of it SQLAlchemy took for the host); the value of every
    query parameter named like a secret (``password``, ``sslpassword``,
    ``passfile``, ``sslkey``, ``*token*``...); and any query value or
    database name that holds a connection string or URL with a secret
    (libpq reads ``dbname=host=x password=y`` as one).  Text that cannot be
    parsed as a URL gets the same treatment by pattern.
    """
    if isinstance(url, str):
        text = url
        try:
            url = make_url(text)
        except (ArgumentError, ValueError):  # ValueError: a port that is no number
            return _redact_text(text)
    shown = _hidden(url).render_as_string(hide_password=False)
    return shown.replace(_HIDDEN_TOKEN, HIDDEN)


def _hidden(url: URL) -> URL:
    """``url`` with each secret of :func:`redact` replaced by ``***``."""
    changes: dict[str, Any] = {}
    if url.password is not None:
        changes["password"] = _HIDDEN_TOKEN
    if url.host and "@" in url.host:
        # "user:p@ss@host": the password ran on past its first "@"
        changes["password"] = _HIDDEN_TOKEN
        changes["host"] = url.host.rsplit("@", 1)[1]
    if url.database and _SECRET_INSIDE.search(url.database):
        changes["database"] = _HIDDEN_TOKEN
    query = {
        name: _HIDDEN_TOKEN if _is_secret(name, value) else value
        for name, value in url.query.items()
    }
    if query != dict(url.query):
        changes["query"] = query
    return url.set(**changes) if changes else url


def _is_secret(name: str, value: str | tuple[str, ...]) -> bool:
    """Whether query parameter ``name=value`` must be hidden."""
    values = (value,) if isinstance(value, str) else value
    return bool(_SECRET_NAME.search(name)) or any(
        _SECRET_INSIDE.search(v) for v in values
    )


def _redact_text(text: str) -> str:
    """:func:`redact` for text SQLAlchemy cannot parse, by pattern.

    Without a ``scheme://`` there is no telling where a secret would be:
    text with an ``@`` is then not shown at all.
    """
    if "://" not in text:
        return "<unparseable database URL>" if "@" in text else text
    # userinfo: everything between "scheme://user:" and the last "@" before
    # the path, which is where a password holding "@" ends
    text = re.sub(r"^([^:/?#]*://[^:/@?#]*:)[^/?#]*@", rf"\1{HIDDEN}@", text)
    head, sep, query = text.partition("?")
    if sep:
        pairs = []
        for pair in query.split("&"):
            name, eq, value = pair.partition("=")
            secret = _is_secret(unquote_plus(name), unquote_plus(value))
            pairs.append(f"{name}{eq}{HIDDEN}" if eq and secret else pair)
        text = head + sep + "&".join(pairs)
    return text


def secrets(url: str | URL) -> list[str]:
    """The secret texts of ``url`` (see :func:`redact`), longest first.

    Driver messages may quote them (a host made of the end of a password, a
    value echoed back): :func:`scrub` removes them from any text.
    """
    if not isinstance(url, URL):
        try:
            url = make_url(url)
        except (ArgumentError, ValueError):
            return []
    found = set()
    if url.password:
        found.add(str(url.password))
    if url.host and "@" in url.host:
        found.add(url.host.rsplit("@", 1)[0])
    if url.database and _SECRET_INSIDE.search(url.database):
        found.add(url.database)
    for name, value in url.query.items():
        if _is_secret(name, value):
            found.update((value,) if isinstance(value, str) else value)
    found.discard("")
    return sorted(found, key=len, reverse=True)


def scrub(text: str, url: str | URL) -> str:
    """``text`` (an error message) without any secret of ``url``."""
    for secret in secrets(url):
        text = text.replace(secret, HIDDEN)
        text = text.replace(quote_plus(secret), HIDDEN)
    return text


# -- driver errors ------------------------------------------------------------

#: PostgreSQL SQLSTATEs of a server going away or not there yet besides class
#: 08 (connection exception): admin_shutdown, crash_shutdown, cannot_connect_now.
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
#: Errors a driver raises unwrapped for a value it cannot send.
_UNSENDABLE = (UnicodeEncodeError, OverflowError)


@contextmanager
def map_driver_errors(engine: Engine, failed: str) -> Iterator[None]:
    """Raise metastore's errors for the driver's inside the block.

    The one place where database errors are classified (as httpx's
    ``map_httpcore_exceptions`` does for its transport).  The store runs every
    write and every read inside it, so no SQLAlchemy or driver exception
    reaches its callers.  What is raised, with the driver's error as its
    cause and its first line (secrets of ``engine``'s URL scrubbed) in the
    message ``f"{failed}: {reason}"``:

    - :class:`ConnectionLostError`: PostgreSQL went away (a connection
      SQLAlchemy invalidated) or could not be reached (an ``OperationalError``
      without SQLSTATE, as psycopg reports a failed connect, or with class
      08, 57P01, 57P02 or 57P03: the server shutting down or starting up);
    - :class:`DataRefusedError`: a value refused (SQLSTATE class 22 or
      54000, a driver's ``DataError``) or one the driver cannot send
      (``UnicodeEncodeError``, ``OverflowError``);
    - :class:`StoreError`: anything else.  That includes integrity errors:
      the schema checks no value, so a broken key means a race or a bug, not
      bad data.

    Args:
        engine: The engine the work uses.
        failed: What failed, for the message: ``"write to URL failed"``.
    """
    try:
        yield
    except (SQLAlchemyError, *_UNSENDABLE) as exc:
        raise _store_error(exc, engine, failed) from exc


def _store_error(
    exc: BaseException, engine: Engine, failed: str, note: str = ""
) -> StoreError:
    """The error :func:`map_driver_errors` raises for ``exc`` (``note``: added
    after the driver's reason)."""
    orig: BaseException = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines else type(orig).__name__
    whole = " ".join(str(orig).split()) or type(orig).__name__
    if isinstance(orig, _UNSENDABLE):  # Python's words: name the error
        first = whole = f"{type(orig).__name__}: {whole}"
    message = f"{failed}: {scrub(first + note, engine.url)}"
    sqlstate = getattr(orig, "sqlstate", None)
    sqlstate = sqlstate if isinstance(sqlstate, str) else None
    if _is_lost(exc, engine, sqlstate):
        return ConnectionLostError(message)
    if (
        isinstance(orig, _UNSENDABLE)
        or isinstance(exc, DataError)  # psycopg's (class 22) and sqlite3's
        or (sqlstate is not None and (sqlstate[:2] == "22" or sqlstate == "54000"))
    ):
        reason = scrub(whole, engine.url)
        return DataRefusedError(message, reason=reason, sqlstate=sqlstate)
    return StoreError(message)


def _is_lost(exc: BaseException, engine: Engine, sqlstate: str | None) -> bool:
    """Whether ``exc`` is a PostgreSQL server gone or out of reach."""
    if engine.dialect.name == "sqlite" or not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError) and (
        sqlstate is None or sqlstate[:2] == "08" or sqlstate in _LOST_SQLSTATES
    )


# -- watching the SQL ---------------------------------------------------------

#: The functions :func:`on_statement` installed, in order.
_STATEMENT_LISTENERS: list[Callable[[str], None]] = []


def on_statement(listener: Callable[[str], None]) -> Callable[[], None]:
    """Call ``listener(sql)`` just before each SQL statement this process sends.

    It sees the statements of every engine (SQLAlchemy's
    ``before_cursor_execute`` event) and also the binary ``COPY`` by which
    the store sends PostgreSQL a batch's ``image_modules`` rows, which goes
    around SQLAlchemy's cursor and so past its events.  For tracing and for
    tests (the crash tests stop a process at a chosen statement).  A
    listener runs in the thread that sends the statement, inside its
    transaction; what it raises stops the statement.  Nothing is installed
    until the first listener is.

    Returns:
        A function that removes the listener.
    """
    if not event.contains(Engine, "before_cursor_execute", _before_cursor_execute):
        event.listen(Engine, "before_cursor_execute", _before_cursor_execute)
    _STATEMENT_LISTENERS.append(listener)

    def remove() -> None:
        if listener in _STATEMENT_LISTENERS:
            _STATEMENT_LISTENERS.remove(listener)
        if not _STATEMENT_LISTENERS and event.contains(
            Engine, "before_cursor_execute", _before_cursor_execute
        ):
            event.remove(Engine, "before_cursor_execute", _before_cursor_execute)

    return remove


def announce_statement(statement: str) -> None:
    """Tell the :func:`on_statement` listeners that ``statement`` is sent now.

    For the statements the store sends around SQLAlchemy's cursor (the
    ``COPY`` of ``store.write.copy_rows``); SQLAlchemy's event tells of the
    others.
    """
    for listener in tuple(_STATEMENT_LISTENERS):
        listener(statement)


def _before_cursor_execute(
    conn: Connection, cursor: Any, statement: str, *args: Any, **kwargs: Any
) -> None:
    announce_statement(statement)


def _normalise_url(url: str | URL) -> URL:
    """Parse ``url``; PostgreSQL URLs without a driver are sent to psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {redact(url)}") from exc
    except ValueError as exc:  # make_url's int() of the port
        raise StoreError(
            f"not a database URL: {redact(url)}: {_bad_port(exc)}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_query(url, parsed)
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {redact(parsed)}: use sqlite:/// or postgresql://"
        )
    return parsed


def _check_sqlite_query(url: str | URL, parsed: URL) -> None:
    """Refuse a query string in a SQLite URL.

    SQLAlchemy ends the file name at the first ``?`` and parses the rest as
    a query string, dropping any part without ``=``, so
    ``sqlite:///scans?2024.sqlite`` would open (and create) a file named
    ``scans``, and ``a?b=c.sqlite`` would open ``a``.  The pysqlite options
    such a query could carry are metastore's to set.  A ``?`` in a file name
    is written ``%3F`` (and ``%`` as ``%25``): the path is percent-decoded.
    """
    text = url if isinstance(url, str) else None
    if text is not None and "?" in text:
        head, _, query = text.partition("?")
        raise StoreError(
            f"{_redact_text(text)}: a SQLite URL takes no query string, and "
            f"SQLAlchemy would read the file name as {parsed.database!r}; write "
            f"a '?' in a file name as %3F: {head}%3F{quote(query, safe='/')}"
        )
    if parsed.query:
        raise StoreError(
            f"{redact(parsed)}: a SQLite URL takes no query parameters "
            f"({', '.join(sorted(parsed.query))})"
        )


def _bad_port(exc: ValueError) -> str:
    """Say which port is not a number, from ``int()``'s message.

    A "port" holding ``@`` is the end of a password with an unescaped ``@``
    in it (``user:p@ss:word@host``): then the text is a secret, not shown.
    """
    port = str(exc).rpartition(": ")[2]
    if "@" in port or not port:
        return "the port is not a number (write an '@' in a password as %40)"
    return f"the port {port} is not a number"


#: The files SQLite keeps next to a database file (WAL mode and rollback).
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def database_files(url: str | URL) -> list[str]:
    """The files of a SQLite database: the file itself and its companions.

    Absolute paths, as the driver opens them, whether they exist or not;
    empty for PostgreSQL and in-memory SQLite.

    Raises:
        StoreError: ``url`` is not a usable database URL.
    """
    parsed = _normalise_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return []
    if parsed.database == ":memory:":
        return []
    path = os.path.abspath(parsed.database)
    return [path] + [path + suffix for suffix in SQLITE_COMPANIONS]


def require_database(url_or_engine: str | URL | Engine) -> None:
    """Refuse to go on when there is no SQLite database file to read.

    A reader must not create a database: connecting to a SQLite file that
    does not exist creates it (empty), so a mistyped path would read as an
    empty store.  PostgreSQL databases are never created by connecting.

    Raises:
        DatabaseNotFoundError: the SQLite file does not exist (the message
            names it).
        StoreError: the URL cannot be parsed.
    """
    url = url_or_engine.url if isinstance(url_or_engine, Engine) else url_or_engine
    files = database_files(url)
    if files and not os.path.isfile(files[0]):
        raise DatabaseNotFoundError(
            f"no database at {files[0]}: the file does not exist (check the path; "
            "metastore index ARCHIVE --db URL creates one)"
        )


def _sqlite_casefold(text: str | None) -> str | None:
    """SQL ``metastore_casefold(x)``: Python's ``str.casefold`` for SQLite."""
    return None if text is None else text.casefold()


def _setup_sqlite(engine: Engine) -> None:
    """Install the pragmas and the pysqlite transactional-DDL recipe on ``engine``.

    pysqlite's legacy transaction handling commits around DDL by itself; the
    recipe (SQLAlchemy's SQLite dialect docs, "Serializable isolation /
    Savepoints / Transactional DDL") hands BEGIN to SQLAlchemy instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # WAL: readers never block the writer; NORMAL is durable in WAL
            # except for the last transactions on power loss, never corrupt.
            # (A read-only connection cannot switch, and an immutable one
            # reports "delete": it reads the file as it is.)
            if not isinstance(dbapi_connection, _ReadOnlyConnection):
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT}")
        finally:
            cursor.close()
        dbapi_connection.create_function(
            "metastore_casefold", 1, _sqlite_casefold, deterministic=True
        )

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so a writer waits on
        # busy_timeout instead of failing when its read snapshot goes stale.
        mode = connection.get_execution_options().get("metastore_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def create_engine(
    url_or_engine: str | URL | Engine | None = None, *, read_only: bool = False
) -> Engine:
    """Return an engine for a metastore database.

    Args:
        url_or_engine: ``sqlite:///path``, ``postgresql://...`` (psycopg 3 is
            used), ``postgresql+psycopg://...``, or an engine, returned
            unchanged.  ``None`` means :data:`DEFAULT_URL`.
        read_only: the engine will only read.  A SQLite file in a folder
            this process cannot write is then opened read-only (see
            :func:`_connect_read_only`) instead of failing; elsewhere it
            changes nothing (a brand-new database still gets its schema).

    Raises:
        StoreError: the URL cannot be parsed or names another database, a
            PostgreSQL URL is given without psycopg installed (the
            ``postgresql`` extra), or (``read_only``) the SQLite file is
            missing from a folder this process cannot write.
    """
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    url = _normalise_url(url_or_engine or DEFAULT_URL)
    if url.get_backend_name() == "sqlite":
        options: dict[str, Any] = {}
        if url.database and url.database != ":memory:":
            folder = Path(url.database).expanduser().parent
            if not folder.is_dir():
                raise StoreError(
                    f"cannot open {redact(url)}: folder {folder} does not exist"
                )
            path = os.path.abspath(url.database)
            if read_only and not os.access(os.path.dirname(path), os.W_OK):
                if not os.path.isfile(path):
                    raise StoreError(
                        f"cannot open {redact(url)}: {path} does not exist, and "
                        "its folder is not writable"
                    )
                options["creator"] = functools.partial(_connect_read_only, path)
        engine = sa.create_engine(url, **options)
        _setup_sqlite(engine)
        return engine
    try:
        # use_native_hstore=False: no column is HSTORE, and looking its type
        # up costs a query on every engine's first connection (0.80x the
        # first connection's time without it: scripts/bench_connect.py)
        return sa.create_engine(url, pool_pre_ping=True, use_native_hstore=False)
    except ImportError as exc:  # SQLAlchemy imports the driver here
        raise StoreError(
            f"cannot open {redact(url)}: PostgreSQL support is not installed "
            f"({exc.name or 'psycopg'} is missing): pip install 'metastore[postgresql]'"
        ) from None


class _ReadOnlyConnection(sqlite3.Connection):
    """A connection :func:`_connect_read_only` opened (no pragma may write)."""


def _connect_read_only(path: str) -> sqlite3.Connection:
    """Open the SQLite database ``path`` read-only, for a folder we cannot write.

    A reader of a WAL database needs its ``-shm`` index, which SQLite creates
    next to the file; in a folder this process cannot write, opening fails
    ("attempt to write a readonly database") unless the index is there.
    With the ``-shm`` there (a writer has the database open, or died), a
    ``mode=ro`` connection shares it and sees every committed transaction.
    Without it, no transaction can be waiting in the ``-wal`` (the last
    connection folds it into the file and deletes both), so the file alone
    holds the database and is opened ``immutable``: SQLite then reads it
    without the index or locks.  A ``-wal`` with content but no ``-shm``
    (copied without it) cannot be read safely: that is an error.
    """
    uri = f"{Path(path).as_uri()}?mode=ro"
    if not os.path.exists(path + "-shm"):
        wal = path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise sqlite3.OperationalError(
                f"{wal} holds transactions but {path}-shm is missing, and the "
                "folder is not writable: they cannot be read"
            )
        uri += "&immutable=1"
    return sqlite3.connect(
        uri, uri=True, check_same_thread=False, factory=_ReadOnlyConnection
    )


def script_location() -> str:
    """Path of the Alembic scripts: installed package first, then the checkout."""
    try:
        packaged = importlib.resources.files("metastore") / "migrations"
        if packaged.is_dir() and (packaged / "env.py").is_file():
            return str(packaged)
    except (ModuleNotFoundError, NotADirectoryError):  # pragma: no cover
        pass
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    raise SchemaError(  # pragma: no cover - a broken installation
        "metastore's migrations are missing: expected metastore/migrations "
        "in the installed package or migrations/ in the source checkout"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """Build the Alembic ``Config`` in code (metastore ships no alembic.ini).

    The live connection travels in ``config.attributes["connection"]``; the
    URL is never set as an option (ConfigParser would choke on ``%``).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", script_location())
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision id of the newest migration."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:  # pragma: no cover - guarded by test_migrations
        raise SchemaError(f"expected one migration head, found {heads}")
    return heads[0]


def _connect(engine: Engine) -> Connection:
    """Open a connection, turning "cannot reach" into :class:`StoreError`.

    (:class:`ConnectionLostError` for PostgreSQL, see :func:`map_driver_errors`.)
    """
    try:
        return engine.connect()
    except DBAPIError as exc:
        note = ""
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            folder = os.path.dirname(os.path.abspath(database))
            if not os.access(folder, os.W_OK):
                # a writer (or a brand-new database) needs the folder
                note = f" (folder {folder} is not writable)"
        failed = f"cannot connect to {redact(engine.url)}"
        raise _store_error(exc, engine, failed, note) from None


@contextmanager
def _reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reading the schema's version, its errors mapped."""
    failed = f"read from {redact(engine.url)} failed"
    with map_driver_errors(engine, failed), _connect(engine) as connection:
        yield connection


def _run_migration(engine: Engine, command_name: str, revision: str) -> None:
    """Run one Alembic command in one transaction with the locking of each backend.

    Raises:
        SchemaError: the version table holds a revision this metastore does
            not know or several rows, ``revision`` is not one, or the result
            would break foreign keys.
    """
    from alembic import command
    from alembic.util import CommandError

    is_sqlite = engine.dialect.name == "sqlite"
    failed = f"{command_name} of {redact(engine.url)} to {revision} failed"
    with map_driver_errors(engine, failed), _connect(engine) as connection:
        if is_sqlite:
            # The pragma is a no-op inside a transaction: switch it off on the
            # raw connection first (batch migrations rebuild tables, which
            # enforced keys forbid), and take the write lock up front so a
            # second process waits and then finds the work done.
            _raw_sqlite(connection).execute("PRAGMA foreign_keys=OFF")
            connection = connection.execution_options(metastore_begin="IMMEDIATE")
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": MIGRATION_LOCK_KEY},
                    )
                # Alembic would end in a traceback on a revision it does not
                # know or on several rows; say which, in one line, instead.
                _check_version(engine, _current_heads(connection))
                config = alembic_config(connection)
                try:
                    getattr(command, command_name)(config, revision)
                except CommandError as exc:
                    raise SchemaError(
                        f"{command_name} of {redact(engine.url)} to {revision}: "
                        f"{' '.join(str(exc).split())}"
                    ) from None
                if is_sqlite:
                    problems = connection.exec_driver_sql(
                        "PRAGMA foreign_key_check"
                    ).fetchall()
                    if problems:
                        raise SchemaError(
                            f"{command_name} to {revision} of {redact(engine.url)} "
                            f"would break foreign keys: {problems[:5]}"
                        )
        finally:
            if is_sqlite:
                _raw_sqlite(connection).execute("PRAGMA foreign_keys=ON")


def _raw_sqlite(connection: Connection) -> sqlite3.Connection:
    """The pysqlite connection under ``connection`` (outside any transaction)."""
    raw = connection.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema up to ``revision`` in one transaction.

    On PostgreSQL the transaction first takes an advisory lock, so two
    processes upgrading together migrate once; on SQLite foreign keys are
    off during the upgrade and ``PRAGMA foreign_key_check`` runs before commit.

    Raises:
        SchemaError: the database is at a revision this metastore does not
            know (or its version table holds several rows), or the migrated
            data would break foreign keys.
        StoreError: the database cannot be reached.
    """
    log.info("upgrading %s to %s", redact(engine.url), revision)
    _run_migration(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the schema down to ``revision`` (``"base"`` drops every table)."""
    log.info("downgrading %s to %s", redact(engine.url), revision)
    _run_migration(engine, "downgrade", revision)


def _read_version(connection: Connection) -> tuple[str, ...] | None:
    """The version table's revisions by plain SQL, or ``None`` if unreadable."""
    query = sa.text(f"SELECT version_num FROM {VERSION_TABLE}")
    try:
        found = tuple(connection.execute(query).scalars())
    except DBAPIError:
        connection.rollback()
        return None
    connection.rollback()
    return found


def _current_heads(connection: Connection) -> tuple[str, ...]:
    """The revisions recorded in the version table (empty if there is none)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    )
    return tuple(context.get_current_heads())


def current(engine: Engine) -> str | None:
    """The schema revision of the database, or ``None`` if it has none.

    Raises:
        SchemaError: the version table holds several rows (metastore keeps
            one), so the database has no one revision.
    """
    with _reading(engine) as connection:
        heads = _current_heads(connection)
    if len(heads) > 1:
        _check_version(engine, heads)
    return heads[0] if heads else None


def known_revision(engine: Engine) -> str | None:
    """:func:`current`, checked: a revision this metastore knows, or ``None``.

    Raises:
        SchemaError: the revision is unknown (a newer metastore migrated the
            database), or the version table holds several rows.
    """
    with _reading(engine) as connection:
        heads = _current_heads(connection)
    _check_version(engine, heads)
    return heads[0] if heads else None


def _known_revisions() -> set[str]:
    """Every revision of metastore's migration scripts."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def _check_version(engine: Engine, revisions: tuple[str, ...]) -> None:
    """Refuse a version table with several rows or a revision metastore lacks.

    Raises:
        SchemaError: naming the database and the revisions found.
    """
    if len(revisions) > 1:
        raise SchemaError(
            f"{redact(engine.url)}: the version table {VERSION_TABLE} holds "
            f"{len(revisions)} revisions ({', '.join(revisions)}) where metastore "
            "keeps one; it was changed by something else: leave only the "
            "revision the schema is at"
        )
    if revisions and revisions[0] not in _known_revisions():
        raise SchemaError(
            f"{redact(engine.url)} is at schema revision {revisions[0]}, which "
            f"this version of metastore (head {HEAD_REVISION}) does not know: "
            "a newer metastore migrated it; use that one"
        )


def is_at_head(engine: Engine) -> bool:
    """True if the database schema is at the newest migration."""
    return current(engine) == head()


def ensure_schema(
    engine: Engine, *, upgrade: bool = False, create: bool = True
) -> None:
    """Make sure the schema is usable, migrating only where that is safe.

    A brand-new database (no tables at all) is upgraded to head, unless
    ``create`` is false.  A database behind head is upgraded only with
    ``upgrade=True``.

    Raises:
        DatabaseNotFoundError: the database has no tables at all and
            ``create`` is false (a reader found nothing to read).
        SchemaNotAtHeadError: the schema is behind and ``upgrade`` is false;
            the message names the command to run.
        SchemaError: the database has tables but no metastore schema, a
            revision this version of metastore does not know, or several
            rows in its version table.
        StoreError: the database cannot be reached.
    """
    with _reading(engine) as connection:
        revision = _read_version(connection)
        if revision == (HEAD_REVISION,):
            # The common case, without importing Alembic (~0.2 s).
            return
        revision = _current_heads(connection)
        tables = sa.inspect(connection).get_table_names()
        connection.rollback()
    target = HEAD_REVISION
    if revision == (target,):
        return
    if not revision:
        if tables:
            raise SchemaError(
                f"{redact(engine.url)} has tables but no metastore schema "
                f"(no {VERSION_TABLE} table); use an empty database"
            )
        if not create:
            raise DatabaseNotFoundError(
                f"{redact(engine.url)} is empty (no metastore schema): nothing "
                "to read (metastore index ARCHIVE --db URL fills it)"
            )
        upgrade_to_head(engine)
        return
    _check_version(engine, revision)
    if not upgrade:
        raise SchemaNotAtHeadError(
            f"the schema of {redact(engine.url)} is at revision "
            f"{', '.join(revision)}, behind {target}; run: "
            f"metastore db upgrade --db {redact(engine.url)}"
        )
    upgrade_to_head(engine)


def upgrade_to_head(engine: Engine) -> None:
    """:func:`upgrade` to ``"head"`` (a name that reads well at call sites)."""
    upgrade(engine, "head")


def database_url_from_env() -> str:
    """``METASTORE_DATABASE_URL`` if set, else :data:`DEFAULT_URL`."""
    return os.environ.get("METASTORE_DATABASE_URL") or DEFAULT_URL
