"""The direct Part 10 reader answers exactly as ``dcmread`` + ``dataset_to_dicom_json``.

``metastore.index.read`` reads most Part 10 files without building pydicom's
``FileDataset`` (``_read_part10_direct``, with pydicom's own
``data_element_generator``); whatever it is not sure of goes to the
``dcmread`` reader (``_read_part10_dataset``), as every file did before.
Every pydicom and pydicom-data test file, and fuzzed files (cut, flipped,
spliced, with bytes inserted or lengths overwritten), is read both ways: the
outcome must be identical (status, errors and their reasons, every
instance's search attributes, its DICOM JSON in order and with its JSON
types, every image's imageId and module values).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_samples import sample_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from metastore.index import read
from metastore.index.discovery import Entry, discover
from metastore.records import LazyImages, Outcome

ROOT = "http://localhost/dicomweb"
#: The fuzzed files: explicit and implicit VR, an enhanced multi-frame,
#: undefined-length sequences (an SR without pixel data, encapsulated
#: JPEG 2000, a private sequence in implicit VR), ISO 2022 text that only
#: pydicom decodes.
FUZZED = (
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "emri_small.dcm",
    "reportsi.dcm",
    "JPEG2000.dcm",
    "nested_priv_SQ.dcm",
    "chrH31.dcm",
)
_SEARCH_FIELDS = (
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "sop_class_uid",
    "patient_id",
    "patient_name",
    "study_date",
    "study_time",
    "accession_number",
    "study_description",
    "modality",
    "series_number",
    "instance_number",
    "number_of_frames",
)


def _strict(outcome: Outcome) -> str:
    """The whole outcome as text: key order, int/float/bool and NaN all count."""
    instances = []
    for record in outcome.instances:
        fields: dict[str, Any] = {k: getattr(record, k) for k in _SEARCH_FIELDS}
        fields["source"] = repr(record.source)
        fields["dicom_json"] = json.dumps(record.dicom_json, default=repr)
        if isinstance(record.images, LazyImages):
            fields["images"] = ["lazy", len(record.images)]
        else:
            fields["images"] = [
                [
                    i.image_id,
                    i.frame,
                    json.dumps(i.modules, sort_keys=True, default=repr),
                ]
                for i in record.images
            ]
        instances.append(fields)
    return json.dumps(
        {
            "location": outcome.location,
            "status": outcome.status,
            "reason": outcome.reason,
            "errors": [[e.location, e.kind, e.reason] for e in outcome.errors],
            "instances": instances,
        }
    )


class Paths:
    """Which reader answered, per location (``direct`` or ``dataset``)."""

    def __init__(self) -> None:
        self.by_location: dict[str, str] = {}


@contextmanager
def _direct_off() -> Iterator[None]:
    """Read every Part 10 file with ``dcmread``, as before the direct reader."""
    saved = read._read_part10_direct
    read._read_part10_direct = lambda *args: None
    try:
        yield
    finally:
        read._read_part10_direct = saved


@contextmanager
def _watching(paths: Paths) -> Iterator[None]:
    saved = read._read_part10_direct

    def spy(entry: Entry, *args: Any) -> Outcome | None:
        outcome = saved(entry, *args)
        answered = "direct" if outcome is not None else "dataset"
        paths.by_location[entry.source.location] = answered
        return outcome

    read._read_part10_direct = spy
    try:
        yield
    finally:
        read._read_part10_direct = saved


def _read_all(path: Path | str, root: str | None) -> list[str]:
    zips = read.ReadCache()
    try:
        return [
            _strict(read.read_entry(entry, root, zips))
            for entry in discover([path])
            if isinstance(entry, Entry)
        ]
    finally:
        zips.close()


def check_alike(path: Path | str, root: str | None = None) -> Paths:
    """Read ``path`` with and without the direct reader; the outcomes are equal."""
    paths = Paths()
    with _watching(paths):
        direct = _read_all(path, root)
    with _direct_off():
        before = _read_all(path, root)
    assert len(direct) == len(before)
    for ours, theirs in zip(direct, before, strict=True):
        assert ours == theirs
    return paths


def _test_files() -> list[str]:
    files = set(get_testdata_files()) | {
        f for f in get_charset_files() if f.endswith(".dcm")
    }
    return sorted(f for f in files if os.path.isfile(f))


TEST_FILES = _test_files()
#: Which reader answered each test file (filled by the test below).
ANSWERED: dict[str, str] = {}


@pytest.mark.parametrize(
    "path",
    TEST_FILES,
    ids=[f"{Path(p).parent.name}/{Path(p).name}" for p in TEST_FILES],
)
def test_every_test_file_reads_alike(path: str) -> None:
    """Every pydicom and pydicom-data test file: the same outcome both ways."""
    for root in (None, ROOT):
        paths = check_alike(path, root)
    ANSWERED.update({Path(k).name: v for k, v in paths.by_location.items()})


def test_the_direct_reader_answers_for_most_files() -> None:
    """The comparison above is not vacuous: most files take the direct reader.

    Including the ones whose values only pydicom converts (ISO 2022 text:
    the dataset is built from the raw elements) and undefined-length
    sequences (read on through the truncation guard).
    """
    if len(ANSWERED) < len(TEST_FILES) // 2:  # run alone: read them here
        for path in TEST_FILES:
            paths = Paths()
            with _watching(paths):
                _read_all(path, None)
            ANSWERED.update({Path(k).name: v for k, v in paths.by_location.items()})
    direct = [name for name, how in ANSWERED.items() if how == "direct"]
    assert len(direct) > 0.75 * len(ANSWERED), sorted(set(ANSWERED) - set(direct))
    for name in FUZZED:
        assert ANSWERED[name] == "direct", name
    # deflated and big endian data, a DICOMDIR, and data not encoded as its
    # transfer syntax says (pydicom warns and follows the data) are dcmread's
    odd = ("image_dfl.dcm", "MR_small_bigendian.dcm", "DICOMDIR", "SC_rgb_jpeg.dcm")
    for name in odd:
        assert ANSWERED[name] == "dataset", name


def test_zip_members_read_alike(tmp_path: Path) -> None:
    """The direct reader reads zip members (stored and deflated) the same way."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for n, name in enumerate(FUZZED):
            method = zipfile.ZIP_DEFLATED if n % 2 else zipfile.ZIP_STORED
            z.write(sample_path(name), f"m/{name}", compress_type=method)
    paths = check_alike(archive, ROOT)
    assert set(paths.by_location.values()) == {"direct"}


def test_a_large_value_in_an_undefined_length_sequence_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past an undefined length, reads go through the guard: the limit holds.

    pydicom reads the items of an undefined-length sequence by itself; a
    value in one larger than MAX_VALUE_BYTES fails the file with the dataset
    reader's reason instead of being read into memory.
    """
    monkeypatch.setattr(read, "MAX_VALUE_BYTES", 4096)
    ds = pydicom.dcmread(sample_path("CT_small.dcm"))
    item = Dataset()
    item.add_new(0x00091010, "OB", bytes(5000))  # private, in the item
    item.add_new(0x00090010, "LO", "METASTORE TEST")
    ds.add_new(0x00400260, "SQ", Sequence([item]))  # PerformedProtocolCodeSequence
    ds[0x00400260].is_undefined_length = True
    path = tmp_path / "nested.dcm"
    ds.save_as(path, enforce_file_format=True)
    check_alike(path)
    outcome = read.read_entry(next(_entries(path)), None, read.ReadCache())
    assert outcome.status == "failed"
    assert "is 5000 bytes, more than the 4096 bytes" in outcome.errors[0].reason
    # and under the limit it is read directly, with the sequence
    monkeypatch.setattr(read, "MAX_VALUE_BYTES", 8192)
    paths = check_alike(path)
    assert set(paths.by_location.values()) == {"direct"}


def test_undefined_length_sequences_with_values_only_pydicom_converts(
    tmp_path: Path,
) -> None:
    """Sequences pydicom reads into datasets, and text only pydicom decodes.

    The direct decoding gives up on the ISO 2022 names without converting
    anything in place (not in the sequence items either), so the dataset
    read_partial would build is built from the same elements and converted:
    still no dcmread, and the same answer.
    """
    ds = pydicom.dcmread(sample_path("chrH31.dcm"))  # ISO 2022 IR 87 names
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.3.4"
    item = Dataset()
    item.PatientName = ds.PatientName  # a name only pydicom decodes, nested
    item.CodeValue = "T-04000"
    inner = Dataset()
    inner.CodeMeaning = "nested"
    item.add_new(0x00400260, "SQ", Sequence([inner]))
    item[0x00400260].is_undefined_length = True
    ds.add_new(0x00082218, "SQ", Sequence([item]))  # AnatomicRegionSequence
    ds[0x00082218].is_undefined_length = True
    path = tmp_path / "nested names.dcm"
    ds.save_as(path, enforce_file_format=True)
    paths = check_alike(path)
    assert set(paths.by_location.values()) == {"direct"}
    (outcome,) = [read.read_entry(e, None, read.ReadCache()) for e in _entries(path)]
    (instance,) = outcome.instances
    nested = instance.dicom_json["00082218"]["Value"][0]
    assert nested["00100010"]["Value"][0]["Alphabetic"] == str(
        ds.PatientName.alphabetic
    )


def _entries(path: Path) -> Iterator[Entry]:
    return (e for e in discover([path]) if isinstance(e, Entry))


# --------------------------------------------------------------------------
# fuzzed files


def _mutations(data: st.DataObject, body: bytes) -> dict[str, bytes]:
    files = {}
    cut = data.draw(st.integers(0, len(body)), label="cut")
    files["cut"] = body[:cut]
    flipped = bytearray(body)
    header = min(len(body), 2048)
    for at in data.draw(
        st.lists(st.integers(0, header - 1), min_size=1, max_size=6), label="flips"
    ):
        flipped[at] ^= data.draw(st.integers(1, 255), label="mask")
    files["flipped"] = bytes(flipped)
    at = data.draw(st.integers(128, len(body)), label="insert at")
    junk = data.draw(st.binary(min_size=1, max_size=24), label="inserted")
    files["inserted"] = body[:at] + junk + body[at:]
    # a 16- or 32-bit length (or anything there) replaced by a telling value
    at = data.draw(st.integers(132, max(132, header - 4)), label="overwrite at")
    value = data.draw(
        st.sampled_from(
            [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff", b"\x00\x10\x00\x00"]
        ),
        label="overwrite",
    )
    files["overwritten"] = body[:at] + value + body[at + len(value) :]
    start, stop = sorted(
        data.draw(st.lists(st.integers(132, header), min_size=2, max_size=2))
    )
    files["repeated"] = body[:stop] + body[start:stop] + body[stop:]
    return files


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzzed_files_read_alike(data: st.DataObject) -> None:
    """Cut, flipped, spliced, inserted into, overwritten: the same outcome both ways."""
    bodies = {name: sample_path(name).read_bytes() for name in FUZZED}
    # headers read from the first bytes alone, or read on from the file
    head = data.draw(st.sampled_from([read.HEAD_BYTES, 400, 1500]), label="head")
    saved, read.HEAD_BYTES = read.HEAD_BYTES, head
    try:
        _fuzz(data, bodies)
    finally:
        read.HEAD_BYTES = saved


def _fuzz(data: st.DataObject, bodies: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, body in bodies.items():
            for kind, mutated in _mutations(data, body).items():
                (folder / f"{kind} {name}").write_bytes(mutated)
            other = bodies[data.draw(st.sampled_from(FUZZED), label="other")]
            at = data.draw(st.integers(132, len(body)), label="splice at")
            resume = data.draw(st.integers(0, len(other)), label="resume at")
            (folder / f"spliced {name}").write_bytes(body[:at] + other[resume:])
        check_alike(folder)


@pytest.mark.parametrize("head", [140, 190, 333, 1000, 2048])
def test_headers_longer_than_the_first_read_read_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: int
) -> None:
    """A header that does not fit in HEAD_BYTES is read on from the file.

    (A file meta that does not fit is left to dcmread: it never happens
    with the real HEAD_BYTES.)
    """
    monkeypatch.setattr(read, "HEAD_BYTES", head)
    for name in FUZZED:
        body = sample_path(name).read_bytes()
        (tmp_path / name).write_bytes(body)
        (tmp_path / f"cut {name}").write_bytes(body[: len(body) * 2 // 3])
    paths = check_alike(tmp_path)
    if head >= 1000:
        answered = {paths.by_location[str(tmp_path / name)] for name in FUZZED}
        assert answered == {"direct"}


def test_every_cut_of_a_header_reads_alike(tmp_path: Path) -> None:
    """Cut at every byte of the header (and a little beyond), one file each."""
    for name in ("MR_small_implicit.dcm", "reportsi.dcm"):
        body = sample_path(name).read_bytes()
        end = min(len(body), 1400)
        for cut in range(120, end):
            (tmp_path / f"{name} {cut:05d}").write_bytes(body[:cut])
    check_alike(tmp_path)
