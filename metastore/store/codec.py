"""Byte encodings of module values and DICOM JSON for storage.

This module owns how values become bytes in the database: a canonical JSON
text (sorted keys, NaN/±Infinity/-0.0 and big ints kept) whose BLAKE2b digest
addresses a value; raw deflate with fixed preset dictionaries, optionally
extended by a *base* (a sibling's canonical JSON, so near-identical values
store only their differences); *composites* (one image's own values in one
row); and packed bit lists for overlay pixel data.  Every blob starts with a
flag byte, so a format change is a new flag, never a rewrite of stored rows.
It imports only ``metastore.types``.  The key ``"$bits"`` is reserved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib
from typing import Any

import orjson

from metastore.types import DicomJson, ModuleValue

__all__ = [
    "Encoded",
    "base_digest",
    "canonical",
    "composite_digest",
    "compress",
    "decode_dicom_json",
    "decode_value",
    "dicom_json_bytes",
    "digest",
    "encode_dicom_json",
    "encode_module",
    "encode_value",
    "inflate",
    "is_composite",
    "json_text",
    "mark_composite",
    "needs_base",
    "pack_bits",
    "packs_bits",
    "unpack_bits",
    "value_digest",
]

# Flag bits of the first byte of every stored blob.  The deflate bits name
# the preset dictionary: the module value words, the DICOM JSON openings, and
# optionally a *base* appended to it (a sibling's canonical JSON, stored once
# in its own row; the caller hands its bytes to the decoder).
_DEFLATE = 0x01  # raw deflate (wbits -15), dictionary: module value words
_STDLIB = 0x02  # body needs json.loads (NaN/Infinity literals, odd text)
_BITS = 0x04  # body contains {"$bits": ..., "n": ...} packed bit lists
_DICOM = 0x08  # raw deflate, dictionary: DICOM JSON openings
_BASE = 0x10  # a base's canonical JSON follows the dictionary
_MULTI = 0x20  # a composite: {module type: value} of one image's own values
_KNOWN = _DEFLATE | _STDLIB | _BITS | _DICOM | _BASE | _MULTI
#: zlib uses at most the last 32 KiB of a preset dictionary.
_WINDOW = 32768

#: Lists of 0/1 at least this long are packed (shorter ones are not worth it).
BITS_MIN_LENGTH = 64
#: zlib level for module values (small: level 9 costs nothing measurable).
VALUE_LEVEL = 9
#: zlib level for DICOM JSON: on pydicom's test files level 9 saved 0.7 % over
#: level 6 for 30 % more time, so 6.
DICOM_JSON_LEVEL = 6

# The preset dictionaries are part of the storage format: NEVER edit these
# literals (stored rows would no longer decompress); add a new flag instead.
# Module value dictionary: the key skeletons of Cornerstone's module types.
_VALUE_WORDS = (
    '{"accessionNumber":null,"studyDate":null,"studyDescription":null,'
    '"studyTime":null}{"acquisitionDate":null,"acquisitionTime":null,'
    '"modality":null,"seriesDate":null,"seriesDescription":null,'
    '"seriesInstanceUID":null,"seriesNumber":null,"seriesTime":null,'
    '"studyInstanceUID":null}{"instanceNumber":null,"lossyImageCompression":null,'
    '"lossyImageCompressionMethod":null,"lossyImageCompressionRatio":null,'
    '"sopInstanceUID":null}{"patientID":null,"patientName":{"Alphabetic":null}}'
    '{"patientAge":null,"patientSex":null,"patientSize":null,"patientWeight":null}'
    '{"imageOrientationPatient":[],"imagePositionPatient":[],"imageSubType":null,'
    '"imageType":null,"isNMReconstructable":false,"modality":null,'
    '"numberOfFrames":null,"pixelSpacing":[],"sliceThickness":null,'
    '"spacingBetweenSlices":null}{"columnCosines":[0,1,0],"columnPixelSpacing":null,'
    '"columns":null,"frameOfReferenceUID":null,"imageOrientationPatient":'
    '[1,0,0,0,1,0],"imagePositionPatient":[],"pixelSpacing":[],"rowCosines":'
    '[1,0,0],"rowPixelSpacing":null,"rows":null,"sliceLocation":null,'
    '"sliceThickness":null,"usingDefaultValues":false}{"bitsAllocated":16,'
    '"bitsStored":12,"bluePaletteColorLookupTableData":null,'
    '"bluePaletteColorLookupTableDescriptor":null,"columns":512,'
    '"greenPaletteColorLookupTableData":null,'
    '"greenPaletteColorLookupTableDescriptor":null,"highBit":11,'
    '"largestPixelValue":null,"photometricInterpretation":"MONOCHROME2",'
    '"pixelAspectRatio":null,"pixelRepresentation":0,"planarConfiguration":null,'
    '"redPaletteColorLookupTableData":null,"redPaletteColorLookupTableDescriptor":'
    'null,"rows":512,"samplesPerPixel":1,"smallestPixelValue":null}'
    '{"voiLUTFunction":null,"windowCenter":[],"windowWidth":[]}'
    '{"rescaleIntercept":-1024,"rescaleSlope":1,"rescaleType":null}'
    '{"sopClassUID":"1.2.840.10008.5.1.4.1.1.","sopInstanceUID":null}'
    '{"radionuclideHalfLife":null,"radionuclideTotalDose":null,'
    '"radiopharmaceuticalInfo":null,"radiopharmaceuticalStartDateTime":null,'
    '"radiopharmaceuticalStartTime":null}{"correctedImage":null,"decayCorrection":'
    'null,"randomsCorrectionMethod":null,"units":null}{"acquisitionDate":null,'
    '"acquisitionTime":null,"frameReferenceTime":null,"actualFrameDuration":null}'
    '{"overlays":[{"columns":null,"description":null,"label":null,"pixelData":'
    '{"$bits":"","n":0},"roiArea":null,"roiMean":null,"roiStandardDeviation":null,'
    '"rows":null,"type":"G","x":1,"y":1}]}{"transferSyntaxUID":"1.2.840.10008.1.2.'
    '1"}{"frameIncrementPointer":null,"frameTime":null,"frameTimeVector":null,'
    '"numberOfFrames":1,"perFrameFunctionalInformation":{},'
    '"sharedFunctionalInformation":{},"stageNumber":null}{"physicalDeltaX":null,'
    '"physicalDeltaY":null,"physicalUnitsXDirection":null,"physicalUnitsYDirection":'
    'null,"referencePixelX0":null,"referencePixelY0":null,"regionDataType":null,'
    '"regionFlags":null,"regionLocationMaxX1":null,"regionLocationMaxY1":null,'
    '"regionLocationMinX0":null,"regionLocationMinY0":null,"regionSpatialFormat":'
    'null,"transducerFrequency":null}{"sequenceOfUltrasoundRegions":null}'
    '{"imageUrl":"wadors:http","frames/1","/studies/","/series/","/instances/"}'
    '{"cineRate":null,"frameTime":null,"numberOfFrames":null,"preferredPlaybackSequencing":'
    'null}{"AccessionNumber":null,"AcquisitionDate":null,"AcquisitionTime":null,'
    '"BitsAllocated":16,"BitsStored":12,"Columns":512,"FrameOfReferenceUID":null,'
    '"HighBit":11,"ImageOrientationPatient":[1,0,0,0,1,0],"ImagePositionPatient":[],'
    '"InstanceNumber":null,"Modality":null,"NumberOfFrames":null,"Overlays":[],'
    '"PatientAge":null,"PatientID":null,"PatientName":null,"PatientSex":null,'
    '"PatientSize":null,"PatientWeight":null,"PhotometricInterpretation":'
    '"MONOCHROME2","PixelRepresentation":0,"PixelSpacing":[],"RescaleIntercept":'
    '-1024,"RescaleSlope":1,"RescaleType":null,"Rows":512,"SOPClassUID":null,'
    '"SOPInstanceUID":null,"SamplesPerPixel":1,"SeriesDate":null,'
    '"SeriesDescription":null,"SeriesInstanceUID":null,"SeriesNumber":null,'
    '"SeriesTime":null,"SliceLocation":null,"SliceThickness":null,"StudyDate":null,'
    '"StudyDescription":null,"StudyInstanceUID":null,"StudyTime":null,'
    '"VOILUTFunction":null,"WindowCenter":null,"WindowWidth":null}'
)
_VALUE_ZDICT = _VALUE_WORDS.encode()

# DICOM JSON dictionary: the openings of common attributes, most frequent
# last (deflate reaches the end of the dictionary with the shortest distances).
_DICOM_JSON_TAGS = (
    ("00020010", "UI"), ("00080005", "CS"), ("00080008", "CS"),
    ("00080012", "DA"), ("00080013", "TM"), ("00080016", "UI"),
    ("00080018", "UI"), ("00080020", "DA"), ("00080021", "DA"),
    ("00080022", "DA"), ("00080023", "DA"), ("00080030", "TM"),
    ("00080031", "TM"), ("00080032", "TM"), ("00080033", "TM"),
    ("00080050", "SH"), ("00080060", "CS"), ("00080070", "LO"),
    ("00080080", "LO"), ("00080090", "PN"), ("00081010", "SH"),
    ("00081030", "LO"), ("0008103E", "LO"), ("00081090", "LO"),
    ("00100010", "PN"), ("00100020", "LO"), ("00100030", "DA"),
    ("00100040", "CS"), ("00101010", "AS"), ("00180015", "CS"),
    ("00180050", "DS"), ("00180060", "DS"), ("00181020", "LO"),
    ("00181030", "LO"), ("00185100", "CS"), ("0020000D", "UI"),
    ("0020000E", "UI"), ("00200010", "SH"), ("00200011", "IS"),
    ("00200012", "IS"), ("00200013", "IS"), ("00200032", "DS"),
    ("00200037", "DS"), ("00200052", "UI"), ("00201040", "LO"),
    ("00201041", "DS"), ("00280002", "US"), ("00280004", "CS"),
    ("00280010", "US"), ("00280011", "US"), ("00280030", "DS"),
    ("00280100", "US"), ("00280101", "US"), ("00280102", "US"),
    ("00280103", "US"), ("00281050", "DS"), ("00281051", "DS"),
    ("00281052", "DS"), ("00281053", "DS"), ("7FE00010", "OW"),
)  # fmt: skip
_DICOM_JSON_ZDICT = (
    "".join(
        f'"{tag}":{{"vr":"{vr}","Value":["' for tag, vr in _DICOM_JSON_TAGS
    ).encode()
    + b'{"vr":"SQ","Value":[{"vr":"OB","BulkDataURI":"'
)


_LONG_INT = re.compile(rb"(?:^|[\[:,])-?[0-9]{19}")


def _deflate(data: bytes, level: int, zdict: bytes) -> bytes:
    """Raw-deflate ``data`` (no zlib header or checksum: 6 bytes less a row)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9, 0, zdict)
    return compressor.compress(data) + compressor.flush()


def _inflate(data: bytes, zdict: bytes) -> bytes:
    """Undo :func:`_deflate`."""
    decompressor = zlib.decompressobj(-15, zdict)
    return decompressor.decompress(data) + decompressor.flush()


def _canonical(value: Any) -> tuple[bytes, int]:
    """Return the canonical JSON bytes of ``value`` and the flags it needs.

    orjson (sorted keys) when its text means the same value: it refuses ints
    past 64 bits, lone surrogates and foreign types (then the stdlib encoder
    is used), and it writes NaN and ±Infinity as ``null``, so a value whose
    text holds ``null`` is checked for non-finite floats first.  A value
    always takes the same path, so its digest is stable.
    """
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _canonical_stdlib(value)
    if b"null" in data and not _finite(value):
        return _canonical_stdlib(value)
    return data, 0


# Types that are never a NaN or infinity and hold nothing that could be.
_FINITE_SCALARS = frozenset({str, int, bool, type(None)})


def _finite(value: Any) -> bool:
    """False if ``value`` holds a NaN or infinite float anywhere."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        return bool(value - value == 0.0)
    elif kind in _FINITE_SCALARS:
        return True
    else:
        return _finite_subclass(value)
    # Scalars are checked here rather than by a call each: module values and
    # DICOM JSON are mostly flat, and this walk runs for every value whose
    # text holds a null.
    scalars = _FINITE_SCALARS
    for item in items:
        kind = type(item)
        if kind in scalars:
            continue
        if kind is float:
            if item - item != 0.0:
                return False
        elif not _finite(item):
            return False
    return True


def _finite_subclass(value: Any) -> bool:
    """:func:`_finite` of a value of some other type (subclasses of the JSON ones)."""
    if isinstance(value, float):
        return bool(value - value == 0.0)
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    if isinstance(value, (list, tuple)):
        return all(map(_finite, value))
    return True


def _canonical_stdlib(value: Any) -> tuple[bytes, int]:
    """:func:`_canonical` by the stdlib encoder (NaN, big ints, surrogates)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    flags = 0
    try:
        data = text.encode()
    except UnicodeEncodeError:
        # Lone surrogates: keep them as \\u escapes, which only json reads back.
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        flags |= _STDLIB
    # orjson reads NaN literals as errors and ints past 64 bits as floats.  A
    # false positive (the word or digits inside a string) only costs speed.
    if b"NaN" in data or b"Infinity" in data or _LONG_INT.search(data):
        flags |= _STDLIB
    return data, flags


def pack_bits(bits: list[int]) -> dict[str, Any]:
    """Pack a list of 0/1 ints as ``{"$bits": base64, "n": len}``.

    Args:
        bits: the list; every item must be the int 0 or 1.

    Returns:
        The tagged dict that :func:`unpack_bits` turns back into the list.
    """
    n = len(bits)
    if n == 0:
        return {"$bits": "", "n": 0}
    # bytes() of 0/1 ints -> b"\x00\x01..." -> "01..." -> one big int: all in C.
    text = bytes(bits).translate(_TO_ASCII_BITS)
    packed = int(text, 2).to_bytes((n + 7) // 8, "big")
    return {"$bits": base64.b64encode(packed).decode("ascii"), "n": n}


def unpack_bits(packed: dict[str, Any]) -> list[int]:
    """Return the list of 0/1 ints packed by :func:`pack_bits`."""
    n = packed["n"]
    if n == 0:
        return []
    number = int.from_bytes(base64.b64decode(packed["$bits"]), "big")
    return list(format(number, f"0{n}b").encode("ascii").translate(_FROM_ASCII_BITS))


_TO_ASCII_BITS = bytes.maketrans(b"\x00\x01", b"01")
_FROM_ASCII_BITS = bytes.maketrans(b"01", b"\x00\x01")


def _is_bit_list(value: list[Any]) -> bool:
    """True for a long list made only of the ints 0 and 1 (not bools)."""
    return (
        len(value) >= BITS_MIN_LENGTH
        and {type(item) for item in value} == {int}
        and set(value) <= {0, 1}
    )


def _pack_walk(value: Any) -> tuple[Any, bool]:
    """Copy ``value`` with every long 0/1 list packed; report whether any was."""
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key], item_changed = _pack_walk(item)
            changed |= item_changed
        return (out, True) if changed else (value, False)
    if isinstance(value, list):
        if _is_bit_list(value):
            return pack_bits(value), True
        changed = False
        items = []
        for item in value:
            new, item_changed = _pack_walk(item)
            items.append(new)
            changed |= item_changed
        return (items, True) if changed else (value, False)
    return value, False


def _unpack_walk(value: Any) -> Any:
    """Undo :func:`_pack_walk` in place where possible and return the value."""
    if isinstance(value, dict):
        if "$bits" in value and len(value) == 2 and "n" in value:
            return unpack_bits(value)
        for key, item in value.items():
            value[key] = _unpack_walk(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            value[index] = _unpack_walk(item)
    return value


def _loads(data: bytes) -> Any:
    """orjson's fast parse, with json's for anything orjson refuses."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def _zdict(flags: int, base: bytes | None) -> bytes:
    """The preset dictionary that the deflate bits of ``flags`` name."""
    static = _DICOM_JSON_ZDICT if flags & _DICOM else _VALUE_ZDICT
    if not flags & _BASE:
        return static
    if base is None:
        raise ValueError("this blob was compressed against a base: pass its bytes")
    return (static + base)[-_WINDOW:]


def canonical(value: ModuleValue, *, pack: bool = False) -> tuple[bytes, int]:
    """The canonical JSON bytes of ``value`` and the flags decoding needs.

    Args:
        value: a JSON-like value (dicts with str keys, lists, str, int,
            float incl. NaN/±Infinity/-0.0, bool, None).
        pack: pack long 0/1 int lists (overlay pixel data) as ``$bits``.
    """
    flags = 0
    if pack:
        value, packed = _pack_walk(value)
        if packed:
            flags |= _BITS
    data, more = _canonical(value)
    return data, flags | more


class Encoded(dict[str, Any]):
    """A value already turned into canonical bytes, standing in for it.

    Workers encode what they read (:func:`metastore.store.encode.pre_encode`)
    so that the process writing to the database only compresses and writes;
    bytes also pickle far faster than nested dicts.  It is an (empty) dict
    only so that it can stand in for DICOM JSON too; nothing but the store
    should look inside.
    """

    __slots__ = ("data", "digest", "flags")

    def __init__(self, data: bytes, flags: int, digest: bytes) -> None:
        super().__init__()
        #: Canonical JSON bytes (:func:`canonical`).
        self.data = data
        #: The flags :func:`canonical` returned.
        self.flags = flags
        #: :func:`value_digest` of ``data`` (empty where nobody needs it).
        self.digest = digest

    def __reduce__(self) -> tuple[type[Encoded], tuple[bytes, int, bytes]]:
        return (Encoded, (self.data, self.flags, self.digest))

    def __repr__(self) -> str:
        return f"Encoded({self.data[:40]!r}...)"


def value_digest(data: bytes) -> bytes:
    """The 16-byte BLAKE2b digest that addresses canonical bytes ``data``."""
    return hashlib.blake2b(data, digest_size=16).digest()


def composite_digest(data: bytes) -> bytes:
    """The digest of a composite row (apart from the values it holds)."""
    return hashlib.blake2b(data, digest_size=16, person=b"metastore-multi").digest()


def is_composite(blob: bytes) -> bool:
    """True for a composite row: decode it, then pick the module type's key."""
    return bool(blob[0] & _MULTI)


def mark_composite(flags: int) -> int:
    """``flags`` for a composite row."""
    return flags | _MULTI


def base_digest(data: bytes) -> bytes:
    """The digest of a *base* row holding ``data`` (apart from value digests)."""
    return hashlib.blake2b(data, digest_size=16, person=b"metastore-base").digest()


def compress(
    data: bytes, flags: int, *, base: bytes | None = None, dicom: bool = False
) -> bytes:
    """Store canonical bytes: flag byte + deflate, or as they are if smaller.

    Args:
        data: canonical JSON bytes from :func:`canonical`.
        flags: the flags :func:`canonical` returned.
        base: a sibling's canonical bytes to compress against (the decoder
            will need the same bytes).
        dicom: use the DICOM JSON dictionary instead of the module value one.
    """
    mode = (_DICOM if dicom else _DEFLATE) | (_BASE if base is not None else 0)
    level = DICOM_JSON_LEVEL if dicom else VALUE_LEVEL
    deflated = _deflate(data, level, _zdict(mode, base))
    if len(deflated) < len(data) or base is not None:
        return bytes((flags | mode,)) + deflated
    return bytes((flags,)) + data


def inflate(blob: bytes, base: bytes | None = None) -> bytes:
    """The canonical JSON bytes inside a stored blob.

    Raises:
        ValueError: unknown flags, a damaged blob, or a base needed and not given.
    """
    flags = blob[0]
    if flags & ~_KNOWN:
        raise ValueError(f"unknown encoding flags {flags:#04x}")
    if flags & (_DEFLATE | _DICOM):
        try:
            return _inflate(blob[1:], _zdict(flags, base))
        except zlib.error as exc:
            raise ValueError(f"damaged blob: {exc}") from None
    return blob[1:]


def needs_base(blob: bytes) -> bool:
    """True if decoding ``blob`` needs the bytes of its base."""
    return bool(blob[0] & _BASE)


def decode_value(blob: bytes, base: bytes | None = None) -> ModuleValue:
    """Decode a stored module value into a new object.

    Args:
        blob: the stored bytes.
        base: the canonical bytes of its base (:func:`inflate` of the base
            row), when :func:`needs_base` says so.

    Raises:
        ValueError: the blob has unknown flags, is damaged, or needs a base.
    """
    flags = blob[0]
    data = inflate(blob, base)
    value = json.loads(data) if flags & _STDLIB else _loads(data)
    if flags & _BITS:
        value = _unpack_walk(value)
    return value


def encode_value(value: ModuleValue, *, pack: bool = False) -> tuple[bytes, bytes]:
    """Encode a self-contained module value: ``(digest, blob)``.

    Equal values get equal digests whatever their key order.
    """
    data, flags = canonical(value, pack=pack)
    return value_digest(data), compress(data, flags)


def encode_module(module_type: str, value: ModuleValue) -> tuple[bytes, bytes]:
    """:func:`encode_value` with bit packing where a module type needs it."""
    return encode_value(value, pack=packs_bits(module_type))


def packs_bits(module_type: str) -> bool:
    """True for module types whose values may carry long bit lists."""
    return module_type == "overlayPlaneModule"


def digest(value: ModuleValue, *, pack: bool = False) -> bytes:
    """The 16-byte digest :func:`encode_value` gives ``value``."""
    return value_digest(canonical(value, pack=pack)[0])


def encode_dicom_json(instance: DicomJson, base: bytes | None = None) -> bytes:
    """Compress one DICOM JSON instance for the ``instances.dicom_json`` column.

    Args:
        instance: the DICOM JSON object.
        base: canonical bytes of a sibling instance (same series) stored as a
            base row; siblings share most attributes, so this stores little
            more than the differences.
    """
    data, flags = _canonical(instance)
    return compress(data, flags, base=base, dicom=True)


def dicom_json_bytes(instance: DicomJson) -> bytes:
    """Canonical bytes of a DICOM JSON instance (to serve as a base)."""
    return _canonical(instance)[0]


def decode_dicom_json(blob: bytes, base: bytes | None = None) -> DicomJson:
    """Decode :func:`encode_dicom_json` output.

    Raises:
        ValueError: unknown flags, a damaged blob, or a base needed and not given.
    """
    result: DicomJson = decode_value(blob, base)
    return result


def json_text(blob: bytes, base: bytes | None = None) -> bytes:
    """The JSON text (RFC 8259) of a stored value, without building the value.

    The canonical bytes as they are, unless they hold a ``NaN`` or
    ``Infinity`` literal, which JSON has no syntax for: that value is
    decoded and written again with ``null`` in their place (as orjson
    writes them).  Lone surrogates stay ``\\ud800`` escapes.

    Raises:
        ValueError: unknown flags, a damaged blob, or a base needed and not given.
    """
    data = inflate(blob, base)
    if blob[0] & _STDLIB and (b"NaN" in data or b"Infinity" in data):
        value = json.loads(data)
        try:
            return orjson.dumps(value)
        except TypeError:  # lone surrogates or big ints: the stdlib again
            text = json.dumps(_finite_or_null(value), separators=(",", ":"))
            return text.encode()
    return data


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN and infinity replaced by ``None``."""
    if isinstance(value, float) and value - value != 0.0:
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(item) for item in value]
    return value
