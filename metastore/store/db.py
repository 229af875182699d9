"""Engines and schema migrations for the metastore database.

This module owns how a URL becomes a working engine (SQLite pragmas and
transactional DDL, PostgreSQL through psycopg 3), how passwords are kept out
of messages (:func:`redact`), and the Alembic operations the library and the
``metastore db`` commands use: :func:`upgrade`, :func:`downgrade`,
:func:`current`, :func:`is_at_head` and :func:`ensure_schema`.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from metastore.errors import SchemaError, SchemaNotAtHeadError, StoreError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "DEFAULT_URL",
    "VERSION_TABLE",
    "alembic_config",
    "create_engine",
    "current",
    "downgrade",
    "ensure_schema",
    "head",
    "is_at_head",
    "redact",
    "script_location",
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
HEAD_REVISION = "0003"
#: Milliseconds a SQLite connection waits for another writer before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def redact(url: str | URL) -> str:
    """Return ``url`` as text with any password replaced by ``***``.

    Text that is not a URL is returned unchanged when it contains no ``@``,
    and as ``<unparseable database URL>`` otherwise (it may hold a secret).
    """
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url if "@" not in url else "<unparseable database URL>"


def _normalise_url(url: str | URL) -> URL:
    """Parse ``url``; PostgreSQL URLs without a driver are sent to psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {redact(url)}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {redact(parsed)}: use sqlite:/// or postgresql://"
        )
    return parsed


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
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
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


def create_engine(url_or_engine: str | URL | Engine | None = None) -> Engine:
    """Return an engine for a metastore database.

    Args:
        url_or_engine: ``sqlite:///path``, ``postgresql://...`` (psycopg 3 is
            used), ``postgresql+psycopg://...``, or an engine, returned
            unchanged.  ``None`` means :data:`DEFAULT_URL`.

    Raises:
        StoreError: the URL cannot be parsed or names another database.
    """
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    url = _normalise_url(url_or_engine or DEFAULT_URL)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            folder = Path(url.database).expanduser().parent
            if not folder.is_dir():
                raise StoreError(
                    f"cannot open {redact(url)}: folder {folder} does not exist"
                )
        engine = sa.create_engine(url)
        _setup_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


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
    """Open a connection, turning "cannot reach" into :class:`StoreError`."""
    try:
        return engine.connect()
    except (OperationalError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()
        detail = reason[0] if reason else type(exc).__name__
        raise StoreError(
            f"cannot connect to {redact(engine.url)}: {_scrub(detail, engine)}"
        ) from None


def _scrub(text: str, engine: Engine) -> str:
    """Remove the password of ``engine``'s URL from driver messages."""
    password = engine.url.password
    return text.replace(str(password), "***") if password else text


def _run_migration(engine: Engine, command_name: str, revision: str) -> None:
    """Run one Alembic command in one transaction with the locking of each backend."""
    from alembic import command

    is_sqlite = engine.dialect.name == "sqlite"
    with _connect(engine) as connection:
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
                config = alembic_config(connection)
                getattr(command, command_name)(config, revision)
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
        SchemaError: the migrated data would break foreign keys.
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
    """The schema revision of the database, or ``None`` if it has none."""
    with _connect(engine) as connection:
        heads = _current_heads(connection)
    return heads[0] if heads else None


def is_at_head(engine: Engine) -> bool:
    """True if the database schema is at the newest migration."""
    return current(engine) == head()


def ensure_schema(engine: Engine, *, upgrade: bool = False) -> None:
    """Make sure the schema is usable, migrating only where that is safe.

    A brand-new database (no tables at all) is upgraded to head.  A database
    behind head is upgraded only with ``upgrade=True``.

    Raises:
        SchemaNotAtHeadError: the schema is behind and ``upgrade`` is false;
            the message names the command to run.
        SchemaError: the database has tables but no metastore schema, or a
            revision this version of metastore does not know.
        StoreError: the database cannot be reached.
    """
    with _connect(engine) as connection:
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
        upgrade_to_head(engine)
        return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if not set(revision) <= known:
        raise SchemaError(
            f"{redact(engine.url)} is at schema revision {', '.join(revision)}, "
            "which this version of metastore does not know (newer metastore?)"
        )
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
