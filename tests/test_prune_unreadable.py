"""``--prune`` forgets what is gone, never what it merely could not read.

An unreadable folder (listed but not entered, or mode 000), an unreadable
archive and an archive cut short while being copied are reported as errors
naming them, and everything stored under them is kept.  A root deleted since
it was indexed is pruned; a mistyped one is refused.  A zip holding two
members of one name reports the clash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dicom_samples import write_ct, zip_of
from stored import query_rows

from metastore.cli import cli
from metastore.index import index_paths
from metastore.store import Store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on a fresh database (SQLite and PostgreSQL)."""
    with Store(db_url) as s:
        yield s


def archive_root(root: Path) -> Path:
    """``root`` with ``a.zip`` (instances 1, 2), ``x.dcm`` (3), ``sub/y.dcm`` (4)."""
    zip_of(
        root / "a.zip",
        {
            "m/1.dcm": write_ct(root.parent / "src" / "1.dcm", 1),
            "m/2.dcm": write_ct(root.parent / "src" / "2.dcm", 2),
        },
    )
    write_ct(root / "x.dcm", 3)
    write_ct(root / "sub" / "y.dcm", 4)
    return root


# -- an archive cut short ----------------------------------------------------


def test_prune_keeps_the_members_of_an_archive_cut_short(
    store: Store, tmp_path: Path
) -> None:
    """A zip being copied (no central directory yet) is one error naming it;
    its stored members stay; once whole again it is read as usual."""
    root = archive_root(tmp_path / "d")
    index_paths(store, [root], workers=1)
    whole = (root / "a.zip").read_bytes()
    (root / "a.zip").write_bytes(whole[: len(whole) // 2])
    report = index_paths(store, [root], workers=1, prune=True)
    assert [(e.location, e.kind) for e in report.errors] == [
        (f"{root}/a.zip", "unreadable")
    ]
    assert (report.failed, report.exit_status) == (1, 1)
    assert store.stats()["instances"] == 4
    (root / "a.zip").write_bytes(whole)
    report = index_paths(store, [root], workers=1, prune=True)
    assert (report.indexed, report.error_count) == (2, 0)
    assert store.stats()["instances"] == 4


def test_every_share_keeps_the_members_of_an_archive_cut_short(
    store: Store, tmp_path: Path
) -> None:
    """Under ``--shard K/N`` the archive's error falls in one share, but its
    members (spread over all shares) are kept by every share's prune."""
    root = archive_root(tmp_path / "d")
    index_paths(store, [root], workers=1)
    whole = (root / "a.zip").read_bytes()
    (root / "a.zip").write_bytes(whole[: len(whole) // 2])
    errors = 0
    for k in (1, 2, 3):
        report = index_paths(store, [root], workers=1, prune=True, shard=(k, 3))
        errors += report.error_count
    assert errors == 1
    assert store.stats()["instances"] == 4


# -- unreadable folders and files (permission bits) ------------------------


def _drop_privileges() -> list[str]:
    """The command prefix that runs as a user permission bits apply to."""
    if os.geteuid() != 0:
        return []  # permission bits apply to us already
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the unprivileged user can write (pytest's tmp_path is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="metastore-perm-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in (folder, *folder.rglob("*")):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(folder)


def _writable_url(db_url: str, folder: Path) -> str:
    """``db_url``, with a SQLite file copied where the other user may write."""
    if not db_url.startswith("sqlite:///"):
        return db_url
    copy = folder / "db" / "metastore.sqlite"
    copy.parent.mkdir()
    shutil.copyfile(db_url.removeprefix("sqlite:///"), copy)
    if os.geteuid() == 0:
        for path in (copy.parent, copy):
            os.chown(path, 65534, 65534)
    return f"sqlite:///{copy}"


def _index_unprivileged(url: str, root: Path) -> tuple[int, dict[str, Any]]:
    """``metastore index ROOT --prune --json`` as a user without privileges."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METASTORE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    done = subprocess.run(
        [
            *_drop_privileges(),
            sys.executable,
            "-m",
            "metastore",
            "index",
            str(root),
            "--prune",
            "--json",
            "--workers",
            "1",
            "--db",
            url,
        ],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (0o644, "cannot enter the folder: Permission denied"),  # listed, not entered
        (0o000, "Permission denied"),
    ],
)
def test_prune_keeps_what_an_unreadable_folder_holds(
    db_url: str, shared: Path, mode: int, reason: str
) -> None:
    """The folder is one error naming it (exit 1), never "0 files seen", and
    its stored instances stay; readable again, it is found unchanged."""
    root = archive_root(shared / "d")
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    url = _writable_url(db_url, shared)
    with Store(url) as store:
        index_paths(store, [root], workers=1)
    (root / "sub").chmod(mode)
    status, report = _index_unprivileged(url, root)
    assert status == 1
    assert [(e["location"], e["kind"], e["reason"]) for e in report["errors"]] == [
        (f"{root}/sub", "unreadable", reason)
    ]
    with Store(url) as store:
        assert store.stats()["instances"] == 4
    (root / "sub").chmod(0o755)
    status, report = _index_unprivileged(url, root)
    assert (status, report["unchanged"], report["errors"]) == (0, 4, [])


def test_prune_keeps_the_members_of_an_unreadable_archive(
    db_url: str, shared: Path
) -> None:
    """An archive that cannot be opened (mode 000) keeps its members too, as
    an unreadable file keeps its instances."""
    root = archive_root(shared / "d")
    for path in (root, *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    url = _writable_url(db_url, shared)
    with Store(url) as store:
        index_paths(store, [root], workers=1)
    (root / "a.zip").chmod(0o000)
    (root / "x.dcm").chmod(0o000)
    status, report = _index_unprivileged(url, root)
    assert status == 1
    assert sorted(e["location"] for e in report["errors"]) == [
        f"{root}/a.zip",
        f"{root}/x.dcm",
    ]
    with Store(url) as store:
        assert store.stats()["instances"] == 4


# -- two members of one name -------------------------------------------------


def test_a_zip_with_two_members_of_one_name_reports_the_clash(
    store: Store, tmp_path: Path
) -> None:
    """The last member of the name is indexed (what a reader by that name
    gets); the clash is an error naming the zip and member, on every run."""
    archive = tmp_path / "d" / "dup.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        zf.write(write_ct(tmp_path / "src" / "1.dcm", 1), "b.dcm")
        zf.write(write_ct(tmp_path / "src" / "2.dcm", 2), "b.dcm")
    for run in range(2):
        report = index_paths(store, [archive], workers=1, prune=True)
        (error,) = report.errors
        assert (error.location, error.kind) == (f"{archive}!/b.dcm", "unreadable")
        assert "another member named 'b.dcm'" in error.reason
        assert report.exit_status == 1
        assert (report.indexed, report.unchanged) == ((1, 0) if run == 0 else (0, 1))
        (row,) = query_rows(store, "instances")
        assert row["SOPInstanceUID"].endswith(".2")
        assert [e.location for e in store.errors()] == [error.location]


# -- a deleted root ----------------------------------------------------------


def test_prune_forgets_a_root_that_was_deleted(store: Store, tmp_path: Path) -> None:
    """``index_paths([gone], prune=True)``: what is stored under it goes, and
    that is no error; other roots' sources stay."""
    gone = archive_root(tmp_path / "gone")
    other = write_ct(tmp_path / "other" / "o.dcm", 5)
    index_paths(store, [gone, other], workers=1)
    shutil.rmtree(gone)
    report = index_paths(store, [gone], workers=1, prune=True)
    assert (report.files_seen, report.error_count) == (0, 0)
    assert set(store.known_sources()) == {str(other)}


def test_prune_keeps_data_under_a_missing_path_it_never_stored(
    store: Store, tmp_path: Path
) -> None:
    """A mistyped root (nothing stored under it) is an error as before, and
    a root that is a dangling symlink (an unmounted share) prunes nothing."""
    root = archive_root(tmp_path / "d")
    index_paths(store, [root], workers=1)
    typo = index_paths(store, [tmp_path / "dd"], workers=1, prune=True)
    assert [(e.location, e.kind) for e in typo.errors] == [
        (str(tmp_path / "dd"), "unreadable")
    ]
    assert store.stats()["instances"] == 4
    linked = archive_root(tmp_path / "mnt" / "archive")  # instances 1-4 again
    link = tmp_path / "link"
    link.symlink_to(linked)
    shutil.rmtree(root)
    index_paths(store, [root, link], workers=1, prune=True)  # stored via the link
    assert len(store.known_sources([str(link)])) == 4
    shutil.move(linked, tmp_path / "elsewhere")  # the share is not mounted
    dangling = index_paths(store, [link], workers=1, prune=True)
    assert [(e.location, e.kind) for e in dangling.errors] == [
        (str(link), "unreadable")
    ]
    assert len(store.known_sources([str(link)])) == 4


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_prunes_a_deleted_root_and_refuses_a_mistyped_one(
    db_url: str, tmp_path: Path
) -> None:
    """``metastore index --prune gone/`` says what it forgets and exits 0; a
    path with nothing stored under it is refused (exit 2), nothing deleted;
    without --prune a missing path is refused as before."""
    gone = archive_root(tmp_path / "gone")
    kept = write_ct(tmp_path / "kept" / "k.dcm", 5)
    assert _cli("index", str(gone), str(kept), "--db", db_url).exit_code == 0
    shutil.rmtree(gone)
    typo = _cli("index", "--prune", str(tmp_path / "gon"), "--db", db_url)
    assert typo.exit_code == 2
    assert "no source is stored under it" in typo.stderr
    plain = _cli("index", str(gone), "--db", db_url)
    assert (plain.exit_code, "does not exist" in plain.stderr) == (2, True)
    with Store(db_url) as store:
        assert store.stats()["instances"] == 5
    result = _cli("index", "--prune", str(gone), str(kept), "--db", db_url)
    assert result.exit_code == 0, result.output
    assert f"{gone}: no longer exists; --prune forgets the 4 sources" in result.stderr
    with Store(db_url) as store:
        assert set(store.known_sources()) == {str(kept)}
