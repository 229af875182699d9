"""Secrets in database URLs never reach the output: userinfo and query parameters.

A password may be given in the userinfo (``user:pw@host``) or as a libpq
query parameter (``?password=``, ``sslpassword=``, ``passfile=``...).  Every
message, warning and report shows the URL through ``metastore.store.db.redact``;
driver text that quotes a secret is scrubbed (``metastore.store.db.scrub``).  The
PostgreSQL tests connect as a real role created with a password (the test
server's trust authentication accepts it, which proves the URL works as
given) and look for the secrets in everything the commands print.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dicom_samples import write_ct
from reliability import (
    PATIENCE,
    index_command,
    module_rows_sql,
    start_paused,
    terminate_backends,
)
from sqlalchemy.engine import make_url

from metastore.cli import cli
from metastore.store import db

#: Secrets of the role's URL: none is a substring of anything else printed.
PASSWORD = "pw-Qx7vK2-secret"
SSL_PASSWORD = "sslpw-Zr4mH9-secret"
PASSFILE = "/nonexistent/passfile-Jt5wB8-secret"
SECRETS = (PASSWORD, SSL_PASSWORD, PASSFILE)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u:pw-1@h/d",
            "postgresql://u:***@h/d",
        ),
        (
            "postgresql://u@h/d?password=pw-1&application_name=app",
            "postgresql://u@h/d?application_name=app&password=***",
        ),
        (
            "postgresql+psycopg://u@h:5433/d?sslpassword=pw-1&passfile=/k/pw-1"
            "&sslkey=/k/pw-1.key&sslmode=require",
            "postgresql+psycopg://u@h:5433/d?passfile=***&sslkey=***"
            "&sslmode=require&sslpassword=***",
        ),
        # twice the same parameter: both values go
        ("postgresql://u@h/d?password=a&password=b", "postgresql://u@h/d?password=***"),
        # libpq expands a dbname holding "=" into a connection string
        (
            "postgresql://u@h/d?dbname=host%3Dx+password%3Dpw-1",
            "postgresql://u@h/d?dbname=***",
        ),
        ("postgresql://u@h/host=x password=pw-1", "postgresql://u@h/***"),
        (
            "postgresql://u@h/d?options=-c+x%3Dpostgresql%3A%2F%2Fv%3Apw-1%40w",
            "postgresql://u@h/d?options=***",
        ),
        # an unescaped "@" in the password: SQLAlchemy takes "w-1@h" for the host
        ("postgresql://u:p@w-1@h/d", "postgresql://u:***@h/d"),
        # not parseable by SQLAlchemy (a port that is no number): by pattern
        (
            "postgresql://u:pw-1@h:x5/d?sslpassword=pw-1&a=1",
            "postgresql://u:***@h:x5/d?sslpassword=***&a=1",
        ),
        ("postgresql://u:p@w:x-1@h:5/d", "postgresql://u:***@h:5/d"),
        ("sqlite:////tmp/a.sqlite", "sqlite:////tmp/a.sqlite"),
    ],
)
def test_redact_hides_every_secret(url: str, shown: str) -> None:
    """The userinfo password and every secret-bearing query value become ***."""
    assert db.redact(url) == shown
    assert "pw-1" not in db.redact(url)


def test_scrub_removes_secrets_quoted_by_a_driver() -> None:
    """A driver message quoting a secret (or the host made of one) is scrubbed."""
    url = "postgresql://u:pw-9@w-1@h/d?sslpassword=ssl+2%2Fx"
    text = "bad host 'w-1@h' for pw-9; bad sslpassword 'ssl 2/x' (ssl+2%2Fx)"
    assert (
        db.scrub(text, url) == "bad host '***@h' for ***; bad sslpassword '***' (***)"
    )


# -- a real role with a password ---------------------------------------------


def _admin_url() -> str:
    url = os.environ.get("METASTORE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("needs METASTORE_TEST_POSTGRES_URL")
    return url


def _admin(sql: str) -> None:
    engine = db.create_engine(_admin_url()).execution_options(
        isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(sql)
    finally:
        engine.dispose()


@pytest.fixture
def role_url() -> Iterator[str]:
    """URL of a new empty database owned by a new role, secrets in the query.

    The role has a password and logs in with it; the database and the role
    are dropped afterwards.
    """
    suffix = uuid.uuid4().hex[:10]
    role, name = f"metastore_pw_test_{suffix}", f"metastore_pw_test_{suffix}"
    _admin(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
    try:
        _admin(f'CREATE DATABASE "{name}" OWNER {role}')
        try:
            base = make_url(_admin_url())
            yield (
                f"postgresql://{role}@{base.host}:{base.port or 5432}/{name}"
                f"?password={PASSWORD}&sslpassword={SSL_PASSWORD}"
                f"&passfile={PASSFILE}&application_name=metastore-test"
            )
        finally:
            _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        _admin(f"DROP ROLE IF EXISTS {role}")


def invoke(*args: str, url: str) -> tuple[int, str]:
    """Run the CLI in this process; its exit status and all it printed."""
    result = CliRunner().invoke(cli, [*args, "--db", url], catch_exceptions=False)
    return result.exit_code, result.output


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


def source_folder(root: Path, count: int) -> Path:
    for n in range(1, count + 1):
        write_ct(root / f"ct{n:02}.dcm", n)
    return root


@pytest.mark.postgres
def test_the_role_url_works_and_no_command_prints_a_secret(
    role_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """db upgrade, index, stats, query, export, db current as the role: no secret."""
    engine = db.create_engine(role_url)
    try:
        with engine.connect() as connection:
            user = connection.exec_driver_sql("SELECT current_user").scalar_one()
    finally:
        engine.dispose()
    assert user == make_url(role_url).username  # the URL logs in as the role
    src = source_folder(tmp_path / "src", 3)
    status, output = invoke("db", "upgrade", url=role_url)
    assert status == 0 and "password=***" in output and "(head)" in output, output
    assert_no_secret(output)
    for args in (
        ("index", str(src), "--workers", "1"),
        ("index", str(src), "--json"),
        ("stats",),
        ("query", "studies"),
        ("export",),
        ("db", "current"),
    ):
        status, output = invoke(*args, url=role_url)
        assert status == 0, (args, output)
        assert_no_secret(output)
    assert_no_secret(caplog.text)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "args",
    [
        ("index", "."),
        ("stats",),
        ("export",),
        ("query", "studies"),
        ("get", "imagePlaneModule", "wadouri:file:///x.dcm?frame=1"),
        ("db", "upgrade"),
        ("db", "current"),
    ],
)
def test_errors_name_the_url_without_its_secrets(
    role_url: str, args: tuple[str, ...]
) -> None:
    """A database that does not exist: one line naming the URL, no secret."""
    head, sep, query = role_url.partition("?")
    wrong = head.rsplit("/", 1)[0] + "/no_such_db" + sep + query
    status, output = invoke(*args, url=wrong)
    assert status == 2, output
    assert output.startswith("Error: ") and output.count("\n") == 1, output
    assert 'database "no_such_db" does not exist' in output, output
    assert "password=***" in output, output
    assert_no_secret(output)


@pytest.mark.postgres
def test_unknown_schema_revision_names_the_url_without_its_secrets(
    role_url: str,
) -> None:
    """A schema error names the redacted URL, from every command."""
    assert invoke("db", "upgrade", url=role_url)[0] == 0
    engine = db.create_engine(role_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"UPDATE {db.VERSION_TABLE} SET version_num='0999'"))
    engine.dispose()
    for args in (("stats",), ("index", "."), ("db", "upgrade"), ("db", "current")):
        status, output = invoke(*args, url=role_url)
        assert status == 2 and "0999" in output, (args, output)
        assert_no_secret(output)


@pytest.mark.postgres
def test_lost_connection_warnings_show_no_secret(role_url: str, tmp_path: Path) -> None:
    """A connection dropped inside a batch: the warnings and the report, no secret."""
    assert invoke("db", "upgrade", url=role_url)[0] == 0
    src = source_folder(tmp_path / "src", 8)  # two batches of four
    go = tmp_path / "go"
    procs: list[subprocess.Popen[str]] = []
    try:
        proc = start_paused(
            procs,
            index_command(role_url, [src]),
            f"2:{module_rows_sql(role_url)}",
            go,
            "the indexer to pause inside batch 2",
        )
        assert terminate_backends(_admin_url(), role_url) >= 1
        go.touch()
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        for started in procs:
            if started.poll() is None:
                started.kill()
                started.wait()
    assert proc.returncode == 0, err
    assert "lost the connection" in err and "password=***" in err, err
    assert_no_secret(out + err)
