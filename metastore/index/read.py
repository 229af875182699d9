"""Reading one source (a file or a zip member) into instance records.

This is the work a worker process does: open the source, sniff it
(``metastore.index.discovery``), read a Part 10 header with pydicom (never the
pixel data, but checking the file is not truncated) or parse DICOM JSON, and
build :class:`~metastore.records.InstanceRecord` objects
(``metastore.index.extract``).  It never touches the database; failures become
:class:`~metastore.records.ErrorRecord` values in the :class:`Outcome`.
"""

from __future__ import annotations

import io
import json
import os
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, Literal

import orjson
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from metastore.dicomjson import dataset_to_dicom_json
from metastore.errors import DicomError, MetastoreError
from metastore.imageid import FileUris, ImageId, parse_image_id, wadors_image_id
from metastore.index.discovery import (
    HEAD_SIZE,
    Entry,
    Kind,
    looks_like_dicom_json,
    sniff,
)
from metastore.index.extract import build_instance
from metastore.records import ErrorRecord, InstanceRecord

Status = Literal["indexed", "skipped", "failed"]

#: (0002,0002) MediaStorageSOPClassUID of a DICOMDIR (Media Storage Directory).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Binary values longer than this (in bytes) become BulkDataURIs.
BULK_THRESHOLD = 1024

# Pixel Data (7FE0,0010), Float Pixel Data (7FE0,0008), Double Float (7FE0,0009).
_PIXEL_TAGS = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What reading one source gave."""

    location: str
    status: Status
    instances: list[InstanceRecord] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)
    #: Why it was skipped (``"not DICOM"``, ``"DICOMDIR"``...); empty otherwise.
    reason: str = ""


class Unreadable(Exception):
    """A source that looks like DICOM but cannot be read (truncated, damaged)."""


class ReadCache:
    """What sources read in a row share: the last zip archive, resolved folders.

    Opening an archive reads its whole central directory; a chunk of members
    from one archive should pay that once, not once per member.  File
    imageIds need each file's resolved path (:class:`FileUris`): a folder is
    resolved once.  Keep one per indexing run.
    """

    def __init__(self) -> None:
        self._path: str | None = None
        self._zip: zipfile.ZipFile | None = None
        #: The ``file://`` URIs of files and archives, folders resolved once.
        self.uris = FileUris()

    def get(self, path: str) -> zipfile.ZipFile:
        """Return the open archive at ``path``, opening it if needed."""
        if self._zip is None or self._path != path:
            self.close()
            self._zip = zipfile.ZipFile(path)
            self._path = path
        return self._zip

    def close(self) -> None:
        """Close the open archive, if any."""
        if self._zip is not None:
            self._zip.close()
        self._zip = self._path = None


#: The former name of :class:`ReadCache`.
ZipCache = ReadCache


def read_entry(entry: Entry, wadors_root: str | None, zips: ReadCache) -> Outcome:
    """Read one source into instance records; never raises for bad input.

    Args:
        entry: The file or zip member.
        wadors_root: The DICOMweb root imageIds and BulkDataURIs are made
            under, or ``None`` for file imageIds (see docs/indexing.md).
        zips: Where zip archives are kept open between members (and
            resolved folders are remembered).

    Returns:
        ``indexed`` with the instances (and any invalid-instance errors),
        ``skipped`` for non-DICOM content and DICOMDIRs, or ``failed`` with
        the reason.
    """
    location = entry.source.location
    try:
        with _open(entry, zips) as (fp, size):
            head = fp.read(HEAD_SIZE)
            fp.seek(0)
            kind = sniff(head, size)
            if kind is Kind.PART10 or kind is Kind.RAW:
                return _read_part10(entry, fp, size, kind, wadors_root, zips.uris)
            if kind is Kind.JSON:
                return _read_json(entry, fp.read(), wadors_root, zips.uris)
            reason = {Kind.ZIP: "nested zip archive", Kind.EMPTY: "empty"}.get(
                kind, "not DICOM"
            )
            return Outcome(location, "skipped", reason=reason)
    except DicomError as exc:  # pydicom read it, but it cannot become DICOM JSON
        return _failed(location, "invalid", _reason(exc))
    except Exception as exc:  # one bad source must never stop a run
        # pydicom, zipfile and zlib raise assorted errors on damaged input
        return _failed(location, "unreadable", _reason(exc))


def _failed(location: str, kind: str, reason: str) -> Outcome:
    return Outcome(location, "failed", errors=[ErrorRecord(location, kind, reason)])


def _reason(exc: BaseException) -> str:
    """One line saying why: our own reasons as they are, others with their type."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, Unreadable | MetastoreError):
        return text
    return f"{type(exc).__name__}: {text}"


@contextmanager
def _open(entry: Entry, zips: ReadCache) -> Iterator[tuple[IO[bytes], int]]:
    """Open a file or zip member for reading; yields ``(file, size)``."""
    if entry.member is None:
        with open(entry.path, "rb") as f:
            yield f, os.fstat(f.fileno()).st_size
        return
    archive = zips.get(entry.path)
    info = archive.getinfo(entry.member)
    with archive.open(info) as member:
        yield member, info.file_size


# --- Part 10 -------------------------------------------------------------


def _read_part10(
    entry: Entry,
    fp: IO[bytes],
    size: int,
    kind: Kind,
    root: str | None,
    uris: FileUris,
) -> Outcome:
    location = entry.source.location
    guard = _TruncationGuard(fp, location)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd values are kept as they are
        ds = pydicom.dcmread(guard, stop_before_pixels=True, force=kind is Kind.RAW)
    if guard.truncated:
        raise Unreadable(f"truncated at byte {guard.truncated_at} of {size}")
    meta = getattr(ds, "file_meta", None)
    if _meta_text(meta, _SOP_CLASS_TAG) == DICOMDIR_SOP_CLASS:
        return Outcome(location, "skipped", reason="DICOMDIR")
    if kind is Kind.RAW and len(ds) < 2:
        return Outcome(location, "skipped", reason="not DICOM")
    if _meta_text(meta, _TS_TAG) != DeflatedExplicitVRLittleEndian:
        pixel = _check_pixel_data(guard, size, ds)
    else:
        pixel = _check_deflated_pixel_data(ds, location)
    name = _namer(entry, root, uris, json=False)
    try:
        study, series, sop = (_raw_text(ds, tag) for tag in _UID_TAGS)
        base = name(study, series, sop) if study and series and sop else None
    except ValueError:
        base = None  # a UID wadors cannot carry: build_instance says which
    bulk = _bulk_uri(entry, root, base, uris)
    instance = dataset_to_dicom_json(
        ds, bulk_data_uri=bulk, bulk_threshold=BULK_THRESHOLD
    )
    if pixel is not None:
        tag, vr = pixel
        instance[tag] = {"vr": vr, "BulkDataURI": bulk(tag)}
    # dataset_to_dicom_json makes 8-hex-digit keys with object values: only
    # an empty result is not a DICOM JSON object
    return _build(entry, [instance], name, shaped=bool(instance))


# (0020,000D) StudyInstanceUID, (0020,000E) SeriesInstanceUID and
# (0008,0018) SOPInstanceUID
_UID_TAGS = (BaseTag(0x0020000D), BaseTag(0x0020000E), BaseTag(0x00080018))


# (0002,0002) MediaStorageSOPClassUID and (0002,0010) TransferSyntaxUID
_SOP_CLASS_TAG, _TS_TAG = BaseTag(0x00020002), BaseTag(0x00020010)


def _meta_text(meta: Dataset | None, tag: BaseTag) -> str | None:
    """A file meta UID as ``meta.get(keyword)`` compares, without converting it."""
    element = None if meta is None else meta._dict.get(tag)
    if element is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        # pydicom's UI conversion: one trailing pad character goes, and a
        # backslash makes several values (never equal to one UID)
        text = value.decode("latin-1")
        if text.endswith(("\0", " ")):
            text = text[:-1]
        return None if "\\" in text else text
    return value if isinstance(value, str) else None


def _raw_text(ds: Dataset, tag: BaseTag) -> str:
    """A UID as text, read without pydicom converting the element.

    Converting here would be slow and would make metastore.dicomjson.convert take its
    slow path for the element; the bytes of a UI value are plain ASCII.
    """
    element = ds._dict.get(tag)
    value = None if element is None else element.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\0 ")
    return "" if value is None else str(value).strip()


class _TruncationGuard:
    """A read-only file wrapper that notices reads cut short by the end of file.

    pydicom stops quietly at a short read, which makes a truncated header look
    like a complete one.  A clean end of file can only come where an element
    starts (an 8-byte header read that returns nothing); any other short read
    means the file was cut.  Only ``read`` runs Python code: pydicom calls it
    for every element, so the complete-read path is kept to one comparison.
    """

    def __init__(self, fp: IO[bytes], name: str) -> None:
        self._read = fp.read
        self.seek = fp.seek
        self.tell = fp.tell
        self.name = name
        self.truncated_at: int | None = None

    @property
    def truncated(self) -> bool:
        """Whether a read was cut short."""
        return self.truncated_at is not None

    def read(self, size: int = -1) -> bytes:
        """Read like the file does, noting a read cut short."""
        data = self._read(size)
        if len(data) < size:
            self._short(size, len(data))
        return data

    def _short(self, size: int, got: int) -> None:
        start = self.tell() - got
        # Fine: the preamble read of a small raw dataset, and an element header
        # that finds the very end of the file (a clean end).
        if (start == 0 and size == 128) or (got == 0 and size == 8):
            return
        if self.truncated_at is None:
            self.truncated_at = start + got

    def close(self) -> None:
        """Leave closing to the owner of the underlying file."""


def _check_pixel_data(
    fp: _TruncationGuard, size: int, ds: Dataset
) -> tuple[str, str] | None:
    """Check the pixel data element pydicom stopped before; return (tag, VR).

    Raises:
        Unreadable: The element's value runs past the end of the file.
    """
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    order = "<" if little else ">"
    header = fp.read(8)
    if len(header) < 8:
        return None  # no pixel data: the dataset ended cleanly
    group, element = struct.unpack(order + "HH", header[:4])
    tag = group << 16 | element
    if tag not in _PIXEL_TAGS:
        return None
    vr = _PIXEL_TAGS[tag]
    if implicit:
        (length,) = struct.unpack(order + "L", header[4:])
    elif header[4:6] in _LONG_VRS:
        vr = header[4:6].decode()
        (length,) = struct.unpack(order + "L", fp.read(4))
    else:
        vr = header[4:6].decode("latin-1")
        (length,) = struct.unpack(order + "H", header[6:])
    if fp.truncated:
        raise Unreadable(f"truncated at byte {fp.truncated_at} of {size}")
    if length == 0xFFFFFFFF:
        _check_fragments(fp, size, order)
    elif fp.tell() + length > size:
        raise Unreadable(
            f"truncated: pixel data needs {length} bytes, {size - fp.tell()} left"
        )
    return f"{tag:08X}", vr


def _check_deflated_pixel_data(ds: Dataset, location: str) -> tuple[str, str] | None:
    """:func:`_check_pixel_data` for a deflated data set.

    pydicom inflates the whole data set into memory (``ds.buffer``) and stops
    before the pixel data in there, so the element is found and checked in
    the inflated bytes: its value must end within them.
    """
    buffer: Any = getattr(ds, "buffer", None)  # a pydicom DicomBytesIO
    if buffer is None or not hasattr(buffer, "getvalue"):
        return None
    size = len(buffer.getvalue())
    return _check_pixel_data(_TruncationGuard(buffer, location), size, ds)


def _check_fragments(fp: _TruncationGuard, size: int, order: str) -> None:
    """Walk encapsulated pixel data items up to the sequence delimiter."""
    while True:
        header = fp.read(8)
        if len(header) < 8:
            raise Unreadable("truncated: encapsulated pixel data has no end")
        group, element, length = struct.unpack(order + "HHL", header)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return
        if tag != _ITEM or fp.tell() + length > size:
            raise Unreadable("truncated or damaged encapsulated pixel data")
        fp.seek(length, io.SEEK_CUR)


# --- DICOM JSON ----------------------------------------------------------


def _read_json(entry: Entry, data: bytes, root: str | None, uris: FileUris) -> Outcome:
    location = entry.source.location
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:  # orjson refuses integers past 64 bits; the standard library does not
            document = json.loads(data)
        except ValueError as exc:
            if looks_like_dicom_json(data[:HEAD_SIZE]):
                return _failed(location, "unreadable", f"invalid DICOM JSON: {exc}")
            return Outcome(location, "skipped", reason="not DICOM")
    items = document if isinstance(document, list) else [document]
    if not any(_is_dicom_json(item) for item in items):
        return Outcome(location, "skipped", reason="not DICOM")
    return _build(entry, items, _namer(entry, root, uris, json=True))


def _is_dicom_json(item: Any) -> bool:
    """Whether ``item`` is shaped like a DICOM JSON instance object."""
    if not isinstance(item, dict) or not item:
        return False
    return all(
        len(k) == 8 and isinstance(v, dict) and _is_hex(k) for k, v in item.items()
    )


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


# --- records -------------------------------------------------------------

Namer = Callable[[str, str, str], ImageId]


def _build(
    entry: Entry, items: list[Any], name: Namer, *, shaped: bool = False
) -> Outcome:
    """Records of ``items``; ``shaped``: they are known to be DICOM JSON objects."""
    location = entry.source.location
    instances, errors = [], []
    for n, item in enumerate(items, 1):
        where = f"instance {n}: " if len(items) > 1 else ""
        if not shaped and not _is_dicom_json(item):
            errors.append(
                ErrorRecord(location, "invalid", f"{where}not a DICOM JSON object")
            )
            continue
        try:
            instances.append(build_instance(item, entry.source, name))
        except MetastoreError as exc:
            reason = getattr(exc, "reason", str(exc))
            errors.append(ErrorRecord(location, "invalid", f"{where}{reason}"))
    status: Status = "indexed" if instances else "failed"
    return Outcome(location, status, instances, errors)


def _namer(entry: Entry, root: str | None, uris: FileUris, *, json: bool) -> Namer:
    """How the instances of ``entry`` name their frames (docs/indexing.md).

    Under a DICOMweb root every source gets wadors imageIds; without one a
    Part 10 file gets wadouri imageIds of itself, and a DICOM JSON file gets
    wadors imageIds with its own ``file://`` URI as the root.
    """
    if root is None and json:
        root = _file_uri(entry, uris)
    if root is not None:
        wadors_root = root
        return lambda s, se, i: parse_image_id(
            wadors_image_id(wadors_root, s, se, i, 1)
        )
    base = parse_image_id(uris.image_id(entry.path, 1, entry.member))
    return lambda s, se, i: base


def _file_uri(entry: Entry, uris: FileUris) -> str:
    """The ``file://`` URI of a file or zip member (``...a.zip!/member``)."""
    return parse_image_id(uris.image_id(entry.path, 1, entry.member)).url


def _bulk_uri(
    entry: Entry, root: str | None, base: ImageId | None, uris: FileUris
) -> Callable[[str], str]:
    """Make BulkDataURIs for a Part 10 file's bulk elements (docs/indexing.md)."""
    if root is not None and base is not None:
        prefix = f"{base.url}/bulkdata/"
    elif base is not None:
        # without a root, base is the file's own imageId: its url is the
        # file URI, already resolved once (Path.resolve costs a syscall chain)
        prefix = base.url + "#bulkdata/"
    else:
        prefix = _file_uri(entry, uris) + "#bulkdata/"
    return lambda tag: prefix + tag
