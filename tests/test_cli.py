"""The metastore command through click's CliRunner: output, exit statuses, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from dicom_samples import (
    CT,
    EMRI,
    copy,
    dicom_json,
    mixed_archive,
    write_json,
)

from metastore import index_paths
from metastore.cli import cli
from metastore.errors import SchemaError, StoreError
from metastore.modules import MODULE_TYPES
from metastore.store import Store, db

ROOT = "http://localhost/dicomweb"
CT_IMAGE = (
    f"wadors:{ROOT}/studies/1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
    "/series/1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
    "/instances/1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322/frames/1"
)


def run(*args: str, db_url: str | None = None) -> Result:
    """Run ``metastore ARGS [--db URL]`` in process."""
    extra = ["--db", db_url] if db_url else []
    return CliRunner().invoke(cli, [*args, *extra], catch_exceptions=False)


def assert_one_line_error(result: Result, status: int, text: str) -> None:
    """The command failed with ``status`` and one ``Error:`` line, no traceback."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert text in result.stderr


def json_lines(text: str) -> list[Any]:
    """Parse JSON Lines output."""
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def indexed(db_url: str, tmp_path: Path) -> str:
    """A database holding CT_small and a 10-frame MR, under the test root."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    copy(EMRI, tmp_path / "src" / "mr.dcm")
    result = run("index", str(tmp_path / "src"), "--wadors-root", ROOT, db_url=db_url)
    assert result.exit_code == 0, result.output
    return db_url


def test_index_prints_a_summary_and_exits_0(db_url: str, tmp_path: Path) -> None:
    """A clean run prints the counts and exits 0."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    result = run("index", str(tmp_path / "src"), "--workers", "1", db_url=db_url)
    assert result.exit_code == 0
    assert "1 files seen: 1 indexed, 0 unchanged, 0 skipped, 0 failed" in result.stdout
    assert "1 images" in result.stdout


def test_index_exits_1_when_some_files_failed(db_url: str, tmp_path: Path) -> None:
    """Failures are listed on stderr and give exit 1; the rest is indexed."""
    root = mixed_archive(tmp_path / "src")
    result = run("index", str(root), "--json", db_url=db_url)
    assert result.exit_code == 1
    (report,) = json_lines(result.stdout)
    assert (report["indexed"], report["failed"], report["skipped"]) == (6, 1, 5)
    assert report["errors"][0]["location"] == str(root / "cut.dcm")
    assert f"unreadable: {root / 'cut.dcm'}: truncated" in result.stderr


def test_index_twice_reports_unchanged(db_url: str, tmp_path: Path) -> None:
    """The second run reads nothing."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    run("index", str(tmp_path / "src"), db_url=db_url)
    result = run("index", str(tmp_path / "src"), "--json", db_url=db_url)
    (report,) = json_lines(result.stdout)
    assert (report["unchanged"], report["indexed"]) == (1, 0)


def test_index_missing_path_is_a_usage_error(db_url: str, tmp_path: Path) -> None:
    """A PATH that does not exist is refused before anything is read."""
    result = run("index", str(tmp_path / "nope"), db_url=db_url)
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("root", "text"),
    [
        ("javascript:alert(1)", "is not an http:// or https:// URL"),
        ("file:///studies", "is not an http:// or https:// URL"),
        ("pacs/dicomweb", "is not an http:// or https:// URL"),
        ("https://user:pw-5@pacs/dicomweb", "holds credentials"),
        ("https://pw-5@pacs/dicomweb", "holds credentials"),
        ("https:///dicomweb", "has no host"),
        ("https://pacs/dicomweb?token=pw-5", "has a query or fragment"),
        ("https://pacs/dicomweb#x", "has a query or fragment"),
        ("https://pacs/dicom web", "contains a space or a control character"),
        ("https://pacs:99999/dicomweb", "has a port that is not a number"),
    ],
)
def test_bad_wadors_root_is_refused_before_anything(
    tmp_path: Path, root: str, text: str
) -> None:
    """--wadors-root must be an http(s) URL with a host, no credentials or query."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    database = tmp_path / "db.sqlite"
    result = run(
        "index", str(tmp_path / "src"), "--wadors-root", root,
        db_url=f"sqlite:///{database}",
    )  # fmt: skip
    assert_one_line_error(result, 2, text)
    assert "--wadors-root" in result.stderr and "pw-5" not in result.output
    assert not database.exists()  # refused before the database was opened
    with Store(f"sqlite:///{database}") as store:
        with pytest.raises(ValueError, match=text):
            index_paths(store, [tmp_path / "src"], wadors_root=root, workers=1)
        assert store.stats()["instances"] == 0


def test_get_prints_the_module(indexed: str) -> None:
    """`get` prints one module as one JSON line."""
    result = run("get", "generalSeriesModule", CT_IMAGE, db_url=indexed)
    assert result.exit_code == 0
    (value,) = json_lines(result.stdout)
    assert value["modality"] == "CT"


def test_get_writes_nan_as_null(db_url: str, tmp_path: Path) -> None:
    """A NaN module field (parseFloat of junk) comes out as JSON null."""
    instance = dicom_json(CT)
    instance["00281050"] = {"vr": "DS", "Value": ["abc"]}
    write_json(tmp_path / "src" / "ct.json", instance)
    run("index", str(tmp_path / "src"), "--wadors-root", ROOT, db_url=db_url)
    result = run("get", "voiLutModule", CT_IMAGE, db_url=db_url)
    assert result.exit_code == 0
    assert '"windowCenter":[null]' in result.stdout


def test_get_without_an_answer_exits_1(indexed: str) -> None:
    """An unknown imageId, or a type with no answer, is a message and exit 1."""
    other = CT_IMAGE.replace("frames/1", "frames/9")
    result = run("get", "imagePlaneModule", other, db_url=indexed)
    assert (result.exit_code, result.stdout) == (1, "")
    assert "no imagePlaneModule" in result.stderr
    result = run("get", "scalingModule", CT_IMAGE, db_url=indexed)
    assert result.exit_code == 1


def test_get_unknown_type_lists_the_valid_ones(indexed: str) -> None:
    """An unknown module type is one line naming the valid types, exit 2."""
    result = run("get", "imagePlaneModul", CT_IMAGE, db_url=indexed)
    assert_one_line_error(result, 2, "unknown module type 'imagePlaneModul'")
    assert "imagePlaneModule" in result.stderr


def test_get_malformed_image_id_is_one_line(indexed: str) -> None:
    """A malformed imageId is one line, exit 2."""
    result = run("get", "imagePlaneModule", "wadors:http://x/frames/1", db_url=indexed)
    assert_one_line_error(result, 2, "invalid imageId")


def test_export_streams_json_lines(indexed: str) -> None:
    """`export` writes one {imageId, modules} object per image, sorted."""
    result = run("export", db_url=indexed)
    rows = json_lines(result.stdout)
    assert len(rows) == 11
    assert [r["imageId"] for r in rows] == sorted(r["imageId"] for r in rows)
    assert CT_IMAGE in {r["imageId"] for r in rows}
    assert len(rows[0]["modules"]) == 26


def test_export_modules_and_output_file(indexed: str, tmp_path: Path) -> None:
    """`--modules` limits the types; `-o` writes to a file."""
    out = tmp_path / "out.jsonl"
    result = run(
        "export",
        "--modules",
        "imagePlaneModule, voiLutModule",
        "-o",
        str(out),
        db_url=indexed,
    )
    assert (result.exit_code, result.stdout) == (0, "")
    rows = json_lines(out.read_text())
    assert {tuple(sorted(r["modules"])) for r in rows} == {
        ("imagePlaneModule", "voiLutModule")
    }


@pytest.mark.parametrize(
    "spelling", ["same", "dotted", "relative", "symlink", "hard link", "-wal", "-shm"]
)
def test_export_never_writes_over_the_database(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    """`-o` naming the database file, however spelled, or its WAL: exit 2, untouched."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    assert run("index", str(tmp_path / "src"), db_url=sqlite_url).exit_code == 0
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    output = {
        "same": str(database),
        "dotted": f"{tmp_path}/sub/../{database.name}",
        "relative": f"../{database.name}",
        "symlink": "link.sqlite",
        "hard link": "hard.sqlite",
        "-wal": f"{database}-wal",
        "-shm": f"../{database.name}-shm",
    }[spelling]
    if spelling == "symlink":
        os.symlink(database, output)
    elif spelling == "hard link":
        os.link(database, output)
    before = {p.name: p.read_bytes() for p in database.parent.glob("*.sqlite*")}
    result = run("export", "-o", output, db_url=sqlite_url)
    assert_one_line_error(result, 2, "a file of the database: refusing")
    assert output in result.stderr
    after = {p.name: p.read_bytes() for p in database.parent.glob("*.sqlite*")}
    assert after == before  # no companion created, not a byte changed
    rows = json_lines(run("export", db_url=sqlite_url).stdout)
    assert len(rows) == 1  # the database still answers


def test_export_unknown_module_is_an_error(indexed: str) -> None:
    """`--modules` with an unknown type is refused in one line."""
    result = run("export", "--modules", "nope", db_url=indexed)
    assert_one_line_error(result, 2, "unknown module type 'nope'")


def export_bytes(url: str) -> bytes:
    result = run("export", db_url=url)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.mark.postgres
def test_export_is_the_same_bytes_on_both_backends_and_after_rewrites(
    sqlite_url: str, postgres_url: str, tmp_path: Path
) -> None:
    """Module keys in name order: SQLite and PostgreSQL export the same bytes.

    Before, an image's modules came in the order its rows lay on disk:
    module type id order on SQLite, heap order on PostgreSQL, which an
    UPDATE or a rewrite of a source changes.
    """
    src = tmp_path / "src"
    copy(CT, src / "ct.dcm")
    copy(EMRI, src / "mr.dcm")
    write_json(src / "series.json", [dicom_json("MR_small.dcm")])
    # SQLite: type ids in reverse name order, so id order is not name order
    engine = db.create_engine(sqlite_url)
    with engine.begin() as connection:
        for name in sorted(MODULE_TYPES, reverse=True):
            connection.execute(
                sa.text("INSERT INTO module_types (name) VALUES (:n)"), {"n": name}
            )
    engine.dispose()

    def index() -> None:
        for url in (sqlite_url, postgres_url):
            result = run("index", str(src), "--wadors-root", ROOT, db_url=url)
            assert result.exit_code == 0, result.output

    index()
    first = export_bytes(sqlite_url)
    assert export_bytes(postgres_url) == first
    lines = first.splitlines()
    assert len(lines) == 12
    for line in lines:
        modules = list(json.loads(line)["modules"])
        assert modules == sorted(modules) and len(modules) == 26
    # PostgreSQL: UPDATE moves half of the module rows to the end of the heap
    engine = db.create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE image_modules SET value_id = value_id WHERE module_type_id "
                "IN (SELECT id FROM module_types WHERE name < 'm')"
            )
        )
    engine.dispose()
    assert export_bytes(postgres_url) == first
    # a rewrite: every source changed on disk, read and stored again
    for path in src.iterdir():
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    index()
    assert export_bytes(sqlite_url) == first
    assert export_bytes(postgres_url) == first


def test_stats(indexed: str) -> None:
    """`stats` prints the row counts as one JSON object."""
    (stats,) = json_lines(run("stats", db_url=indexed).stdout)
    assert (stats["instances"], stats["images"]) == (2, 11)


def test_db_upgrade_and_current(empty_db_url: str) -> None:
    """`db current` says whether the schema is at head; `db upgrade` gets it there."""
    if empty_db_url.startswith("sqlite"):
        # a SQLite file that is not there is no database (it is not created)
        path = db.database_files(empty_db_url)[0]
        assert_one_line_error(run("db", "current", db_url=empty_db_url), 2, path)
        assert not os.path.exists(path)
        sa.create_engine(empty_db_url).connect().close()  # an empty file
    result = run("db", "current", db_url=empty_db_url)
    assert "no schema (behind head" in result.stdout
    assert run("db", "upgrade", db_url=empty_db_url).exit_code == 0
    result = run("db", "current", db_url=empty_db_url)
    assert result.stdout.strip() == f"{db.head()} (head)"


def test_database_env_var_is_used(
    indexed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """METASTORE_DATABASE_URL picks the database when --db is not given."""
    monkeypatch.setenv("METASTORE_DATABASE_URL", indexed)
    (stats,) = json_lines(run("stats").stdout)
    assert stats["images"] == 11


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    """A database that cannot be opened is one line, exit 2."""
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.sqlite'}"
    for args in (["stats"], ["index", str(tmp_path)], ["export"]):
        assert_one_line_error(run(*args, db_url=url), 2, "does not exist")


@pytest.mark.parametrize("name", ["scans?2024.sqlite", "a?b=c.sqlite"])
def test_sqlite_url_with_a_question_mark_is_refused(tmp_path: Path, name: str) -> None:
    """SQLAlchemy would open a file named up to the "?": refused, with the %3F form.

    The suggested URL opens the file with the "?" in its name.
    """
    url = f"sqlite:///{tmp_path / name}"
    result = run("stats", db_url=url)
    assert_one_line_error(result, 2, "a SQLite URL takes no query string")
    assert f"read the file name as '{tmp_path / name.partition('?')[0]}'" in (
        result.stderr
    )
    assert list(tmp_path.iterdir()) == []  # nothing created, "scans" least of all
    suggested = result.stderr.strip().rpartition(" ")[2]
    assert suggested.startswith("sqlite:///") and "%3F" in suggested
    assert run("db", "upgrade", db_url=suggested).exit_code == 0
    assert run("stats", db_url=suggested).exit_code == 0
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".sqlite"] == [name]
    with pytest.raises(StoreError, match="takes no query string"):
        Store(url)
    with pytest.raises(StoreError, match="takes no query parameters"):
        db.create_engine(sa.engine.make_url(f"sqlite:///{tmp_path}/x?mode=ro"))


def test_unreachable_postgres_is_one_line() -> None:
    """A PostgreSQL server that does not answer is one line, exit 2."""
    result = run("stats", db_url="postgresql://nobody:secret@127.0.0.1:1/x")
    assert_one_line_error(result, 2, "127.0.0.1")
    assert "secret" not in result.output


def test_schema_not_at_head_is_one_line(db_url: str) -> None:
    """A schema this metastore does not know is refused in one line."""
    engine = db.create_engine(db_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(f"UPDATE {db.VERSION_TABLE} SET version_num = '0000'")
        )
    engine.dispose()
    for args in (["stats"], ["index", "--upgrade", "."]):
        assert_one_line_error(run(*args, db_url=db_url), 2, "revision 0000")


def set_version_rows(url: str, *revisions: str) -> None:
    """Make the version table hold exactly ``revisions``."""
    engine = db.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DELETE FROM {db.VERSION_TABLE}"))
        for revision in revisions:
            connection.execute(
                sa.text(f"INSERT INTO {db.VERSION_TABLE} VALUES (:r)"), {"r": revision}
            )
    engine.dispose()


#: Every command that opens the database, with arguments that would work.
DATABASE_COMMANDS = [
    ["db", "upgrade"],
    ["db", "current"],
    ["stats"],
    ["index", "."],
    ["export"],
    ["query", "studies"],
    ["get", "imagePlaneModule", CT_IMAGE],
]


def test_newer_schema_revision_is_one_line_everywhere(db_url: str) -> None:
    """A revision this metastore does not know: one line, exit 2, never "behind"."""
    set_version_rows(db_url, "0099")
    for args in DATABASE_COMMANDS:
        result = run(*args, db_url=db_url)
        assert_one_line_error(result, 2, "schema revision 0099, which this version")
        assert "does not know" in result.stderr and "behind" not in result.output
    engine = db.create_engine(db_url)
    try:
        with pytest.raises(SchemaError, match="0099"):
            db.upgrade(engine)
        assert db.current(engine) == "0099"  # db upgrade changed nothing
    finally:
        engine.dispose()


def test_two_rows_in_the_version_table_are_one_line_everywhere(db_url: str) -> None:
    """Several revisions recorded: one line naming them, exit 2, nothing migrated."""
    set_version_rows(db_url, "0001", "0002")
    for args in DATABASE_COMMANDS:
        result = run(*args, db_url=db_url)
        assert_one_line_error(result, 2, "holds 2 revisions")
        assert "0001" in result.stderr and "0002" in result.stderr
    engine = db.create_engine(db_url)
    try:
        with pytest.raises(SchemaError, match="holds 2 revisions"):
            db.current(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("postgresql://u:pw-7@127.0.0.1:abc/db", "the port 'abc' is not a number"),
        ("postgresql://u:pw-7@[::1/db", "the port ':1' is not a number"),
        ("postgresql://u:p@pw-7:x@h/db", "the port is not a number"),
    ],
)
def test_url_with_a_port_that_is_no_number_is_one_line(url: str, text: str) -> None:
    """make_url's ValueError: one line naming the port, exit 2, no password."""
    for args in DATABASE_COMMANDS:
        result = run(*args, db_url=url)
        assert_one_line_error(result, 2, text)
        assert "pw-7" not in result.output


def test_every_command_has_help_ending_with_an_example() -> None:
    """Each command's --help works and ends with an example."""
    commands = [[name] for name in cli.commands if name != "db"]
    commands += [["db", name] for name in ("upgrade", "current")]
    for command in commands:
        result = run(*command, "--help")
        assert result.exit_code == 0
        text = result.stdout.split("Options:")[0].rstrip()
        assert "Example:" in text, command
        assert text.splitlines()[-1].strip().startswith("metastore "), command


def test_python_dash_m_metastore_runs_the_cli() -> None:
    """`python -m metastore --help` is the same command."""
    result = subprocess.run(
        [sys.executable, "-m", "metastore", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 0
    for name in ("index", "get", "export", "query", "stats", "db"):
        assert name in result.stdout
