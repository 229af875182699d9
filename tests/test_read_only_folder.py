"""Reading a SQLite database in a folder the reader cannot write.

A WAL database needs its ``-shm`` index to be read, and SQLite creates it
next to the file: in a read-only folder every reader failed ("attempt to
write a readonly database").  Read-only commands and ``DatabaseProvider``
open such a file read-only (``metastore.store.db.create_engine(read_only=True)``).

Tests run as root, whom file permissions do not stop, so the commands run
in a subprocess that keeps uid 0 but drops every capability (the bounding
set, before exec): root then gets only the owner's permissions of a
``0555`` folder, like any user.  Each test first checks that the
subprocess really cannot create a file there.  Run as another user, the
subprocess is that user and the folder is just as read-only to it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dicom_samples import CT, EMRI, copy, write_ct

from metastore.cli import cli

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="capabilities are Linux's"
)

PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4


def _drop_capabilities() -> None:  # pragma: no cover - runs in the child
    """In the child, before exec: no capability survives the exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for capability in range(64):
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)


def unprivileged(*args: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` without the privileges that ignore file permissions."""
    return subprocess.run(
        [sys.executable, *args],
        preexec_fn=_drop_capabilities if os.geteuid() == 0 else None,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def metastore(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m metastore ARGS``, unprivileged."""
    return unprivileged("-m", "metastore", *args)


def assert_cannot_write(folder: Path) -> None:
    """The unprivileged subprocess really cannot create a file in ``folder``."""
    probe = folder / "probe"
    result = unprivileged(
        "-c",
        "import sys\n"
        "try:\n"
        f"    open({str(probe)!r}, 'w')\n"
        "except PermissionError:\n"
        "    sys.exit(3)\n",
    )
    assert result.returncode == 3, result.stderr
    assert not probe.exists()


def run(*args: str) -> Any:
    """The CLI in this (privileged) process."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


#: The read-only commands, with what they print as root in a writable folder.
#: ``query`` (run in a subprocess, out of a stand-in's reach) once the query
#: layer of issue 11 is in.
COMMANDS = [
    ("stats",),
    ("export",),
    ("query", "studies"),
    ("query", "instances"),
    ("db", "current"),
]


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    """A folder holding an indexed database; made read-only by the tests."""
    folder = tmp_path / "ro"
    folder.mkdir()
    yield folder
    folder.chmod(0o755)  # so that pytest can clean up


def index(folder: Path, source: Path) -> str:
    url = f"sqlite:///{folder / 'db.sqlite'}"
    run("index", str(source), "--workers", "1", "--db", url)
    return url


def outputs(url: str) -> dict[tuple[str, ...], str]:
    """What each read-only command prints, as root."""
    return {args: run(*args, "--db", url).stdout for args in COMMANDS}


def test_readers_open_a_database_in_a_read_only_folder(
    folder: Path, tmp_path: Path
) -> None:
    """stats, export, query, get, db current and DatabaseProvider all answer.

    Nothing is created in the folder (no -shm, no -wal): the file is read
    as it is (immutable), and the answers are those of a writable folder.
    """
    copy(CT, tmp_path / "src" / "ct.dcm")
    copy(EMRI, tmp_path / "src" / "mr.dcm")
    url = index(folder, tmp_path / "src")
    want = outputs(url)
    image_id = json.loads(want[("export",)].splitlines()[0])["imageId"]
    plane = run("get", "imagePlaneModule", image_id, "--db", url).stdout
    assert sorted(p.name for p in folder.iterdir()) == ["db.sqlite"]
    folder.chmod(0o555)
    assert_cannot_write(folder)
    for args, expected in want.items():
        result = metastore(*args, "--db", url)
        assert (result.returncode, result.stdout) == (0, expected), result.stderr
    result = metastore("get", "imagePlaneModule", image_id, "--db", url)
    assert (result.returncode, result.stdout) == (0, plane), result.stderr
    provider = unprivileged(
        "-c",
        "import json, sys\n"
        "from metastore import DatabaseProvider\n"
        f"value = DatabaseProvider({url!r}).get('imagePlaneModule', {image_id!r})\n"
        "print(json.dumps(value, sort_keys=True))\n",
    )
    assert provider.returncode == 0, provider.stderr
    assert json.loads(provider.stdout) == json.loads(plane)
    assert sorted(p.name for p in folder.iterdir()) == ["db.sqlite"]


def test_readers_see_what_a_live_writer_committed(folder: Path, tmp_path: Path) -> None:
    """With a writer's -wal and -shm there, readers share them (mode=ro).

    The second index run's commits are still in the -wal only (another
    connection keeps the database open, so nothing folds the log into the
    file): a reader that ignored the -wal would count one instance, not two.
    """
    write_ct(tmp_path / "one" / "1.dcm", 1, study=1)
    write_ct(tmp_path / "two" / "2.dcm", 2, study=2)
    url = index(folder, tmp_path / "one")
    database = folder / "db.sqlite"
    keeper = sqlite3.connect(database)  # keeps -wal and -shm after the writer
    try:
        keeper.execute("SELECT count(*) FROM studies").fetchone()
        index(folder, tmp_path / "two")
        assert (folder / "db.sqlite-wal").stat().st_size > 0
        want = outputs(url)
        assert json.loads(want[("stats",)])["instances"] == 2
        folder.chmod(0o555)
        assert_cannot_write(folder)
        for args, expected in want.items():
            result = metastore(*args, "--db", url)
            assert (result.returncode, result.stdout) == (0, expected), result.stderr
    finally:
        keeper.close()


def test_a_log_without_its_index_is_one_line(folder: Path, tmp_path: Path) -> None:
    """A -wal holding commits without its -shm cannot be read safely: one line."""
    write_ct(tmp_path / "one" / "1.dcm", 1, study=1)
    write_ct(tmp_path / "two" / "2.dcm", 2, study=2)
    writable = tmp_path / "rw"
    writable.mkdir()
    index(writable, tmp_path / "one")
    keeper = sqlite3.connect(writable / "db.sqlite")
    try:
        keeper.execute("SELECT count(*) FROM studies").fetchone()
        index(writable, tmp_path / "two")
        for name in ("db.sqlite", "db.sqlite-wal"):  # copied without the -shm
            shutil.copyfile(writable / name, folder / name)
    finally:
        keeper.close()
    folder.chmod(0o555)
    assert_cannot_write(folder)
    result = metastore("stats", "--db", f"sqlite:///{folder / 'db.sqlite'}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "db.sqlite-wal holds transactions but" in result.stderr
    assert "-shm is missing" in result.stderr


def test_writers_and_missing_files_in_a_read_only_folder_are_one_line(
    folder: Path, tmp_path: Path
) -> None:
    """index cannot write there; a reader of a missing file cannot create it."""
    copy(CT, tmp_path / "src" / "ct.dcm")
    url = index(folder, tmp_path / "src")
    folder.chmod(0o555)
    assert_cannot_write(folder)
    result = metastore("index", str(tmp_path / "src"), "--db", url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert f"(folder {folder} is not writable)" in result.stderr
    missing = f"sqlite:///{folder / 'nope.sqlite'}"
    result = metastore("stats", "--db", missing)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"no database at {folder / 'nope.sqlite'}" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["db.sqlite"]
