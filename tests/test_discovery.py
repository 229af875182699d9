"""Discovery: folders, zips and sniffing sources by content, never by name."""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import pytest
from dicom_samples import CT, copy, dicom_json, junk, sample_path, write_json, zip_of
from hypothesis import given
from hypothesis import strategies as st

from metastore.index.discovery import (
    HEAD_SIZE,
    Entry,
    Kind,
    discover,
    shadowed_error,
    sniff,
)
from metastore.locations import legacy_location, location_of, member_location
from metastore.records import ErrorRecord


def kind_of(path: Path) -> Kind:
    """Sniff a file as the reader does."""
    with path.open("rb") as f:
        return sniff(f.read(HEAD_SIZE), path.stat().st_size)


def locations(found: list[Entry | ErrorRecord]) -> list[str]:
    """Locations of what discovery yielded, in order."""
    return [f.source.location if isinstance(f, Entry) else f.location for f in found]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("CT_small.dcm", Kind.PART10),
        ("ExplVR_BigEnd.dcm", Kind.PART10),
        ("rtstruct.dcm", Kind.RAW),  # implicit VR, no preamble
        ("ExplVR_LitEndNoMeta.dcm", Kind.RAW),
        ("ExplVR_BigEndNoMeta.dcm", Kind.RAW),
        ("OT-PAL-8-face.dcm", Kind.RAW),  # starts with a group length
        ("test1.json", Kind.JSON),
        ("README.txt", Kind.OTHER),
        ("crayons.icc", Kind.OTHER),
        ("zipMR.gz", Kind.OTHER),
        ("rtplan.dump", Kind.OTHER),
        ("no_meta.dcm", Kind.OTHER),  # a stray leading byte: pydicom misreads it too
    ],
)
def test_sniff_recognises_pydicom_test_files(name: str, kind: Kind) -> None:
    """Each of pydicom's test files is sniffed as what it really is."""
    assert kind_of(sample_path(name)) is kind


def test_sniff_refuses_random_bytes(tmp_path: Path) -> None:
    """Random binaries are never taken for DICOM (a few look like JSON)."""
    for seed in range(300):
        path = junk(tmp_path / f"junk{seed}", size=2000, seed=seed)
        assert kind_of(path) in (Kind.OTHER, Kind.JSON), seed


def test_sniff_empty_zip_and_json_object(tmp_path: Path) -> None:
    """Empty files, zip archives and JSON objects (after whitespace) are told apart."""
    (tmp_path / "empty").write_bytes(b"")
    zip_of(tmp_path / "a.zip", {"x": b"1"})
    (tmp_path / "obj").write_bytes(b'\xef\xbb\xbf \n {"00080018": {}}')
    assert kind_of(tmp_path / "empty") is Kind.EMPTY
    assert kind_of(tmp_path / "a.zip") is Kind.ZIP
    assert kind_of(tmp_path / "obj") is Kind.JSON


def test_dicm_wins_over_a_zip_looking_preamble(tmp_path: Path) -> None:
    """A Part 10 preamble may start like a zip; the DICM magic decides."""
    data = bytearray(sample_path(CT).read_bytes())
    data[:4] = b"PK\x03\x04"
    (tmp_path / "polyglot").write_bytes(bytes(data))
    assert kind_of(tmp_path / "polyglot") is Kind.PART10


def test_discover_walks_folders_in_sorted_order(tmp_path: Path) -> None:
    """Folders are walked recursively, entries in name order, any file name."""
    for name in ["b/2.dcm", "a/z", "a/sub dir é/x y.dcm", "c.json", "a/1"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = list(discover([tmp_path]))
    expected = ["a/1", "a/sub dir é/x y.dcm", "a/z", "b/2.dcm", "c.json"]
    assert locations(found) == [str(tmp_path / name) for name in expected]


def test_discover_records_size_and_mtime(tmp_path: Path) -> None:
    """Each entry carries its file's size and modification time in ns."""
    path = copy(CT, tmp_path / "ct")
    (entry,) = discover([path])
    assert isinstance(entry, Entry)
    assert entry.source.size == path.stat().st_size
    assert entry.source.mtime_ns == path.stat().st_mtime_ns
    assert entry.member is None


def test_discover_survives_symlink_loops(tmp_path: Path) -> None:
    """A symlink back to an ancestor folder is not followed twice."""
    copy(CT, tmp_path / "a" / "ct.dcm")
    os.symlink("..", tmp_path / "a" / "loop")
    os.symlink(tmp_path / "a", tmp_path / "b")
    found = locations(list(discover([tmp_path])))
    assert found == [str(tmp_path / "a" / "ct.dcm")]


def test_discover_follows_symlinked_files_and_ignores_dangling_ones(
    tmp_path: Path,
) -> None:
    """A symlink to a file is a source; a dangling symlink is nothing."""
    target = copy(CT, tmp_path / "data" / "ct.dcm")
    os.symlink(target, tmp_path / "link.dcm")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    found = locations(list(discover([tmp_path])))
    assert found == [str(target), str(tmp_path / "link.dcm")]


def test_discover_lists_zip_members_without_extracting(tmp_path: Path) -> None:
    """A zip (found by content) yields its members in name order, folders left out."""
    archive = zip_of(
        tmp_path / "archive.data",
        {"z/ct.dcm": sample_path(CT), "a/é x.json": b"{}", "a/": b""},
    )
    found = list(discover([tmp_path]))
    assert locations(found) == [f"{archive}!/a/é x.json", f"{archive}!/z/ct.dcm"]
    member = found[1]
    assert isinstance(member, Entry)
    assert (member.path, member.member) == (str(archive), "z/ct.dcm")
    assert member.source.size == archive.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive.data"]


def test_discover_reports_a_damaged_zip(tmp_path: Path) -> None:
    """A file that starts like a zip but has no central directory is an error."""
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    (found,) = discover([tmp_path / "bad.zip"])
    assert isinstance(found, ErrorRecord)
    assert found.kind == "unreadable"
    assert "zip" in found.reason


def test_discover_reports_a_missing_path(tmp_path: Path) -> None:
    """A path that does not exist is reported, not raised."""
    (found,) = discover([tmp_path / "nope"])
    assert isinstance(found, ErrorRecord)
    assert found.location == str(tmp_path / "nope")


def test_discover_is_lazy(tmp_path: Path) -> None:
    """Discovery is a generator: nothing is listed before it is asked for."""
    write_json(tmp_path / "a.json", dicom_json())
    found = discover([tmp_path])
    assert iter(found) is found
    assert len(list(found)) == 1


# -- locations: one per source -------------------------------------------------


def test_a_folder_named_like_an_archive_gets_its_own_locations(tmp_path: Path) -> None:
    """Folder ``a.zip!`` holding ``b.dcm`` is not member ``b.dcm`` of ``a.zip``.

    Both used to be ``.../a.zip!/b.dcm``, so every rerun stored one and
    deleted the other.  A ``!`` ending a name is escaped; a ``!`` elsewhere
    and the members' names are left alone.
    """
    zip_of(tmp_path / "a.zip", {"b.dcm": sample_path(CT), "x!/y!": b"1"})
    copy(CT, tmp_path / "a.zip!" / "b.dcm")
    copy(CT, tmp_path / "c!d.dcm")
    found = locations(list(discover([tmp_path])))
    assert found == [
        f"{tmp_path}/a.zip!/b.dcm",
        f"{tmp_path}/a.zip!/x!/y!",
        f"{tmp_path}/a.zip\ufffd21/b.dcm",
        f"{tmp_path}/c!d.dcm",
    ]
    assert len(set(found)) == len(found)


_PATH_CHARS = st.sampled_from(["a", "!", "/", "\ufffd", "2", "1", "\udcfc", "u"])


@given(st.lists(_PATH_CHARS, max_size=10), st.lists(_PATH_CHARS, max_size=6))
def test_no_path_location_reads_as_a_member(path: list[str], member: list[str]) -> None:
    """A path's location never holds ``!/`` nor ends with ``!``, so the first
    ``!/`` of any location separates an archive from its member; distinct
    paths keep distinct locations; and the spelling from before names ending
    in ``!`` were escaped is recovered (``legacy_location``)."""
    text = "/" + "".join(path)
    location = location_of(text)
    assert "!/" not in location and not location.endswith("!")
    assert location_of(text + "x") != location
    archive_member = member_location(location_of("/a"), "".join(member))
    assert archive_member != location
    # the old spelling escaped only text (as member names still are)
    old = member_location("", text)[len("!/") :]
    assert (legacy_location(location) or location) == old
    assert legacy_location(archive_member) is None


def test_same_named_zip_members_are_reported(tmp_path: Path) -> None:
    """Two members of one name give one entry (the last, which is what is read
    by that name) that knows it hides the other."""
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        zf.writestr("b.dcm", b"first")
        zf.writestr("b.dcm", b"second")
        zf.writestr("c.dcm", b"other")
    found = list(discover([archive]))
    assert locations(found) == [f"{archive}!/b.dcm", f"{archive}!/c.dcm"]
    first, second = found
    assert isinstance(first, Entry) and isinstance(second, Entry)
    assert (first.shadowed, second.shadowed) == (1, 0)
    error = shadowed_error(first)
    assert (error.location, error.kind) == (f"{archive}!/b.dcm", "unreadable")
    assert "another member named 'b.dcm'" in error.reason
