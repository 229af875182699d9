"""``metastore.store.db.on_statement``: a listener sees every SQL statement sent.

The neutral seam the crash tests (``tests/crashpoints.py``) stop processes
with: every engine's statements, and PostgreSQL's binary ``COPY``, which goes
around SQLAlchemy's cursor and so past its events.
"""

from __future__ import annotations

import os

import pytest
from test_store import make_instance

from metastore.store import Store, db


def test_a_listener_sees_every_statement_of_a_batch_copy_included(
    db_url: str,
) -> None:
    """The module rows (COPY on PostgreSQL, INSERT on SQLite) and the rest,
    in order; once removed, the listener hears nothing more."""
    seen: list[str] = []
    with Store(db_url) as store:
        remove = db.on_statement(seen.append)
        try:
            store.write_batch([make_instance("/a/1.dcm", "1.1")])
        finally:
            remove()
        module_rows = (
            "COPY image_modules"
            if store.engine.dialect.name == "postgresql"
            else "INSERT INTO image_modules"
        )
        (rows,) = [n for n, sql in enumerate(seen) if sql.startswith(module_rows)]
        (instances,) = [n for n, sql in enumerate(seen) if "INTO instances" in sql]
        assert instances < rows
        heard = len(seen)
        store.write_batch([make_instance("/a/2.dcm", "1.2")])
        assert store.stats()["instances"] == 2
    assert len(seen) == heard


def test_what_a_listener_raises_stops_the_statement(db_url: str) -> None:
    """A listener runs before the statement: raising there sends nothing."""

    class Stop(Exception):
        pass

    def refuse_module_rows(sql: str) -> None:
        if "image_modules" in sql and not sql.startswith("SELECT"):
            raise Stop

    with Store(db_url) as store:
        remove = db.on_statement(refuse_module_rows)
        try:
            with pytest.raises(Stop):
                store.write_batch([make_instance("/a/1.dcm", "1.1")])
        finally:
            remove()
        assert store.stats()["instances"] == 0  # the transaction rolled back
        assert store.write_batch([make_instance("/a/1.dcm", "1.1")]) == []


@pytest.mark.postgres
def test_postgresql_engines_skip_the_hstore_lookup(postgres_url: str) -> None:
    """No HSTORE column exists, so its type is not looked up on connecting.

    SQLAlchemy's psycopg dialect otherwise queries ``pg_type`` for hstore on
    every engine's first connection, a fifth of every cold lookup's
    connection (scripts/bench_connect.py).  (SQLite engines have no such
    option.)
    """
    engine = db.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert engine.dialect.use_native_hstore is False  # type: ignore[attr-defined]
        assert not getattr(engine.dialect, "_has_native_hstore", False)
    finally:
        engine.dispose()


def test_sqlite_connections_checkpoint_every_16384_wal_pages(sqlite_url: str) -> None:
    """A SQLite writer checkpoints after 16,384 WAL pages, not SQLite's 1,000.

    At a million instances each batch dirties random index leaves, and a
    checkpoint every few batches wrote them back again and again
    (docs/benchmarks.md); the WAL is still folded into the file when the
    last connection closes.
    """
    with Store(sqlite_url) as store:
        store.write_batch([make_instance("/a/1.dcm", "1.1")])
        with store.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
    assert (pages, mode) == (db.SQLITE_WAL_AUTOCHECKPOINT, "wal")
    assert db.SQLITE_WAL_AUTOCHECKPOINT == 16_384
    path = sqlite_url.removeprefix("sqlite:///")
    assert not os.path.exists(path + "-wal")  # folded in at the last close
