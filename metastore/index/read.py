"""Reading one source (a file or a zip member) into instance records.

This is the work a worker process does: open the source, sniff it
(``metastore.index.discovery``), read a Part 10 header with pydicom (never the
pixel data, but checking the file is not truncated) or parse DICOM JSON, and
build :class:`~metastore.records.InstanceRecord` objects
(``metastore.index.extract``).  It never touches the database; failures become
:class:`~metastore.records.ErrorRecord` values in the
:class:`~metastore.records.Outcome`.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import os
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import IO, Any, BinaryIO, cast

import orjson
import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import DeflatedExplicitVRLittleEndian, PrivateTransferSyntaxes
from pydicom.values import convert_string

from metastore.dicomjson import (
    LONG_VRS,
    dataset_to_dicom_json,
    raw_elements_to_dicom_json,
)
from metastore.errors import DicomError, MetastoreError
from metastore.imageid import FileUris, ImageId, parse_image_id, wadors_image_id
from metastore.index.discovery import (
    HEAD_SIZE,
    Entry,
    Kind,
    looks_like_dicom_json,
    shadowed_error,
    sniff,
)
from metastore.index.extract import build_instance
from metastore.modules import ModuleMemo
from metastore.records import (
    ErrorRecord,
    InstanceRecord,
    LazyImages,
    Outcome,
    OutcomeStatus,
)

#: (0002,0002) MediaStorageSOPClassUID of a DICOMDIR (Media Storage Directory).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: Binary values longer than this (in bytes) become BulkDataURIs.
BULK_THRESHOLD = 1024

#: The most bytes metastore reads into memory at once from one source: one
#: element value of a Part 10 header (a defined-length sequence counts as
#: one), the inflated data set of a deflated file, one instance of a DICOM
#: JSON file.  Anything larger fails the source (zip bombs of 1 GiB of
#: zeros take 1 MB), instead of being held.
MAX_VALUE_BYTES = 64 * 2**20
#: The first bytes of a Part 10 file read at once: most headers end in
#: them (the rest is read from the file).
HEAD_BYTES = 16 * 2**10
#: A DICOM JSON source larger than this is not read whole: the writing
#: process reads it a part at a time (``status="stream"``).
JSON_EAGER_BYTES = 8 * 2**20
#: A DICOM JSON source of more instances than this, or whose instances have
#: more images than :data:`EAGER_IMAGES` (lazy ones aside), is read a part at
#: a time by the writing process too.
EAGER_INSTANCES = 500
#: See :data:`EAGER_INSTANCES`.
EAGER_IMAGES = 5000

# Pixel Data (7FE0,0010), Float Pixel Data (7FE0,0008), Double Float (7FE0,0009).
_PIXEL_TAGS = {0x7FE00010: "OW", 0x7FE00008: "OF", 0x7FE00009: "OD"}
_ITEM, _SEQUENCE_DELIMITER = 0xFFFEE000, 0xFFFEE0DD
_LONG_VRS = frozenset(vr.encode() for vr in LONG_VRS)


class Unreadable(Exception):
    """A source that looks like DICOM but cannot be read (truncated, damaged)."""


class TooLarge(Unreadable):
    """A value larger than :data:`MAX_VALUE_BYTES`: not read into memory."""


class NotDicom(Exception):
    """A streamed JSON source that turned out not to be DICOM JSON (skipped)."""


def _mib(size: int) -> str:
    """A limit as people read it: ``64 MiB``."""
    return f"{size // 2**20} MiB" if size % 2**20 == 0 else f"{size} bytes"


class ReadCache:
    """What sources read in a row share: the last zip archive, resolved folders.

    Opening an archive reads its whole central directory; a chunk of members
    from one archive should pay that once, not once per member.  File
    imageIds need each file's resolved path (:class:`FileUris`): a folder is
    resolved once.  The instances of a series repeat their study- and
    series-level modules: they are built once while their inputs repeat
    (:class:`~metastore.modules.ModuleMemo`).  Keep one per indexing run.
    """

    def __init__(self) -> None:
        self._path: str | None = None
        self._zip: zipfile.ZipFile | None = None
        #: The ``file://`` URIs of files and archives, folders resolved once.
        self.uris = FileUris()
        #: The last study- and series-level module values.
        self.modules = ModuleMemo()

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
        the reason; with the error of the same-named members a zip member
        hides, if any (``discovery.shadowed_error``).
    """
    outcome = _read_entry(entry, wadors_root, zips)
    if entry.shadowed:
        # in the outcome, so it is written in the batch that stores the member
        errors = [*outcome.errors, shadowed_error(entry)]
        return replace(outcome, errors=errors)
    return outcome


def _read_entry(entry: Entry, wadors_root: str | None, zips: ReadCache) -> Outcome:
    location = entry.source.location
    try:
        with _open(entry, zips) as (fp, size):
            head = fp.read(HEAD_SIZE)
            fp.seek(0)
            kind = sniff(head, size)
            if kind is Kind.PART10 or kind is Kind.RAW:
                return _read_part10(entry, fp, size, kind, wadors_root, zips)
            if kind is Kind.JSON:
                if size > JSON_EAGER_BYTES:
                    return Outcome(location, "stream")
                # a zip member reads no more than its declared size
                return _read_json(entry, fp.read(size + 1), wadors_root, zips)
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
    cache: ReadCache,
) -> Outcome:
    if kind is Kind.PART10:
        outcome = _read_part10_direct(entry, fp, size, root, cache)
        if outcome is not None:
            return outcome
        fp.seek(0)
    return _read_part10_dataset(entry, fp, size, kind, root, cache)


def _read_part10_direct(
    entry: Entry, fp: IO[bytes], size: int, root: str | None, cache: ReadCache
) -> Outcome | None:
    """Read a Part 10 file without ``dcmread``'s ``FileDataset``, or ``None``.

    ``dcmread`` spends about half its time around the reading proper: a
    converted file meta, datasets built and filled attribute by attribute,
    and here a truncation guard around every read.  For a file with a
    preamble, a conformant Explicit VR Little Endian file meta and a Little
    Endian data set, pydicom's own ``data_element_generator`` (what
    ``dcmread`` reads with) gives the same raw elements without that, and
    ``raw_elements_to_dicom_json`` converts them to what
    ``dataset_to_dicom_json`` gives for the ``dcmread`` dataset.  No DICOM
    is parsed here: the reading steps of ``pydicom.filereader.read_partial``
    are taken in the same order with the same pydicom functions, and only
    where their outcome is certain.

    ``None`` for anything else, which :func:`_read_part10_dataset` reads as
    before and which decides what the file gives or why it fails: a damaged
    or truncated file, deflated or big endian data, a command set, a file
    meta without (0002,0000) first, a DICOMDIR, data not encoded as its
    transfer syntax says, elements that fail to convert.  Past an undefined
    length or a value over :data:`MAX_VALUE_BYTES`, reading goes through the
    same guard as ``dcmread``'s.  ``tests/test_part10_direct.py`` holds the
    two readers to the same answers on every pydicom test file and on fuzzed
    ones.
    """
    location = entry.source.location
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as around dcmread
            header = _direct_header(fp, size, location)
    except Exception:  # whatever it is, the dataset reader says it properly
        return None
    if header is None:
        return None
    elements, implicit, ts, pixel = header
    name = _namer(entry, root, cache.uris, json=False)
    try:
        study, series, sop = (_raw_text(elements, tag) for tag in _UID_TAGS)
        base = name(study, series, sop) if study and series and sop else None
    except ValueError:
        base = None  # a UID wadors cannot carry: build_instance says which
    bulk = _bulk_uri(entry, root, base, cache.uris)
    instance = raw_elements_to_dicom_json(
        elements,
        implicit=implicit,
        little=True,
        transfer_syntax=ts,
        bulk_data_uri=bulk,
        bulk_threshold=BULK_THRESHOLD,
    )
    if instance is None:
        return None
    if pixel is not None:
        tag, vr = pixel
        instance[tag] = {"vr": vr, "BulkDataURI": bulk(tag)}
    return _build(entry, [instance], name, cache.modules, shaped=bool(instance))


#: The first element of a conformant file meta, (0002,0000)
#: FileMetaInformationGroupLength, UL, 4 bytes: with it first, pydicom reads
#: the file meta as Explicit VR Little Endian and converts its first element
#: without fail (``_read_file_meta_info``'s implicit VR retry never runs).
_GROUP_LENGTH = b"\x02\x00\x00\x00UL\x04\x00"
# (0002,0010) TransferSyntaxUID values read_partial treats apart.
_IMPLICIT_LE = "1.2.840.10008.1.2"
_ODD_SYNTAXES = frozenset({"1.2.840.10008.1.2.2", DeflatedExplicitVRLittleEndian})
_DICOMDIR_UID = DICOMDIR_SOP_CLASS.encode()
#: (0008,0005) SpecificCharacterSet
_CHARSET_TAG = BaseTag(0x00080005)

RawElements = dict[BaseTag, RawDataElement | DataElement]


class _Stop:
    """``stop_when`` for ``data_element_generator``: where reading stopped."""

    __slots__ = ("tag",)

    def __init__(self) -> None:
        self.tag: int | None = None

    def meta(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        """The file meta ends at the first element of another group.

        A value larger than :data:`MAX_VALUE_BYTES` (or undefined) stops it
        too: such a file meta is left to the dataset reader.
        """
        if tag >> 16 != 2 or length > MAX_VALUE_BYTES:
            self.tag = tag
            return True
        return False

    def plain(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        """Stop at Pixel Data, and before a value that needs the guard.

        An undefined length (0xFFFFFFFF) makes pydicom read on by itself
        (nested items, delimiters): only what :class:`_TruncationGuard`
        watches may do that.  So may a value larger than
        :data:`MAX_VALUE_BYTES`, which the guard refuses to read.
        """
        if tag in _PIXEL_TAGS or length > MAX_VALUE_BYTES:
            self.tag = tag
            return True
        return False

    def pixels(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        """``dcmread(stop_before_pixels=True)``'s own condition."""
        if tag in _PIXEL_TAGS:
            self.tag = tag
            return True
        return False


def _direct_header(
    fp: IO[bytes], size: int, location: str
) -> tuple[RawElements, bool, str, tuple[str, str] | None] | None:
    """Raw elements, implicit VR, transfer syntax and pixel (tag, VR) of a file.

    The steps of ``pydicom.filereader.read_partial`` for the files it reads
    exactly so (see :func:`_read_part10_direct`); ``None`` for any other.
    Raises for damaged files (which the caller then reads the usual way).
    """
    # Headers are read from memory: pydicom reads a value or two per
    # element, and a BytesIO answers them far cheaper than a file.
    head = fp.read(HEAD_BYTES)
    if head[128:140] != b"DICM" + _GROUP_LENGTH:
        return None
    buffer = io.BytesIO(head)
    buffer.seek(132)
    # _read_file_meta_info: Explicit VR Little Endian, up to another group
    stop = _Stop()
    meta: RawElements = {}
    for elem in data_element_generator(buffer, False, True, stop.meta):
        meta[elem.tag] = elem
    if stop.tag is None or stop.tag >> 16 == 2:
        return None  # the file ends in the file meta, or a value to refuse
    ts = _uid_of(meta.get(_TS_TAG))
    if ts is None or ts in _ODD_SYNTAXES or ts in PrivateTransferSyntaxes:
        return None
    sop_class = meta.get(_SOP_CLASS_TAG)
    if sop_class is None or _DICOMDIR_UID in (sop_class.value or b""):
        return None  # (a DICOMDIR is skipped: the dataset reader says so)
    start = buffer.tell()
    first = buffer.read(8)
    # A command set (group 0000) is read apart, and an empty data set
    # is odd: both are the dataset reader's.
    if len(first) < 8 or first[:2] == b"\0\0":
        return None
    implicit = ts == _IMPLICIT_LE
    # read_dataset's _is_implicit_vr: whether the first element's VR bytes
    # are two capitals says how the data set is really encoded; pydicom
    # warns and follows them when they disagree with the transfer syntax.
    looks_explicit = 0x40 < first[4] < 0x5B and 0x40 < first[5] < 0x5B
    if implicit == looks_explicit:
        return None
    buffer.seek(start)
    try:
        elements, last, stop = _plain_elements(buffer, implicit)
        whole = stop.tag is not None or len(head) == size
    except struct.error:  # a length cut by the end of the buffer
        if len(head) == size:
            raise
        whole = False
    if whole:
        fp.seek(buffer.tell())
    else:  # the header is longer than what was read of it: read the file
        fp.seek(start)
        elements, last, stop = _plain_elements(cast(BinaryIO, fp), implicit)
    if stop.tag is None:
        # No guard watched: only a clean end of file will do, right where
        # the last value ends (a short read anywhere ends at the end of
        # the file, with that value the last one).
        if type(last) is not RawDataElement or last.value_tell + last.length != size:
            return None
        return elements, implicit, ts, None
    guard = _TruncationGuard(fp, location)
    if stop.tag not in _PIXEL_TAGS:
        # The rest is read as dcmread reads it, through the guard: an
        # undefined length, or a value too large, which the guard refuses.
        charset = elements.get(_CHARSET_TAG)
        # the generator's own state: the character set nested items inherit
        encoding = (
            convert_encodings(convert_string(charset.value or b"", True))
            if isinstance(charset, RawDataElement)
            else default_encoding
        )
        stop = _Stop()
        guarded = cast(BinaryIO, guard)
        for elem in data_element_generator(
            guarded, implicit, True, stop.pixels, None, encoding
        ):
            elements[elem.tag] = elem
        if guard.truncated:
            return None
    return elements, implicit, ts, _check_pixel_data(guard, size, implicit, True)


def _plain_elements(
    reader: BinaryIO, implicit: bool
) -> tuple[RawElements, RawDataElement | DataElement | None, _Stop]:
    """The data set's elements up to Pixel Data or a value that needs the guard.

    Returns the elements, the last one read and where reading stopped.
    """
    stop = _Stop()
    elements: RawElements = {}
    last = None
    # read_dataset's own dict: a repeated tag keeps its first place and its
    # last value
    for elem in data_element_generator(reader, implicit, True, stop.plain):
        elements[elem.tag] = last = elem
    return elements, last, stop


def _uid_of(elem: RawDataElement | DataElement | None) -> str | None:
    """A file meta UID as pydicom's UI conversion gives it; None: not one UID."""
    if type(elem) is not RawDataElement or elem.VR != "UI":
        return None
    value = elem.value
    if type(value) is not bytes:
        return None
    text = value.decode("latin-1").rstrip("\0 ")
    if "\\" in text:
        return None
    return text.strip() or None


def _read_part10_dataset(
    entry: Entry,
    fp: IO[bytes],
    size: int,
    kind: Kind,
    root: str | None,
    cache: ReadCache,
) -> Outcome:
    """Read any Part 10 file (or raw data set) through ``pydicom.dcmread``."""
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
    pixel = None
    if _meta_text(meta, _TS_TAG) != DeflatedExplicitVRLittleEndian:
        implicit, little = ds.original_encoding
        if implicit is not None:
            pixel = _check_pixel_data(guard, size, implicit, bool(little))
    else:
        pixel = _check_deflated_pixel_data(ds, location)
    name = _namer(entry, root, cache.uris, json=False)
    try:
        study, series, sop = (_raw_text(ds._dict, tag) for tag in _UID_TAGS)
        base = name(study, series, sop) if study and series and sop else None
    except ValueError:
        base = None  # a UID wadors cannot carry: build_instance says which
    bulk = _bulk_uri(entry, root, base, cache.uris)
    instance = dataset_to_dicom_json(
        ds, bulk_data_uri=bulk, bulk_threshold=BULK_THRESHOLD
    )
    if pixel is not None:
        tag, vr = pixel
        instance[tag] = {"vr": vr, "BulkDataURI": bulk(tag)}
    # dataset_to_dicom_json makes 8-hex-digit keys with object values: only
    # an empty result is not a DICOM JSON object
    return _build(entry, [instance], name, cache.modules, shaped=bool(instance))


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


def _raw_text(elements: Mapping[BaseTag, Any], tag: BaseTag) -> str:
    """A UID as text, read without pydicom converting the element.

    Converting here would be slow and would make metastore.dicomjson.convert take its
    slow path for the element; the bytes of a UI value are plain ASCII.
    """
    element = elements.get(tag)
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
        """Read like the file does, noting a read cut short.

        Raises:
            TooLarge: The read asks for more than :data:`MAX_VALUE_BYTES`.
        """
        if size > MAX_VALUE_BYTES or size < 0:
            return self._unbounded(size)
        data = self._read(size)
        if len(data) < size:
            self._short(size, len(data))
        return data

    def _unbounded(self, size: int) -> bytes:
        """A read too large to make blindly: one huge value, or "the rest".

        pydicom reads each element value whole, and the rest of a deflated
        file whole before inflating it in one call; both are refused past
        :data:`MAX_VALUE_BYTES` before anything that large is allocated.
        """
        limit = _mib(MAX_VALUE_BYTES)
        if size > MAX_VALUE_BYTES:
            start = self.tell()
            raise TooLarge(
                f"the value at byte {start} is {size} bytes, more than the "
                f"{limit} metastore reads of one element"
            )
        data = self._read(MAX_VALUE_BYTES + 1)
        inflated = b""
        if len(data) <= MAX_VALUE_BYTES:
            # the deflated data set pydicom is about to inflate (if it is
            # not deflated, pydicom says what it is)
            with contextlib.suppress(zlib.error):
                inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(
                    data, MAX_VALUE_BYTES + 1
                )
        if len(data) > MAX_VALUE_BYTES or len(inflated) > MAX_VALUE_BYTES:
            raise TooLarge(
                f"the deflated data set is more than the {limit} metastore "
                "reads of one element"
            )
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
    fp: _TruncationGuard, size: int, implicit: bool, little: bool
) -> tuple[str, str] | None:
    """Check the pixel data element pydicom stopped before; return (tag, VR).

    Raises:
        Unreadable: The element's value runs past the end of the file.
    """
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
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    size = len(buffer.getvalue())
    guard = _TruncationGuard(buffer, location)
    return _check_pixel_data(guard, size, implicit, bool(little))


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


def _read_json(
    entry: Entry, data: bytes, root: str | None, cache: ReadCache
) -> Outcome:
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
    if len(items) > EAGER_INSTANCES:
        return Outcome(location, "stream")
    name = _namer(entry, root, cache.uris, json=True)
    return _build(entry, items, name, cache.modules, eager=True)


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
    entry: Entry,
    items: list[Any],
    name: Namer,
    memo: ModuleMemo,
    *,
    shaped: bool = False,
    eager: bool = False,
) -> Outcome:
    """Records of ``items``; ``shaped``: they are known to be DICOM JSON objects.

    ``eager``: give up (``status="stream"``) once the instances hold more
    than :data:`EAGER_IMAGES` images that are not lazy.
    """
    location = entry.source.location
    instances, errors = [], []
    images = 0
    for n, item in enumerate(items, 1):
        record = _record(entry, item, name, n if len(items) > 1 else 0, shaped, memo)
        if isinstance(record, ErrorRecord):
            errors.append(record)
            continue
        instances.append(record)
        if not isinstance(record.images, LazyImages):
            images += len(record.images)
            if eager and images > EAGER_IMAGES:
                return Outcome(location, "stream")
    status: OutcomeStatus = "indexed" if instances else "failed"
    return Outcome(location, status, instances, errors)


def _record(
    entry: Entry, item: Any, name: Namer, n: int, shaped: bool, memo: ModuleMemo
) -> InstanceRecord | ErrorRecord:
    """The record of item ``n`` (0: the only one) of a source, or why not."""
    location = entry.source.location
    where = f"instance {n}: " if n else ""
    if not shaped and not _is_dicom_json(item):
        return ErrorRecord(location, "invalid", f"{where}not a DICOM JSON object")
    try:
        return build_instance(item, entry.source, name, memo)
    except MetastoreError as exc:
        reason = getattr(exc, "reason", str(exc))
        return ErrorRecord(location, "invalid", f"{where}{reason}")


class SourceStream:
    """A DICOM JSON source read a part at a time while it is written.

    For sources too large to hold at once (``status="stream"``):
    :meth:`items` reads the JSON one instance at a time (at most
    :data:`MAX_VALUE_BYTES` of text each) and yields its records and
    invalid-item errors as the whole-source reading would, for
    ``Store.write_stream``.  Each call starts over and counts afresh.

    Raises (from :meth:`items`):
        Unreadable: Bad JSON (or an instance too large) in text that starts
            like DICOM JSON: the source fails.
        NotDicom: No item is a DICOM JSON object, or bad JSON in text that
            does not start like DICOM JSON: the source is skipped.
    """

    def __init__(self, entry: Entry, root: str | None, zips: ReadCache) -> None:
        self.entry = entry
        self._root = root
        self._zips = zips
        #: Instances and images yielded by the last :meth:`items`.
        self.instances = 0
        self.images = 0
        #: The first errors yielded (at most ``keep_errors``), and how many.
        self.errors: list[ErrorRecord] = []
        self.error_count = 0
        self.keep_errors = 100

    @property
    def location(self) -> str:
        """The source's location."""
        return self.entry.source.location

    def items(self) -> Iterator[InstanceRecord | ErrorRecord]:
        """The records and errors of the source, in file order."""
        self.instances = self.images = self.error_count = 0
        self.errors = []
        name = _namer(self.entry, self._root, self._zips.uris, json=True)
        with _open(self.entry, self._zips) as (fp, _):
            head = fp.read(HEAD_SIZE)
            fp.seek(0)
            items = _numbered(json_items(fp))
            not_shaped = 0  # items before the first DICOM JSON object
            try:
                for n, item in items:
                    if not_shaped >= 0 and not _is_dicom_json(item):
                        not_shaped += 1
                        continue
                    if not_shaped > 0:  # now a DICOM JSON file: they are errors
                        for m in range(1, not_shaped + 1):
                            why = f"instance {m}: not a DICOM JSON object"
                            yield self._error(
                                ErrorRecord(self.location, "invalid", why)
                            )
                    not_shaped = -1
                    record = _record(
                        self.entry, item, name, n, False, self._zips.modules
                    )
                    if isinstance(record, ErrorRecord):
                        yield self._error(record)
                        continue
                    self.instances += 1
                    self.images += len(record.images)
                    yield record
            except ValueError as exc:  # bad JSON, or bad UTF-8
                if isinstance(exc, TooLarge):
                    raise
                if not looks_like_dicom_json(head):
                    raise NotDicom() from exc
                raise Unreadable(f"invalid DICOM JSON: {exc}") from exc
            if not_shaped >= 0:
                raise NotDicom()

    def _error(self, error: ErrorRecord) -> ErrorRecord:
        self.error_count += 1
        if len(self.errors) < self.keep_errors:
            self.errors.append(error)
        return error


def _numbered(items: Iterator[Any]) -> Iterator[tuple[int, Any]]:
    """``(n, item)``, n from 1, or 0 when ``items`` has a single item.

    Items of a file are named ``instance N`` only when there are several;
    one item of look-ahead tells.
    """
    first = next(items, _END)
    if first is _END:
        return
    second = next(items, _END)
    if second is _END:
        yield 0, first
        return
    yield 1, first
    del first
    n = 2
    for item in items:
        yield n, second
        second = item
        n += 1
    yield n, second


_END = object()

#: Bytes read at a time by :func:`json_items`.
_JSON_READ = 2**20
_JSON_WS = " \t\n\r"
_NUMBER_CHARS = re.compile(r"[0-9.eE+-]*")


def json_items(fp: IO[bytes], limit: int = MAX_VALUE_BYTES) -> Iterator[Any]:
    """The items of the JSON array in ``fp``, one at a time (or its one value).

    Values are what ``json.loads`` (the fallback of the whole-file reading)
    gives: the same decoder, the same encodings (UTF-8 with or without a
    BOM, UTF-16, UTF-32), NaN and Infinity accepted, the last of two equal
    keys kept.  At most ``limit`` characters of one item are held.

    Raises:
        ValueError: The text is not JSON (``json.JSONDecodeError``) or not in
            its encoding (``UnicodeDecodeError``).
        TooLarge: An item (or the whole value, when it is not an array) is
            longer than ``limit``.
    """
    raw = fp.read(4)
    decoder = codecs.getincrementaldecoder(json.detect_encoding(raw))("surrogatepass")
    parse = json.JSONDecoder().raw_decode
    text = decoder.decode(raw)
    pos = 0
    done = 0  # characters dropped from the front of text
    eof = False

    def fill(need: int, what: str = "") -> None:
        """Have ``need`` more characters after ``pos`` (or all there are).

        With ``what``, more than ``limit`` characters raise TooLarge before
        they are joined into one string (which would hold them twice).
        """
        nonlocal text, pos, done, eof
        if eof or len(text) - pos >= need:
            return
        parts = [text[pos:]]
        size = len(parts[0])
        done += pos
        text, pos = "", 0
        while not eof and size < need:
            data = fp.read(_JSON_READ)
            eof = not data
            parts.append(decoder.decode(data, final=eof))
            size += len(parts[-1])
        if what and size > limit:
            raise too_large(what)
        text = "".join(parts)

    def bad(message: str, at: int) -> ValueError:
        return ValueError(f"{message}: character {done + at}")

    def skip_space() -> str:
        """The next character that is not white space ("" at the end)."""
        nonlocal pos
        while True:
            while pos < len(text) and text[pos] in _JSON_WS:
                pos += 1
            if pos < len(text) or eof:
                return text[pos : pos + 1]
            fill(_JSON_READ)

    def too_large(what: str) -> TooLarge:
        return TooLarge(
            f"{what} is more than the {_mib(limit)} metastore reads at once"
        )

    fill(_JSON_READ)
    if skip_space() != "[":
        fill(limit + 1, "the JSON value")
        try:
            value = json.loads(text[pos:])
        except json.JSONDecodeError as exc:
            raise bad(exc.msg, pos + exc.pos) from None
        text = ""
        yield value
        return
    pos += 1
    n = 0
    while True:
        char = skip_space()
        if char == "]" and n == 0:
            break
        n += 1
        want = _JSON_READ
        while True:
            fill(want)  # may hold a little more than the limit: it is a window
            try:
                value, end = parse(text, pos)
            except json.JSONDecodeError as exc:
                if eof:
                    raise bad(exc.msg, exc.pos) from None
                if len(text) - pos > limit:
                    raise too_large(f"instance {n}") from None
                want = min(2 * (len(text) - pos), limit + 1)
                continue
            # a number cut by the window ("3.5e" of "3.5e300") parses as a
            # shorter one: what follows it must not reach the window's end
            tail = _NUMBER_CHARS.match(text, end)
            if tail is not None and tail.end() == len(text) and not eof:
                if len(text) - pos > limit:
                    raise too_large(f"instance {n}")
                want = min(2 * (len(text) - pos), limit + 1)
                continue
            break
        pos = end
        yield value
        del value
        char = skip_space()
        if char == ",":
            pos += 1
            continue
        if char == "]":
            break
        raise bad("Expecting ',' delimiter", pos)
    pos += 1
    if skip_space():
        raise bad("Extra data", pos)


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
