"""References: an image by any imageId form, file path, zip member or SOP UID.

``Store.resolve`` finds the stored image a user means (issue 11, item 4);
``DatabaseProvider(url, wadors_root=...)`` answers a client that uses
another DICOMweb root; ``metastore get`` and ``metastore tags`` take any of
these references, with ``--frame N``.  Both backends.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from dicom_samples import CT, EMRI, copy, dicom_json, sample_path, write_json, zip_of

from metastore import DatabaseProvider, Registry, index_paths
from metastore.cli import cli
from metastore.errors import (
    AmbiguousReferenceError,
    ImageNotFoundError,
    InvalidImageIdError,
)
from metastore.store import Store

ROOT = "https://pacs.example/dicomweb"
CLIENT = "http://127.0.0.1:8042/dicomweb"
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
CT_SERIES = "1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322"
CT_SOP = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
MR_SOP = pydicom.dcmread(sample_path(EMRI), stop_before_pixels=True).SOPInstanceUID
SMALL_MR = pydicom.dcmread(sample_path("MR_small.dcm"), stop_before_pixels=True)


def run(*args: str, db_url: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--db", db_url], catch_exceptions=False)


def uri(path: Path) -> str:
    return path.resolve().as_uri()


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """CT (1 frame), the enhanced MR (10 frames), a zip member with a space in
    its name, a DICOM JSON file of two instances, and a duplicate of CT."""
    src = tmp_path / "src"
    copy(CT, src / "ct.dcm")
    copy(EMRI, src / "mr.dcm")
    zip_of(src / "a.zip", {"d/mr small.dcm": sample_path("MR_small.dcm")})
    write_json(
        src / "two.json", [dicom_json("MR2_UNCR.dcm"), dicom_json("JPGExtended.dcm")]
    )
    copy(CT, src / "zz" / "copy-of-ct.dcm")  # a duplicate: not stored
    return src


@pytest.fixture
def files(db_url: str, archive: Path) -> str:
    """The archive indexed without a root: wadouri imageIds for its files."""
    with Store(db_url) as store:
        report = index_paths(store, [archive], workers=1)
    assert report.duplicates == 1 and report.problem_count == 0
    return db_url


def test_every_spelling_of_an_image_resolves_to_it(
    files: str, archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored, frameless, &frame=, dicomweb:, another percent-encoding, paths, UIDs."""
    ct = f"wadouri:{uri(archive / 'ct.dcm')}?frame=1"
    mr = uri(archive / "mr.dcm")
    member = f"wadouri:{uri(archive / 'a.zip')}!/d/mr%20small.dcm?frame=1"
    monkeypatch.chdir(archive.parent)
    cases: list[tuple[str, int | None, str, int]] = [
        (ct, None, ct, 1),
        (ct.removesuffix("?frame=1"), None, ct, 1),  # wadouri without a frame: 1
        ("dicomweb:" + ct.partition(":")[2], None, ct, 1),
        (f"wadouri:{mr}&frame=3", None, f"wadouri:{mr}?frame=3", 3),
        (f"wadouri:{mr}", 4, f"wadouri:{mr}?frame=4", 4),
        (member.replace("%20", " "), None, member, 1),  # spelled otherwise
        (uri(archive / "ct.dcm"), None, ct, 1),  # a bare file URI
        (str(archive / "ct.dcm"), None, ct, 1),  # absolute path
        ("src/ct.dcm", None, ct, 1),  # relative path
        ("src/./zz/../mr.dcm", 10, f"wadouri:{mr}?frame=10", 10),
        ("src/a.zip!/d/mr small.dcm", None, member, 1),  # a zip member
        (CT_SOP, None, ct, 1),  # a SOP Instance UID
        (MR_SOP, 2, f"wadouri:{mr}?frame=2", 2),
    ]
    with Store(files) as store:
        for ref, frame, image_id, number in cases:
            found = store.resolve(ref, frame)
            assert (found.image_id, found.frame) == (image_id, number), ref
        assert store.resolve(member).sop_instance_uid == SMALL_MR.SOPInstanceUID


def test_references_that_name_no_one_image(files: str, archive: Path) -> None:
    """Each mistake is its own error, naming what the store holds instead."""
    mr = uri(archive / "mr.dcm")
    with Store(files) as store:
        with pytest.raises(AmbiguousReferenceError, match="names frame 2, not frame 3"):
            store.resolve(f"wadouri:{mr}?frame=2", 3)
        with pytest.raises(AmbiguousReferenceError, match="holds 2 stored instances"):
            store.resolve(str(archive / "two.json"))
        with pytest.raises(ImageNotFoundError, match="frames 1 to 10"):
            store.resolve(str(archive / "mr.dcm"), 11)
        with pytest.raises(ImageNotFoundError, match=r"was not stored \(duplicate"):
            store.resolve(str(archive / "zz" / "copy-of-ct.dcm"))
        with pytest.raises(ImageNotFoundError, match="is not in the store"):
            store.resolve(str(archive / "a.zip"))  # there, but not an image
        with pytest.raises(ImageNotFoundError, match="no imageId, indexed file"):
            store.resolve(str(archive / "nope.dcm"))
        with pytest.raises(ImageNotFoundError, match="no imageId, indexed file"):
            store.resolve("1.2.3.4")
        with pytest.raises(InvalidImageIdError):
            store.resolve("wadors:http://x/frames/1")


@pytest.fixture
def rooted(db_url: str, archive: Path) -> str:
    """The archive indexed under ROOT: wadors imageIds."""
    with Store(db_url) as store:
        paths = [archive / "ct.dcm", archive / "mr.dcm"]
        assert index_paths(store, paths, wadors_root=ROOT, workers=1).ok
    return db_url


def wadors(root: str, sop: str = CT_SOP, frame: int | None = 1) -> str:
    base = f"wadors:{root}/studies/{CT_STUDY}/series/{CT_SERIES}/instances/{sop}"
    return base if frame is None else f"{base}/frames/{frame}"


def test_wadors_without_frames_and_under_another_root(rooted: str) -> None:
    """No /frames/: frame 1.  Another root is another server's image."""
    with Store(rooted) as store:
        assert store.resolve(wadors(ROOT, frame=None)).image_id == wadors(ROOT)
        with pytest.raises(
            ImageNotFoundError, match="is stored as 'wadors:https://pacs"
        ):
            store.resolve(wadors(CLIENT))
        with pytest.raises(ImageNotFoundError, match="stored in study"):
            store.resolve(wadors(ROOT).replace(CT_SERIES, "1.2.3"))


@pytest.mark.parametrize("root", [None, ROOT], ids=["files", "rooted"])
def test_database_provider_re_roots(
    db_url: str, archive: Path, root: str | None
) -> None:
    """A client's wadors imageIds are answered as the stored image's, and
    load_series hands out the client's imageIds."""
    url = db_url
    with Store(url) as store:
        paths = [archive / "ct.dcm", archive / "mr.dcm"]
        assert index_paths(store, paths, wadors_root=root, workers=1).ok
    plain = DatabaseProvider(url)
    client = DatabaseProvider(url, wadors_root=CLIENT + "/")
    try:
        stored = plain.load_series(CT_SERIES)
        (client_id,) = client.load_series(CT_SERIES)
        assert client_id == wadors(CLIENT)
        registry = Registry()
        registry.add_provider(client.get)
        expected = plain.get("imagePlaneModule", stored[0])
        assert expected is not None
        assert registry.get("imagePlaneModule", client_id) == expected
        fresh = DatabaseProvider(url, wadors_root=CLIENT)  # a miss, not the cache
        assert fresh.get("imagePlaneModule", wadors(CLIENT)) == expected
        assert fresh.get("imagePlaneModule", wadors(CLIENT, frame=None)) == expected
        assert fresh.get("imagePlaneModule", stored[0]) == expected  # still answered
        wrong = wadors(CLIENT).replace(CT_SERIES, "1.2.3")
        assert fresh.get("imagePlaneModule", wrong) is None
        assert fresh.get("imagePlaneModule", wadors(CLIENT, frame=2)) is None
        assert plain.get("imagePlaneModule", wadors(CLIENT)) is None  # no re-root
        fresh.close()
    finally:
        plain.close()
        client.close()
    mr = DatabaseProvider(url, wadors_root=CLIENT)
    try:
        frames = mr.load_series(
            str(pydicom.dcmread(sample_path(EMRI)).SeriesInstanceUID)
        )
        assert len(frames) == 10 and all(
            i.startswith(f"wadors:{CLIENT}/") for i in frames
        )
        assert frames[2].endswith(f"/instances/{MR_SOP}/frames/3")
        assert mr.get("imagePixelModule", frames[2]) is not None
    finally:
        mr.close()


@pytest.mark.parametrize("root", [None, ROOT], ids=["files", "rooted"])
def test_re_rooted_image_ids_are_read_ahead(
    db_url: str, archive: Path, root: str | None
) -> None:
    """A miss on a client's imageId reads the series ahead under the client's
    imageIds: walking its frames re-rooted costs that one miss, and each
    answer is the stored frame's."""
    with Store(db_url) as store:
        assert index_paths(store, [archive / "mr.dcm"], wadors_root=root, workers=1).ok
    series = str(pydicom.dcmread(sample_path(EMRI)).SeriesInstanceUID)
    with DatabaseProvider(db_url) as plain:
        stored = plain.load_series(series)
        with DatabaseProvider(db_url, wadors_root=CLIENT) as listing:
            client = listing.load_series(series)
        assert len(client) == len(stored) == 10
        fresh = DatabaseProvider(db_url, wadors_root=CLIENT)  # read-ahead: default
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        sa.event.listen(fresh.store.engine, "before_cursor_execute", count)
        try:
            first = fresh.get("imagePlaneModule", client[0])
            assert first is not None
            assert first == plain.get("imagePlaneModule", stored[0])
            assert statements  # the miss
            statements.clear()
            for mine, theirs in zip(client[1:], stored[1:], strict=True):
                for type in ("imagePlaneModule", "imagePixelModule"):
                    answer = fresh.get(type, mine)
                    assert answer is not None
                    assert answer == plain.get(type, theirs)
            assert statements == []  # every other frame came with the first
        finally:
            sa.event.remove(fresh.store.engine, "before_cursor_execute", count)
            fresh.close()


def test_get_takes_any_reference(files: str, archive: Path) -> None:
    """`metastore get` through a path, a UID, --frame; exit 1 and 2 as promised."""
    by_path = run("get", "generalSeriesModule", str(archive / "ct.dcm"), db_url=files)
    assert by_path.exit_code == 0, by_path.output
    assert json.loads(by_path.stdout)["seriesInstanceUID"] == CT_SERIES
    third = run("get", "imagePlaneModule", MR_SOP, "--frame", "3", db_url=files)
    assert third.exit_code == 0, third.output
    with Store(files) as store:
        want = store.image_modules(f"wadouri:{uri(archive / 'mr.dcm')}?frame=3")
    assert want is not None
    assert json.loads(third.stdout) == want["imagePlaneModule"]
    past = run("get", "imagePlaneModule", MR_SOP, "--frame", "11", db_url=files)
    assert (past.exit_code, past.stdout) == (1, "")
    assert "no imagePlaneModule" in past.stderr and "frames 1 to 10" in past.stderr
    many = run("get", "imagePlaneModule", str(archive / "two.json"), db_url=files)
    assert many.exit_code == 2 and "by its SOP Instance UID" in many.stderr
    zero = run("get", "imagePlaneModule", CT_SOP, "--frame", "0", db_url=files)
    assert zero.exit_code == 2


def test_tags_prints_the_stored_dicom_json(files: str, archive: Path) -> None:
    """Every element, or the named ones by keyword or tag (private too)."""
    with Store(files) as store:
        stored: dict[str, Any] | None = store.dicom_json(CT_SOP)
    assert stored is not None
    everything = run("tags", str(archive / "ct.dcm"), "--format", "json", db_url=files)
    assert everything.exit_code == 0, everything.output
    assert json.loads(everything.stdout) == stored
    named = run(
        "tags", CT_SOP, "SliceThickness", "00091001", "(0010,0010)", db_url=files
    )
    assert named.exit_code == 0, named.output
    assert list(json.loads(named.stdout)) == ["00180050", "00091001", "00100010"]
    assert json.loads(named.stdout)["00180050"] == stored["00180050"]
    table = run("tags", CT_SOP, "SliceThickness", "--format", "table", db_url=files)
    assert "(0018,0050)" in table.stdout and "SliceThickness" in table.stdout
    absent = run("tags", CT_SOP, "SliceThickness", "EchoTime", db_url=files)
    assert absent.exit_code == 1
    assert "EchoTime (0018,0081): not in the instance" in absent.stderr
    assert list(json.loads(absent.stdout)) == ["00180050"]
    unknown = run("tags", CT_SOP, "SliceThicknes", db_url=files)
    assert unknown.exit_code == 2 and "'SliceThicknes'" in unknown.stderr
    nothing = run("tags", str(archive / "nope.dcm"), db_url=files)
    assert (nothing.exit_code, nothing.stdout) == (1, "")
    assert os.fspath(archive / "nope.dcm") in nothing.stderr
