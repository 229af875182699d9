"""Byte encodings of module values and DICOM JSON for storage.

This module owns how values become bytes in the database: a canonical JSON
text (sorted keys, NaN/±Infinity/-0.0 kept) whose BLAKE2b digest addresses
a module value, raw-deflate compression with a fixed preset dictionary, and
packed bit lists for overlay pixel data.  It imports only ``metastore.types``;
every stored blob starts with one flag byte, so a format change is a new flag,
never a rewrite of stored rows.
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
    "decode_dicom_json",
    "decode_value",
    "digest",
    "encode_dicom_json",
    "encode_module",
    "encode_value",
    "pack_bits",
    "unpack_bits",
]

# Flag bits of the first byte of every stored blob.
_DEFLATE = 0x01  # body is raw deflate (wbits -15) with the preset dictionary
_STDLIB = 0x02  # body needs json.loads (NaN/Infinity literals, odd text)
_BITS = 0x04  # body contains {"$bits": ..., "n": ...} packed bit lists
_KNOWN = _DEFLATE | _STDLIB | _BITS

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

    The stdlib encoder is used (not orjson) because orjson writes NaN and
    ±Infinity as ``null``; sorted keys make equal values encode equally.
    """
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


def encode_value(value: ModuleValue, *, pack: bool = False) -> tuple[bytes, bytes]:
    """Encode a module value for storage.

    Args:
        value: a JSON-like value (dicts with str keys, lists, str, int,
            float incl. NaN/±Infinity/-0.0, bool, None).
        pack: pack long 0/1 int lists (overlay pixel data) as ``$bits``.

    Returns:
        ``(digest, blob)``: the 16-byte digest of the canonical encoding
        (equal values, equal digests) and the bytes to store.
    """
    flags = 0
    if pack:
        value, packed = _pack_walk(value)
        if packed:
            flags |= _BITS
    data, more = _canonical(value)
    flags |= more
    key = hashlib.blake2b(data, digest_size=16).digest()
    if len(data) > 16:
        deflated = _deflate(data, VALUE_LEVEL, _VALUE_ZDICT)
        if len(deflated) < len(data):
            return key, bytes((flags | _DEFLATE,)) + deflated
    return key, bytes((flags,)) + data


def encode_module(module_type: str, value: ModuleValue) -> tuple[bytes, bytes]:
    """:func:`encode_value` with bit packing where a module type needs it."""
    return encode_value(value, pack=module_type == "overlayPlaneModule")


def digest(value: ModuleValue, *, pack: bool = False) -> bytes:
    """The 16-byte BLAKE2b digest :func:`encode_value` gives ``value``."""
    return encode_value(value, pack=pack)[0]


def decode_value(blob: bytes) -> ModuleValue:
    """Decode a blob written by :func:`encode_value` into a new value.

    Raises:
        ValueError: the blob has an unknown flag byte or is damaged.
    """
    flags = blob[0]
    if flags & ~_KNOWN:
        raise ValueError(f"unknown module value encoding flags {flags:#04x}")
    data = blob[1:]
    if flags & _DEFLATE:
        data = _inflate(data, _VALUE_ZDICT)
    value = json.loads(data) if flags & _STDLIB else _loads(data)
    if flags & _BITS:
        value = _unpack_walk(value)
    return value


def encode_dicom_json(instance: DicomJson) -> bytes:
    """Compress one DICOM JSON instance for the ``instances.dicom_json`` column."""
    data, flags = _canonical(instance)
    return bytes((flags | _DEFLATE,)) + _deflate(
        data, DICOM_JSON_LEVEL, _DICOM_JSON_ZDICT
    )


def decode_dicom_json(blob: bytes) -> DicomJson:
    """Decode :func:`encode_dicom_json` output.

    Raises:
        ValueError: the blob has an unknown flag byte or is damaged.
    """
    flags = blob[0]
    if flags & ~(_DEFLATE | _STDLIB):
        raise ValueError(f"unknown DICOM JSON encoding flags {flags:#04x}")
    data = blob[1:]
    if flags & _DEFLATE:
        data = _inflate(data, _DICOM_JSON_ZDICT)
    result: DicomJson = json.loads(data) if flags & _STDLIB else _loads(data)
    return result
