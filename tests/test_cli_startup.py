"""The command's start-up: ``--help`` and ``get`` load only what they use.

Each case runs the click group in a fresh interpreter and lists
``sys.modules`` afterwards (what was imported, not how long it took: the
times are scripts/bench_startup.py's).  The CLI imports the library inside
its commands, so ``metastore --help`` loads no SQLAlchemy, pydicom or
Alembic, and ``get`` only the store's read side.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from metastore.cli import base, cli
from metastore.index import DEFAULT_BATCH_SIZE
from metastore.modules import MODULE_TYPES
from metastore.store import Store, db
from tests.test_store import make_instance

ROOT = Path(__file__).resolve().parent.parent

#: What no ``--help`` may load.
HELP_MUST_NOT_LOAD = (
    "sqlalchemy",
    "pydicom",
    "alembic",
    "numpy",
    "psycopg",
    "metastore.store.api",
    "metastore.index.pipeline",
    "metastore.dicomjson",
    "metastore.modules",
    "metastore.testhooks",
)
#: What ``get`` may not load: the writer, the schema, migrations, the indexer.
GET_MUST_NOT_LOAD = (
    "pydicom",
    "alembic",
    "numpy",
    "sqlalchemy.orm",
    "metastore.store.write",
    "metastore.store.schema",
    "metastore.index",
    "metastore.dicomjson",
    "metastore.modules",
    "metastore.testhooks",
)

#: Runs the group with argv[2:], then writes sys.modules to argv[1].
RUN_GROUP = """
import json, sys
from metastore.cli import cli
try:
    cli(sys.argv[2:], prog_name="metastore")
except SystemExit as exit:
    status = exit.code
with open(sys.argv[1], "w") as out:
    json.dump({"status": status, "modules": sorted(sys.modules)}, out)
"""


def loaded_by(tmp_path: Path, *args: str) -> tuple[object, list[str]]:
    """(exit status, sys.modules) of ``metastore ARGS`` in a fresh interpreter."""
    report = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("METASTORE_TEST_")}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run(
        [sys.executable, "-c", RUN_GROUP, str(report), *args],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    result = json.loads(report.read_text())
    return result["status"], result["modules"]


def banned(names: list[str], must_not: tuple[str, ...]) -> list[str]:
    """The names that are, or are inside, a module of ``must_not``."""
    return [n for n in names if any(n == b or n.startswith(b + ".") for b in must_not)]


@pytest.mark.parametrize(
    "args",
    [("--help",), ("get", "--help"), ("index", "--help"), ("db", "upgrade", "-h")],
    ids=" ".join,
)
def test_help_loads_no_database_or_dicom_library(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """``metastore --help`` (and a command's) imports none of the library's weight."""
    status, names = loaded_by(tmp_path, *args)
    assert status == 0
    assert "click" in names
    wrong = banned(names, HELP_MUST_NOT_LOAD)
    assert not wrong, f"metastore {' '.join(args)} loads {wrong}"


def test_get_loads_only_the_read_side(tmp_path: Path) -> None:
    """A cold ``get`` on SQLite loads SQLAlchemy Core, not the writer or pydicom."""
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    record = make_instance("/a/1.dcm", "1.1")
    with Store(url) as store:
        store.write_batch([record])
    image_id = record.images[0].image_id
    status, names = loaded_by(tmp_path, "get", "patientModule", image_id, "--db", url)
    assert status in (0, None)
    assert "sqlalchemy" in names and "metastore.store.api" in names
    wrong = banned(names, GET_MUST_NOT_LOAD)
    assert not wrong, f"metastore get loads {wrong}"


def test_the_cli_copies_of_library_constants_agree() -> None:
    """The defaults the options show are the library's own."""
    assert base.DEFAULT_URL == db.DEFAULT_URL
    assert base.DEFAULT_BATCH_SIZE == DEFAULT_BATCH_SIZE
    with pytest.raises(Exception, match="valid types: ") as raised:
        base.module_types(["noSuchModule"])
    assert str(raised.value).endswith("valid types: " + ", ".join(MODULE_TYPES))
    assert base.module_types([f" {MODULE_TYPES[-1]} ", ""]) == [MODULE_TYPES[-1]]


def test_a_driver_error_is_one_line_naming_the_database(tmp_path: Path) -> None:
    """SQLAlchemy is imported lazily; the store's classified error is one line."""
    from click.testing import CliRunner

    path = tmp_path / "m.sqlite"
    url = f"sqlite:///{path}"
    Store(url).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE image_modules")
    result = CliRunner().invoke(cli, ["stats", "--db", url])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"Error: read from {url} failed: no such table: image_modules"
    )
