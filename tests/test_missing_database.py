"""No silent mistakes: readers of a database that is not there create nothing.

A mistyped SQLite path used to create an empty database, print "(no rows)"
and exit 0.  Every read command now exits 2 naming the file, and leaves no
file behind; ``Store(url, create=False)`` is the library's rule, and
``DatabaseProvider`` and ``metastore serve`` follow it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from metastore import DatabaseProvider
from metastore.cli import cli
from metastore.errors import DatabaseNotFoundError
from metastore.store import Store, db

IMAGE_ID = "wadors:https://pacs/dicomweb/studies/1/series/2/instances/3/frames/1"

#: Every command that only reads, with its arguments.
READERS = {
    "get": ["get", "imagePlaneModule", IMAGE_ID],
    "tags": ["tags", "ct.dcm", "SliceThickness"],
    "query": ["query", "studies"],
    "export": ["export"],
    "stats": ["stats"],
    "errors": ["errors"],
    "serve": ["serve", "--port", "0"],
    "db current": ["db", "current"],
}


def run(args: list[str], url: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--db", url], catch_exceptions=False)


@pytest.mark.parametrize("command", sorted(READERS))
def test_read_commands_refuse_a_missing_sqlite_file(
    tmp_path: Path, command: str
) -> None:
    """Exit 2 with one line naming the file; nothing is created."""
    missing = tmp_path / "typo.sqlite"
    result = run(READERS[command], f"sqlite:///{missing}")
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: no database at ") and str(missing) in line
    assert list(tmp_path.iterdir()) == []


def test_store_create_false_creates_nothing(tmp_path: Path) -> None:
    """The library's rule: a reader's ``Store`` and ``DatabaseProvider`` refuse."""
    url = f"sqlite:///{tmp_path / 'typo.sqlite'}"
    with pytest.raises(DatabaseNotFoundError, match=r"typo\.sqlite"):
        Store(url, create=False)
    with pytest.raises(DatabaseNotFoundError, match=r"typo\.sqlite"):
        DatabaseProvider(url)
    assert list(tmp_path.iterdir()) == []
    with Store(url):  # a writer still sets up a brand-new database
        pass
    with Store(url, create=False) as store:
        assert store.stats()["instances"] == 0


def test_an_empty_database_is_not_set_up_by_a_reader(empty_db_url: str) -> None:
    """An empty database (a new PostgreSQL one, an empty file) gets no schema."""
    if empty_db_url.startswith("sqlite"):
        sa.create_engine(empty_db_url).connect().close()  # an empty file
    with pytest.raises(DatabaseNotFoundError, match="no metastore schema"):
        Store(empty_db_url, create=False)
    result = run(["stats"], empty_db_url)
    assert result.exit_code == 2 and "no metastore schema" in result.stderr
    engine = db.create_engine(empty_db_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
