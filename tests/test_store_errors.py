"""Database errors are classified once, in the store, and never leak the driver's.

Every read and write of :class:`metastore.store.Store` (and the schema
operations of ``metastore.store.db``) raises metastore's own errors for the
driver's, through ``metastore.store.db.map_driver_errors``:
``ConnectionLostError`` (PostgreSQL gone or out of reach), ``DataRefusedError``
(a value refused, with its reason and SQLSTATE) or a plain ``StoreError``;
the messages name the URL without its secrets.  Real SQLite files and the real
PostgreSQL server, no mocks.
"""

from __future__ import annotations

import os
import random
import string
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from reliability import admin_sql, terminate_backends
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from test_store import SERIES, STUDY, make_instance

from metastore.cli import cli
from metastore.errors import ConnectionLostError, DataRefusedError, StoreError
from metastore.store import Store, db
from metastore.store import schema as t

SOP = "1.2.826.0.1.1.1.1"

#: Every read of the store, each a call that reaches the database.
READS: dict[str, Callable[[Store], Any]] = {
    "known_sources": lambda s: s.known_sources(),
    "known_sources under roots": lambda s: s.known_sources(["/a"]),
    "errors": lambda s: s.errors(),
    "image_modules": lambda s: s.image_modules("wadouri:file:///a/1.dcm?frame=1"),
    "series_image_modules": lambda s: s.series_image_modules(SERIES),
    "export": lambda s: list(s.export()),
    "query": lambda s: list(s.query("studies")),
    "query with filters": lambda s: list(
        s.query("instances", {"PatientID": "X*"}, include="all")
    ),
    "dataset": lambda s: s.dataset(SOP),
    "stats": lambda s: s.stats(),
    "dicom_json": lambda s: s.dicom_json(SOP),
    "dicom_json_texts": lambda s: list(s.dicom_json_texts(STUDY)),
    "series_dicom_json": lambda s: list(s.series_dicom_json(STUDY, SERIES)),
    "instance_source": lambda s: s.instance_source(SOP),
}


def drop_tables(url: str) -> None:
    """Drop the store's tables, leaving the schema's version at head."""
    engine = db.create_engine(url)
    try:
        t.metadata.drop_all(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize("read", list(READS))
def test_reads_raise_store_errors_never_sqlalchemy_errors(
    db_url: str, read: str
) -> None:
    """A read that fails in the database is a StoreError naming the URL."""
    with Store(db_url) as store:
        store.write_batch([make_instance("/a/1.dcm", SOP)])
        drop_tables(db_url)
        with pytest.raises(StoreError) as caught:
            READS[read](store)
    assert not isinstance(caught.value, SQLAlchemyError)
    assert type(caught.value) is StoreError  # not lost, not refused
    assert str(caught.value).startswith(f"read from {store.url} failed: ")
    assert "\n" not in str(caught.value)


def test_writes_raise_store_errors_never_sqlalchemy_errors(db_url: str) -> None:
    """A write that fails in the database is a StoreError naming the URL."""
    with Store(db_url) as store:
        drop_tables(db_url)
        for write in (
            lambda: store.write_batch([make_instance("/a/1.dcm", SOP)]),
            lambda: store.prune(["/a"], set()),
        ):
            with pytest.raises(StoreError) as caught:
                write()
            assert type(caught.value) is StoreError
            assert str(caught.value).startswith(f"write to {store.url} failed: ")


def test_a_value_the_database_refuses_is_data_refused(db_url: str) -> None:
    """Out of range for the database or the driver: DataRefusedError, whose
    reason is the database's (or driver's) words and SQLSTATE its code."""
    engine = db.create_engine(db_url)
    try:
        with (
            pytest.raises(DataRefusedError) as caught,
            db.map_driver_errors(engine, "checking"),
            engine.connect() as conn,
        ):
            # PostgreSQL: integer out of range (22003); SQLite: the driver
            # cannot bind an integer past 64 bits (OverflowError)
            conn.execute(sa.text("SELECT CAST(:n AS INTEGER)"), {"n": 2**70})
    finally:
        engine.dispose()
    refused = caught.value
    assert str(refused).startswith("checking: ")
    if engine.dialect.name == "sqlite":
        assert refused.sqlstate is None
        assert refused.reason.startswith("OverflowError: ")
    else:
        assert refused.sqlstate == "22003"
        assert "out of range" in refused.reason
    assert not isinstance(refused, SQLAlchemyError)


def test_a_batch_the_database_refuses_is_data_refused(db_url: str) -> None:
    """A location past PostgreSQL's B-tree entry (54000): DataRefusedError from
    write_batch, nothing of the batch written; SQLite stores it."""
    letters = string.ascii_letters + string.digits
    deep = "/" + "/".join(
        "".join(random.Random(n).choices(letters, k=200)) for n in range(15)
    )
    record = make_instance(f"{deep}/deep.dcm", SOP)
    with Store(db_url) as store:
        if store.engine.dialect.name == "sqlite":
            assert store.write_batch([record]) == []
            return
        with pytest.raises(DataRefusedError) as caught:
            store.write_batch([record, make_instance("/a/2.dcm", SOP + ".2")])
        assert caught.value.sqlstate == "54000"
        assert "index row size" in caught.value.reason
        assert str(caught.value).startswith(f"write to {store.url} failed: ")
        assert store.stats()["instances"] == 0


@pytest.mark.postgres
def test_a_refused_reason_holds_no_secret(postgres_url: str) -> None:
    """The reason of a refusal is scrubbed of the URL's secrets like the message."""
    secret = "Zq9-secret-value"
    # trust authentication accepts any password: the URL works as given
    engine = db.create_engine(make_url(postgres_url).set(password=secret))
    try:
        with (
            pytest.raises(DataRefusedError) as caught,
            db.map_driver_errors(engine, "checking"),
            engine.connect() as conn,
        ):
            # the server quotes the value back: 'invalid input syntax ... "..."'
            conn.execute(sa.text("SELECT CAST(:v AS INTEGER)"), {"v": secret})
    finally:
        engine.dispose()
    assert caught.value.sqlstate == "22P02"
    assert secret not in str(caught.value) + caught.value.reason
    assert "***" in caught.value.reason


def test_unreachable_postgres_is_connection_lost() -> None:
    """A server that cannot be reached: ConnectionLostError, password hidden."""
    with pytest.raises(ConnectionLostError) as caught:
        Store("postgresql://user:s3cret@127.0.0.1:1/nothing")
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).startswith("cannot connect to postgresql+psycopg://")


def test_sqlite_never_loses_its_connection(tmp_path: Any) -> None:
    """A SQLite file that cannot be opened is a plain StoreError: no retry helps."""
    folder = tmp_path / "gone"
    folder.mkdir()
    url = f"sqlite:///{folder / 'db.sqlite'}"
    with Store(url) as store:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        store.engine.dispose()  # a new connection must open the file again
        with pytest.raises(StoreError) as caught:
            store.stats()
    assert type(caught.value) is StoreError


@pytest.mark.postgres
def test_a_server_gone_is_connection_lost_for_reads_and_writes(
    postgres_url: str,
) -> None:
    """Connections dropped and refused: reads and writes raise ConnectionLostError;
    once the server takes connections again the same store works."""
    admin = os.environ["METASTORE_TEST_POSTGRES_URL"]
    name = make_url(postgres_url).database
    with Store(postgres_url) as store:
        store.write_batch([make_instance("/a/1.dcm", SOP)])
        admin_sql(admin, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            terminate_backends(admin, postgres_url)
            for work in (
                store.known_sources,
                lambda: store.image_modules("wadouri:file:///a/1.dcm?frame=1"),
                lambda: store.write_batch([make_instance("/a/2.dcm", SOP + ".2")]),
            ):
                with pytest.raises(ConnectionLostError) as caught:
                    work()
                assert "not currently accepting connections" in str(caught.value)
        finally:
            admin_sql(admin, f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        assert set(store.known_sources()) == {"/a/1.dcm"}


def test_a_failed_migration_is_a_store_error(empty_db_url: str) -> None:
    """``db.upgrade`` maps the driver's errors too: a table in the way of the
    first migration is one line naming the URL."""
    engine = db.create_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE studies (x INTEGER)")
        with pytest.raises(StoreError) as caught:
            db.upgrade(engine)
        assert type(caught.value) is StoreError
        assert str(caught.value).startswith(
            f"upgrade of {db.redact(engine.url)} to head failed: "
        )
        assert "studies" in str(caught.value)
    finally:
        engine.dispose()


def test_the_cli_reports_a_failed_read_as_the_store_words_it(db_url: str) -> None:
    """``metastore stats`` on a broken database: one line from the store, exit 2."""
    drop_tables(db_url)
    result = CliRunner().invoke(cli, ["stats", "--db", db_url], prog_name="metastore")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: read from "), result.output
    assert result.output.count("\n") == 1


def test_the_web_server_answers_503_when_the_database_fails(db_url: str) -> None:
    """``metastore serve`` catches the store's errors: 503 and one line, no trace."""
    import http.client

    from metastore.web import create_app
    from tests.web_support import ServerThread

    drop_tables(db_url)
    with Store(db_url) as store, ServerThread(create_app(store)) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", f"/dicomweb/studies/{STUDY}/metadata")
        response = connection.getresponse()
        body = response.read()
        connection.close()
    assert response.status == 503, body
    assert body == b"the database cannot be read now\n"
