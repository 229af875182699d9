"""Any tag of an instance: the stored DICOM JSON holds every element of the file
up to its pixel data, and the pixel data as a BulkDataURI, in every transfer
syntax (deflated included); ``Store.dataset`` gives it back as pydicom.

Files are written by pydicom in each transfer syntax, with Pixel Data, Float
Pixel Data or Double Float Pixel Data, then indexed by the real indexer on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dicom_samples import CT, sample_path
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from metastore import index_paths
from metastore.store import Store

UID_ROOT = "1.2.826.0.1.3680043.8.498.99"
NATIVE = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]
#: Pixel data element per kind: (tag, keyword, VR as stored explicitly).
PIXELS = {
    "pixel": ("7FE00010", "PixelData", "OW"),
    "float": ("7FE00008", "FloatPixelData", "OF"),
    "double": ("7FE00009", "DoubleFloatPixelData", "OD"),
}


def _ct(n: int, syntax: str, kind: str) -> Dataset:
    """CT_small.dcm with UIDs of its own, a private element and ``kind`` pixels."""
    ds = pydicom.dcmread(sample_path(CT))
    ds.StudyInstanceUID = f"{UID_ROOT}.{n}"
    ds.SeriesInstanceUID = f"{UID_ROOT}.{n}.1"
    ds.SOPInstanceUID = f"{UID_ROOT}.{n}.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = syntax
    block = ds.private_block(0x0099, "METASTORE TEST", create=True)
    block.add_new(0x01, "LO", f"private {n}")
    if kind != "pixel":
        del ds.PixelData
        ds.BitsAllocated = 32 if kind == "float" else 64
        ds.BitsStored = ds.HighBit = ds.PixelRepresentation = None
        del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
        _, keyword, vr = PIXELS[kind]
        size = ds.Rows * ds.Columns * ds.BitsAllocated // 8
        setattr(ds, keyword, bytes(range(256)) * (size // 256) + bytes(size % 256))
        ds[keyword].VR = vr
    return ds


def _write(path: Path, ds: Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    syntax = ds.file_meta.TransferSyntaxUID
    if getattr(ds, "preamble", None) is None:
        ds.preamble = bytes(128)
    pydicom.dcmwrite(
        path,
        ds,
        implicit_vr=syntax == ImplicitVRLittleEndian,
        little_endian=syntax != ExplicitVRBigEndian,
        force_encoding=True,  # the syntax asked for, whatever the source's
    )
    return path


def _rle(n: int) -> Dataset:
    """pydicom's RLE Lossless MR with UIDs of its own (encapsulated pixels)."""
    ds = pydicom.dcmread(sample_path("MR_small_RLE.dcm"))
    ds.StudyInstanceUID = f"{UID_ROOT}.{n}"
    ds.SeriesInstanceUID = f"{UID_ROOT}.{n}.1"
    ds.SOPInstanceUID = f"{UID_ROOT}.{n}.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


CASES: list[tuple[str, str]] = [
    (syntax, kind) for syntax in NATIVE for kind in PIXELS
] + [(RLELossless, "pixel")]


@pytest.fixture
def indexed(db_url: str, tmp_path: Path) -> Iterator[tuple[Store, dict[str, Path]]]:
    """Every case written as a file and indexed: ``{SOP UID: path}``."""
    files = {}
    for n, (syntax, kind) in enumerate(CASES, 1):
        ds = _rle(n) if syntax == RLELossless else _ct(n, syntax, kind)
        files[ds.SOPInstanceUID] = _write(tmp_path / "files" / f"{n}.dcm", ds)
    with Store(db_url) as store:
        report = index_paths(store, [tmp_path / "files"], workers=1)
        assert (report.indexed, report.failed) == (len(CASES), 0), report.errors
        yield store, files


def _plain(ds: Dataset) -> dict[str, Any]:
    """The elements before the pixel data, as DICOM JSON (no bulk data)."""
    return ds.to_json_dict(bulk_data_threshold=10**9)


def test_every_element_and_the_pixel_data_uri_are_stored(
    indexed: tuple[Store, dict[str, Path]],
) -> None:
    """Each transfer syntax: every element of the file, and a BulkDataURI for
    its (float / double float) pixel data with the file's VR."""
    store, files = indexed
    for (syntax, kind), (sop, path) in zip(CASES, files.items(), strict=True):
        stored = store.dicom_json(sop)
        assert stored is not None
        header = pydicom.dcmread(path, stop_before_pixels=True)
        tag, _, vr = PIXELS[kind]
        if syntax == RLELossless:
            vr = "OB"  # encapsulated
        assert stored[tag]["vr"] == vr, (syntax, kind)
        assert stored[tag]["BulkDataURI"].endswith(f"#bulkdata/{tag}"), (syntax, kind)
        expected = _plain(header)
        kept = {k: v for k, v in stored.items() if k != tag and k != "00020010"}
        assert set(kept) == set(expected), (syntax, kind)
        for key, element in expected.items():
            if "InlineBinary" not in element:
                assert kept[key] == element, (syntax, kind, key)
        assert stored["00020010"] == {"vr": "UI", "Value": [syntax]}
        private = f"private {list(files).index(sop) + 1}"
        if syntax == RLELossless:
            continue  # pydicom's file, without the private element
        if syntax == ImplicitVRLittleEndian:  # no VR in the file: UN, inline
            inline = base64.b64decode(stored["00991001"]["InlineBinary"])
            assert inline.rstrip(b" ").decode() == private
        else:
            assert stored["00991001"]["Value"] == [private]


def test_dataset_gives_every_element_back(
    indexed: tuple[Store, dict[str, Path]],
) -> None:
    """Store.dataset equals the file's header, element for element, and has
    the transfer syntax in its file meta."""
    store, files = indexed
    for (syntax, kind), (sop, path) in zip(CASES, files.items(), strict=True):
        ds = store.dataset(sop)
        assert ds is not None
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == syntax
        for element in header:
            if element.VR in ("OB", "OW", "UN"):
                continue
            assert ds[element.tag].value == element.value, (syntax, element.tag)
        keyword = PIXELS[kind][1]
        assert keyword in ds  # present, without its value (no pixels stored)
        asked: list[str] = []
        ds = store.dataset(sop, _fetcher(asked))
        assert ds is not None
        # CT_small's large private (0043,1029) is bulk data too
        assert PIXELS[kind][0] in asked
        assert ds[keyword].value == b"bulk " + PIXELS[kind][0].encode()


def _fetcher(asked: list[str]) -> Any:
    """A bulk data handler that notes the tags asked for."""

    def fetch(tag: str, vr: str, uri: str) -> bytes:
        asked.append(tag)
        assert uri.endswith(f"#bulkdata/{tag}")
        return b"bulk " + tag.encode()

    return fetch


def test_deflated_file_without_pixel_data_has_no_uri(
    db_url: str, tmp_path: Path
) -> None:
    """A deflated data set that ends before any pixel data gets no BulkDataURI."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.file_meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}.77.1.1"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = f"{UID_ROOT}.77"
    ds.SeriesInstanceUID = f"{UID_ROOT}.77.1"
    ds.Modality = "SR"
    _write(tmp_path / "sr.dcm", ds)
    with Store(db_url) as store:
        index_paths(store, [tmp_path / "sr.dcm"], workers=1)
        stored = store.dicom_json(ds.SOPInstanceUID)
    assert stored is not None
    assert not [k for k in stored if k.startswith("7FE0")]
    assert stored["00080060"] == {"vr": "CS", "Value": ["SR"]}


def test_truncated_deflated_pixel_data_fails(tmp_path: Path) -> None:
    """Deflated pixel data cut short inside the inflated stream is reported."""
    import zlib

    from metastore.index.discovery import Entry, discover
    from metastore.index.read import ReadCache, read_entry

    path = _write(tmp_path / "d.dcm", _ct(1, DeflatedExplicitVRLittleEndian, "pixel"))
    data = path.read_bytes()
    raw = pydicom.dcmread(path)
    start = len(data) - len(_deflated_tail(data))
    inflated = zlib.decompress(data[start:], -zlib.MAX_WBITS)
    cut = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    short = inflated[: len(inflated) - 1000]
    path.write_bytes(data[:start] + cut.compress(short) + cut.flush())
    assert raw.PixelData  # the original was whole
    zips = ReadCache()
    try:
        (entry,) = (e for e in discover([path]) if isinstance(e, Entry))
        outcome = read_entry(entry, None, zips)
    finally:
        zips.close()
    assert outcome.status == "failed"
    assert "truncated" in outcome.errors[0].reason


def _deflated_tail(data: bytes) -> bytes:
    """The deflated data set of a Part 10 file: what follows the file meta."""
    length = int.from_bytes(data[140:144], "little")  # (0002,0000) value
    return data[144 + length :]
