"""One DICOMweb root per store: another ``--wadors-root`` is refused, never "unchanged".

Re-running ``index`` under another root used to report every file
unchanged and keep the old imageIds.  The store records its root (revision
0005's ``settings``) and refuses a run under another, saying how to go on.
Both backends.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from dicom_samples import CT, EMRI, copy

from metastore import index_paths
from metastore.cli import cli
from metastore.errors import WadorsRootError
from metastore.store import Store, db

ROOT = "https://pacs.example/dicomweb"
OTHER = "http://viewer.example/dicomweb"


def run(*args: str, db_url: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--db", db_url], catch_exceptions=False)


def export(url: str) -> list[str]:
    with Store(url) as store:
        return [image_id for image_id, _ in store.export([])]


def stored_root(url: str) -> list[tuple[str | None]]:
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT value FROM settings")).all()
            return [tuple(row) for row in rows]
    finally:
        engine.dispose()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    copy(CT, tmp_path / "src" / "ct.dcm")
    copy(EMRI, tmp_path / "src" / "mr.dcm")
    return tmp_path / "src"


def test_another_root_is_refused_and_says_how(db_url: str, src: Path) -> None:
    """Exit 2, one line naming both roots and the way on; nothing changes."""
    assert run("index", str(src), "--wadors-root", ROOT, db_url=db_url).exit_code == 0
    before = export(db_url)
    assert before and all(i.startswith(f"wadors:{ROOT}/") for i in before)
    for args in (["--wadors-root", OTHER], []):
        result = run("index", str(src), *args, db_url=db_url)
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and f"under --wadors-root {ROOT};" in line
        assert f"index with --wadors-root {ROOT}, or into another database" in line
        assert "unchanged" not in result.output
    assert (
        "indexing under --wadors-root http://viewer"
        in run("index", str(src), "--wadors-root", OTHER, db_url=db_url).stderr
    )
    same = run("index", str(src), "--wadors-root", ROOT + "/", db_url=db_url)
    assert same.exit_code == 0 and "2 unchanged" in same.stdout
    assert export(db_url) == before


def test_a_store_made_without_a_root_refuses_one(db_url: str, src: Path) -> None:
    """The library raises WadorsRootError before reading anything."""
    with Store(db_url) as store:
        assert index_paths(store, [src], workers=1).indexed == 2
        with pytest.raises(WadorsRootError, match=r"without --wadors-root \(wadouri"):
            index_paths(store, [src], wadors_root=ROOT, workers=1)
        assert index_paths(store, [src], workers=1).unchanged == 2
    assert stored_root(db_url) == [(None,)]


def test_an_emptied_store_takes_a_new_root(db_url: str, src: Path) -> None:
    """With no instance left, nothing would mix: the new root is recorded."""
    with Store(db_url) as store:
        index_paths(store, [src], wadors_root=ROOT, workers=1)
        shutil.rmtree(src)
        src.mkdir()
        index_paths(store, [src], wadors_root=ROOT, prune=True, workers=1)
        assert store.stats()["instances"] == 0
        copy(CT, src / "ct.dcm")
        assert index_paths(store, [src], wadors_root=OTHER, workers=1).indexed == 1
    assert stored_root(db_url) == [(OTHER,)]
    assert export(db_url)[0].startswith(f"wadors:{OTHER}/")


@pytest.mark.parametrize(
    ("roots", "recorded"),
    [((ROOT,), [(ROOT,)]), ((None,), [(None,)]), ((ROOT, None), [])],
    ids=["rooted", "files", "mixed"],
)
def test_upgrade_records_the_root_of_the_stored_image_ids(
    db_url: str,
    tmp_path: Path,
    roots: tuple[str | None, ...],
    recorded: list[tuple[str | None]],
) -> None:
    """A database from before revision 0005 gets the root its imageIds share."""
    with Store(db_url) as store:
        for n, root in enumerate(roots):
            path = copy(CT if n == 0 else EMRI, tmp_path / f"s{n}" / "x.dcm")
            index_paths(store, [path], wadors_root=root, workers=1)
            if n == 0:  # a second root in one store: only as stores were before
                with store.engine.begin() as conn:
                    conn.execute(sa.text("DELETE FROM settings"))
    engine = db.create_engine(db_url)
    try:
        db.downgrade(engine, "0002")
        db.upgrade(engine)
    finally:
        engine.dispose()
    assert stored_root(db_url) == recorded
    if recorded:
        with Store(db_url) as store, pytest.raises(WadorsRootError):
            index_paths(store, [tmp_path / "s0"], wadors_root=OTHER, workers=1)
