"""Shared fixtures: migrated database URLs for SQLite and PostgreSQL.

``sqlite_url`` copies a template file migrated once per session;
``postgres_url`` clones a migrated template database per test (and drops the
clone afterwards) when ``METASTORE_TEST_POSTGRES_URL`` names a reachable
server; ``db_url`` runs a test on both.  Schemas are always built through the
migrations, never ``create_all``.

Without a server the PostgreSQL tests skip, unless
``METASTORE_REQUIRE_POSTGRES=1`` (CI sets it): then they fail, so that a
server that is gone or refuses the connection cannot pass as green.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from metastore.store import db

POSTGRES_ENV = "METASTORE_TEST_POSTGRES_URL"
REQUIRE_ENV = "METASTORE_REQUIRE_POSTGRES"


def _no_postgres(reason: str) -> NoReturn:
    """Skip a PostgreSQL test, or fail it when the run requires PostgreSQL."""
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(f"{reason}, and {REQUIRE_ENV} is set", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    engine = db.create_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    with engine.connect() as connection:
        # Fold the WAL into the main file so a plain copy is complete.
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh SQLite file already migrated to head."""
    path = tmp_path / "metastore.sqlite"
    shutil.copyfile(_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file that does not exist yet (no schema)."""
    return f"sqlite:///{tmp_path / 'empty.sqlite'}"


def _admin_engine() -> sa.Engine:
    """An autocommit engine on the server of ``METASTORE_TEST_POSTGRES_URL``."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        _no_postgres(f"PostgreSQL tests need {POSTGRES_ENV} (none set)")
    engine = db.create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        engine.dispose()
        _no_postgres(f"PostgreSQL at {db.redact(url)} is unreachable: {exc.orig}")
    return engine


def _database_url(name: str) -> str:
    """The URL of database ``name`` on the test server."""
    base = make_url(os.environ[POSTGRES_ENV]).set(drivername="postgresql+psycopg")
    return base.set(database=name).render_as_string(hide_password=False)


def _drop(admin: sa.Engine, name: str) -> None:
    """Drop database ``name``, disconnecting anyone still on it."""
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[sa.Engine]:
    """The admin engine; without a server every PostgreSQL test skips (or fails)."""
    engine = _admin_engine()
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def _postgres_template(_postgres_admin: sa.Engine) -> Iterator[str]:
    """Name of a database migrated to head once per session (cloned per test)."""
    name = f"metastore_test_template_{uuid.uuid4().hex[:12]}"
    with _postgres_admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        engine = db.create_engine(_database_url(name))
        db.upgrade(engine)
        # CREATE DATABASE ... TEMPLATE needs the template to have no sessions.
        engine.dispose()
        yield name
    finally:
        _drop(_postgres_admin, name)


@pytest.fixture
def empty_postgres_url(_postgres_admin: sa.Engine) -> Iterator[str]:
    """URL of a new empty PostgreSQL database, dropped after the test."""
    name = f"metastore_test_{uuid.uuid4().hex[:12]}"
    with _postgres_admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield _database_url(name)
    finally:
        _drop(_postgres_admin, name)


@pytest.fixture
def postgres_url(_postgres_admin: sa.Engine, _postgres_template: str) -> Iterator[str]:
    """URL of a fresh PostgreSQL database at head, dropped after the test."""
    name = f"metastore_test_{uuid.uuid4().hex[:12]}"
    with _postgres_admin.connect() as connection:
        connection.exec_driver_sql(
            f'CREATE DATABASE "{name}" TEMPLATE "{_postgres_template}"'
        )
    try:
        yield _database_url(name)
    finally:
        _drop(_postgres_admin, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh database at head, on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest) -> str:
    """URL of a database with no schema yet, on SQLite and on PostgreSQL."""
    return str(request.getfixturevalue(f"empty_{request.param}_url"))
