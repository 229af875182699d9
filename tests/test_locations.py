"""One location per source: a folder named like an archive, and older databases.

A zip ``a.zip`` with member ``b.dcm`` next to a folder ``a.zip!`` holding
``b.dcm`` used to share the location ``.../a.zip!/b.dcm``: every rerun stored
one and deleted the other.  A ``!`` that ends a file or folder name is now
escaped in locations (``metastore.locations.location_of``); rows stored under the old
spelling are converted when their source is written again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dicom_samples import write_ct, zip_of
from stored import locations

from metastore.index import IndexReport, index_paths
from metastore.store import Store
from metastore.store import schema as t

ROOT = "http://localhost/dicomweb"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on a fresh database (SQLite and PostgreSQL)."""
    with Store(db_url) as s:
        yield s


def export(store: Store) -> dict[str, Any]:
    """Everything the store answers, by imageId."""
    return dict(store.export())


def twins(folder: Path) -> Path:
    """``folder/a.zip`` holding ``b.dcm`` (instance 1) and ``folder/a.zip!/b.dcm``
    (instance 2)."""
    one = write_ct(folder.parent / "src" / "1.dcm", 1)
    zip_of(folder / "a.zip", {"b.dcm": one})
    write_ct(folder / "a.zip!" / "b.dcm", 2)
    return folder


UID = "1.2.826.0.1.3680043.8.498.77.1.1."
MEMBER = "a.zip!/b.dcm"
FOLDER_FILE = "a.zip\ufffd21/b.dcm"


def test_a_member_and_a_file_of_a_folder_named_like_it_are_both_kept(
    store: Store, tmp_path: Path
) -> None:
    """Both are stored under their own location; reruns (with --prune) change
    nothing instead of swapping one for the other."""
    root = twins(tmp_path / "d")
    first = index_paths(store, [root], workers=1, prune=True)
    assert (first.indexed, first.error_count) == (2, 0)
    stored = locations(store)
    assert stored == {UID + "1": f"{root}/{MEMBER}", UID + "2": f"{root}/{FOLDER_FILE}"}
    answers = export(store)
    for _ in range(2):
        again = index_paths(store, [root], workers=1, prune=True)
        assert (again.unchanged, again.indexed, again.error_count) == (2, 0, 0)
        assert locations(store) == stored
        assert export(store) == answers


def test_pruning_the_folder_leaves_the_archive_members(
    store: Store, tmp_path: Path
) -> None:
    """``--prune`` of folder ``a.zip!`` forgets its own files only, never the
    members of ``a.zip`` (whose locations start with ``a.zip!/``)."""
    root = twins(tmp_path / "d")
    index_paths(store, [root], workers=1)
    shutil.rmtree(root / "a.zip!")
    (root / "a.zip!").mkdir()
    report = index_paths(store, [root / "a.zip!"], workers=1, prune=True)
    assert report.files_seen == 0
    assert locations(store) == {UID + "1": f"{root}/{MEMBER}"}


def respell(store: Store, new: str, old: str) -> None:
    """Store ``new`` as an older metastore did: under ``old``."""
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(t.sources).where(t.sources.c.location == new).values(location=old)
        )


@pytest.mark.parametrize("wadors_root", [None, ROOT])
def test_a_location_stored_before_the_escape_is_converted(
    store: Store, tmp_path: Path, wadors_root: str | None
) -> None:
    """A database written before names ending in ``!`` were escaped holds
    ``.../x!/1.dcm``.  The next run (without --prune) reads the file again and
    stores it under its new location in place of the old one: no duplicate,
    no error, the same answers; the run after that finds it unchanged."""
    root = tmp_path / "d"
    write_ct(root / "x!" / "1.dcm", 1)
    write_ct(root / "y" / "2.dcm", 2)
    index_paths(store, [root], workers=1, wadors_root=wadors_root)
    answers = export(store)
    new = f"{root}/x\ufffd21/1.dcm"
    respell(store, new, f"{root}/x!/1.dcm")
    report = index_paths(store, [root], workers=1, wadors_root=wadors_root)
    assert (report.indexed, report.unchanged, report.error_count) == (1, 1, 0)
    assert locations(store)[UID + "1"] == new
    assert set(store.known_sources()) == {new, f"{root}/y/2.dcm"}
    assert store.errors() == []
    assert export(store) == answers
    again = index_paths(store, [root], workers=1, wadors_root=wadors_root)
    assert (again.unchanged, again.indexed) == (2, 0)


@pytest.mark.parametrize("stored_first", ["member", "folder file"])
def test_an_old_shared_location_ends_as_two(
    store: Store, tmp_path: Path, stored_first: str
) -> None:
    """A database holding ``a.zip!/b.dcm`` from either twin (the old shared
    spelling) ends with both, each under its own location, in one run."""
    root = twins(tmp_path / "d")
    only = root / ("a.zip" if stored_first == "member" else "a.zip!")
    index_paths(store, [only], workers=1)
    if stored_first == "folder file":
        respell(store, f"{root}/{FOLDER_FILE}", f"{root}/{MEMBER}")
    report: IndexReport = index_paths(store, [root], workers=1, prune=True)
    assert report.error_count == 0
    assert locations(store) == {
        UID + "1": f"{root}/{MEMBER}",
        UID + "2": f"{root}/{FOLDER_FILE}",
    }
    again = index_paths(store, [root], workers=1, prune=True)
    assert (again.unchanged, again.error_count) == (2, 0)


def test_an_old_location_rewritten_as_another_instance_settles_its_series(
    db_url: str, tmp_path: Path
) -> None:
    """The old spelling's file now holds another instance in another series:
    converting it removes the old instance, and the series and study it was
    in take the attributes of the lowest instance left (read back), as a
    clean index of the files has them; no series is left empty."""
    from reliability import problems, searched

    root = tmp_path / "d"
    write_ct(root / "x!" / "1.dcm", 1, patient_name="Old^One")
    write_ct(root / "y" / "2.dcm", 2, patient_name="Other^Two")
    with Store(db_url) as store:
        index_paths(store, [root], workers=1)
        respell(store, f"{root}/x\ufffd21/1.dcm", f"{root}/x!/1.dcm")
    write_ct(root / "x!" / "1.dcm", 1, series=2, patient_name="New^One")
    with Store(db_url) as store:
        report = index_paths(store, [root], workers=1)
        assert (report.indexed, report.unchanged, report.error_count) == (1, 1, 0)
        assert set(locations(store)) == {UID + "2", UID[:-2] + "2.1"}
    clean = f"sqlite:///{tmp_path / 'clean.sqlite'}"
    with Store(clean) as store:
        index_paths(store, [root], workers=1)
    assert searched(db_url) == searched(clean)
    [study], _ = searched(db_url)
    assert study["PatientName"] == "Other^Two"
    # (the old instance's values stay until a prune sweeps them: docs/store.md)
    assert problems(db_url, garbage=False) == {}
