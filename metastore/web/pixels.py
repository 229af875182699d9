"""Frames and whole instances read from an indexed Part 10 source.

A frame is served either as stored (the native bytes of the frame, or the
encapsulated fragments of a compressed one, labelled with the file's
transfer syntax) or as Explicit VR Little Endian native pixels, decoded by
pydicom where it can (implicit VR, big endian, deflate, RLE, and what its
installed decoders handle).  Where a frame can be neither, the caller answers
406.  The file's header is read once per (location, size, time) and its
pixel data layout remembered, so the frames of a multi-frame instance cost
one seek and read each.
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from metastore.store import InstanceSource
from metastore.web.media import HTTPError
from metastore.web.sources import Stale

#: (7FE0,0010) Pixel Data, (7FE0,0008) Float and (7FE0,0009) Double Float.
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
#: How many layouts are remembered (a few hundred bytes each).
CACHE_SIZE = 8192


class CannotDecode(Exception):
    """Pixel data pydicom cannot turn into native pixels (here)."""


@dataclass(frozen=True, slots=True)
class Layout:
    """Where an instance's pixel data is in its file, and how it is encoded."""

    #: (0002,0010) TransferSyntaxUID as stored (implicit VR LE without meta).
    transfer_syntax: str
    #: Pixel Data, Float or Double Float Pixel Data (0: none).
    tag: int
    #: File position of the element's value (the first item, if encapsulated).
    offset: int
    #: Value length, or -1 when encapsulated (undefined length).
    length: int
    frames: int
    #: Bytes of one native frame (0: not byte aligned, 1-bit pixels).
    frame_size: int
    bits_allocated: int
    #: (7FE0,0001) Extended Offset Table and (7FE0,0002) its lengths.
    extended_offsets: tuple[bytes, bytes] | None
    #: A deflated dataset: frames come out of a full read, not a seek.
    deflated: bool
    #: Whether the file has a Part 10 header (preamble and file meta).
    part10: bool

    @property
    def has_pixels(self) -> bool:
        return self.tag != 0 or self.deflated

    @property
    def encapsulated(self) -> bool:
        return self.length < 0

    @property
    def stored_syntax(self) -> str:
        """The transfer syntax the frames are stored in, as served.

        A deflated dataset's frames are plain little endian pixels once the
        dataset is inflated: they are labelled Explicit VR Little Endian.
        """
        if self.deflated:
            return ExplicitVRLittleEndian
        return self.transfer_syntax

    @property
    def native_little_endian(self) -> bool:
        """Whether the stored frames already are Explicit VR LE pixels."""
        return not self.encapsulated and self.stored_syntax in (
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
        )


_cache: OrderedDict[tuple[str, str, int, int], Layout] = OrderedDict()
_cache_lock = threading.Lock()


def _key(sop: str, source: InstanceSource) -> tuple[str, str, int, int]:
    return (sop, source.location, source.size, source.mtime_ns)


def cached_layout(sop: str, source: InstanceSource) -> Layout | None:
    """The remembered layout of ``sop`` in that source state, if any."""
    with _cache_lock:
        return _cache.get(_key(sop, source))


def layout(sop: str, source: InstanceSource, fp: IO[bytes]) -> Layout:
    """The pixel data layout of ``sop`` in ``fp``, read once per source state.

    Raises:
        HTTPError: 410 when the file holds another instance now.
    """
    key = _key(sop, source)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    found = _read_layout(sop, fp)
    with _cache_lock:
        _cache[key] = found
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return found


def read_dataset(sop: str, fp: IO[bytes], *, pixels: bool) -> Dataset:
    """Read the dataset of ``fp`` and check it is instance ``sop``.

    Raises:
        HTTPError: 410 when the file holds another instance (or none).
    """
    fp.seek(0)
    ds: Dataset
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(fp, stop_before_pixels=not pixels, force=True)
            found = str(ds.get("SOPInstanceUID", "") or "")
    except Exception:
        found = ""
        ds = Dataset()
    if found.strip("\0 ") != sop:
        raise Stale(
            410,
            f"instance {sop}: its source now holds another instance; "
            "run metastore index again",
        )
    return ds


def _read_layout(sop: str, fp: IO[bytes]) -> Layout:
    ds = read_dataset(sop, fp, pixels=False)
    meta = getattr(ds, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or ImplicitVRLittleEndian)
    part10 = meta is not None and len(meta) > 0
    deflated = syntax == DeflatedExplicitVRLittleEndian
    frames = _int(ds.get("NumberOfFrames"), 1)
    rows, columns = _int(ds.get("Rows"), 0), _int(ds.get("Columns"), 0)
    samples = _int(ds.get("SamplesPerPixel"), 1)
    bits = _int(ds.get("BitsAllocated"), 0)
    if str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # two bytes per pixel per sample depth (PS3.3 C.7.6.3.1.2)
    frame_bits = rows * columns * samples * bits
    frame_size = frame_bits // 8 if frame_bits % 8 == 0 else 0
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    tag, offset, length = 0x7FE00010, 0, 0
    if not deflated:
        implicit, little = ds.original_encoding
        found = _pixel_element(fp, bool(implicit), little is not False)
        tag, offset, length = found or (0, 0, 0)
    return Layout(
        transfer_syntax=syntax,
        tag=tag,
        offset=offset,
        length=length,
        frames=max(frames, 1),
        frame_size=frame_size,
        bits_allocated=bits,
        extended_offsets=extended,
        deflated=deflated,
        part10=part10,
    )


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _pixel_element(
    fp: IO[bytes], implicit: bool, little: bool
) -> tuple[int, int, int] | None:
    """``(tag, value offset, length or -1)`` of the element at ``fp``'s position.

    pydicom's ``stop_before_pixels`` leaves the file at the pixel data
    element; ``None`` when there is none.
    """
    order = "<" if little else ">"
    header = fp.read(8)
    if len(header) < 8:
        return None
    group, element = struct.unpack(order + "HH", header[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        return None
    if implicit:
        (length,) = struct.unpack(order + "L", header[4:])
    elif header[4:6] in _LONG_VRS:
        (length,) = struct.unpack(order + "L", fp.read(4))
    else:
        (length,) = struct.unpack(order + "H", header[6:])
    return tag, fp.tell(), -1 if length == 0xFFFFFFFF else length


def check_frames(sop: str, lay: Layout, numbers: list[int]) -> None:
    """Raise 404 naming the first frame number past the instance's frames."""
    if not lay.has_pixels:
        raise HTTPError(404, f"instance {sop} has no pixel data")
    for number in numbers:
        if number > lay.frames:
            raise HTTPError(
                404,
                f"instance {sop} has {lay.frames} frame"
                f"{'s' if lay.frames != 1 else ''}; there is no frame {number}",
            )


def stored_frame(sop: str, lay: Layout, fp: IO[bytes], number: int) -> bytes:
    """Frame ``number`` (1-based) as stored (see :attr:`Layout.stored_syntax`)."""
    if lay.deflated:
        return _native_from_dataset(sop, lay, fp, number)
    if lay.encapsulated:
        fp.seek(lay.offset)
        try:
            return pydicom.encaps.get_frame(
                fp,
                number - 1,
                number_of_frames=lay.frames,
                extended_offsets=lay.extended_offsets,
            )
        except Exception as exc:
            raise HTTPError(
                410, f"instance {sop}: frame {number} cannot be read: {exc}"
            ) from None
    if lay.frame_size == 0:
        raise CannotDecode("1-bit pixel data frames are not byte aligned")
    start = (number - 1) * lay.frame_size
    if start + lay.frame_size > lay.length:
        raise HTTPError(
            410, f"instance {sop}: the pixel data is shorter than {lay.frames} frames"
        )
    fp.seek(lay.offset + start)
    data = fp.read(lay.frame_size)
    if len(data) != lay.frame_size:
        raise HTTPError(410, f"instance {sop}: frame {number} is cut short")
    return data


def native_frame(sop: str, lay: Layout, fp: IO[bytes], number: int) -> bytes:
    """Frame ``number`` as Explicit VR Little Endian native pixels.

    Raises:
        CannotDecode: pydicom cannot decode this pixel data here.
    """
    if lay.native_little_endian or lay.deflated:
        return stored_frame(sop, lay, fp, number)
    if not lay.encapsulated:  # big endian: swap each word
        data = stored_frame(sop, lay, fp, number)
        width = lay.bits_allocated // 8
        if width <= 1:
            return data
        return _swap(data, width)
    return _decoded(sop, fp, number)


def _swap(data: bytes, width: int) -> bytes:
    import numpy as np

    kind = {2: ">u2", 4: ">u4", 8: ">u8"}.get(width)
    if kind is None:
        raise CannotDecode(f"{width * 8}-bit big endian words")
    return np.frombuffer(data, dtype=kind).astype(kind.replace(">", "<")).tobytes()


def _decoded(sop: str, fp: IO[bytes], number: int) -> bytes:
    """Decode frame ``number`` of compressed pixel data with pydicom."""
    ds = read_dataset(sop, fp, pixels=True)
    try:
        import numpy as np
        from pydicom.pixels.utils import pixel_array

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = pixel_array(ds, index=number - 1)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")
        name = getattr(UID(str(syntax)), "name", syntax) if syntax else "unknown"
        raise CannotDecode(f"pydicom cannot decode {name} here ({exc})") from None
    if array.ndim == 3 and _int(ds.get("PlanarConfiguration"), 0) == 1:
        array = array.transpose(2, 0, 1)  # native planar order: R..., G..., B...
    little = array.dtype.newbyteorder("<")
    return bytes(np.ascontiguousarray(array, dtype=little).tobytes())


def _native_from_dataset(sop: str, lay: Layout, fp: IO[bytes], number: int) -> bytes:
    """A frame of a deflated dataset: inflate and read it all (pydicom)."""
    ds = read_dataset(sop, fp, pixels=True)
    data = ds.get("PixelData")
    if not isinstance(data, bytes) or lay.frame_size == 0:
        raise CannotDecode("no byte-aligned native pixel data in the dataset")
    start = (number - 1) * lay.frame_size
    frame = data[start : start + lay.frame_size]
    if len(frame) != lay.frame_size:
        raise HTTPError(410, f"instance {sop}: frame {number} is cut short")
    return frame


def whole_file(sop: str, lay: Layout, fp: IO[bytes]) -> bytes:
    """The instance's Part 10 file as stored (a raw dataset gets its header)."""
    if lay.part10:
        fp.seek(0)
        return fp.read()
    ds = read_dataset(sop, fp, pixels=True)
    return _part10(ds, ImplicitVRLittleEndian)


def explicit_le_file(sop: str, lay: Layout, fp: IO[bytes]) -> bytes:
    """The instance as a Part 10 file in Explicit VR Little Endian.

    Raises:
        CannotDecode: big endian, or pixel data pydicom cannot decode here.
    """
    if lay.transfer_syntax == ExplicitVRLittleEndian and lay.part10:
        return whole_file(sop, lay, fp)
    if lay.transfer_syntax == ExplicitVRBigEndian:
        raise CannotDecode("big endian datasets are only served as stored")
    ds = read_dataset(sop, fp, pixels=True)
    if lay.encapsulated:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.decompress(generate_instance_uid=False)
        except Exception as exc:
            raise CannotDecode(f"pydicom cannot decompress it here ({exc})") from None
    return _part10(ds, ExplicitVRLittleEndian)


def _part10(ds: Dataset, syntax: str) -> bytes:
    from pydicom.dataset import FileMetaDataset

    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.TransferSyntaxUID = UID(syntax)
    if "MediaStorageSOPClassUID" not in meta and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "MediaStorageSOPInstanceUID" not in meta and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
