"""Part 10 to DICOM JSON: the first step every indexed file goes through.

This module owns the conversion of a pydicom ``Dataset`` to a DICOM JSON
instance (PS3.18 F.2) that equals, element for element, what
``Dataset.to_json_dict`` gives (and what the oracle's ``make_cases.py``
builds from it), only much faster: raw elements are decoded here directly
and pydicom's own conversion is used only for what is tricky.  pydicom is
imported only here and in the indexer.
"""

from __future__ import annotations

import base64
import logging
import struct
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from pydicom import config as _pd_config
from pydicom import hooks as _pd_hooks
from pydicom import valuerep as _pd_valuerep
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from metastore.errors import DicomError
from metastore.types import DicomJson

__all__ = [
    "DEFAULT_INLINE_TAGS",
    "OVERLAY_DATA_TAGS",
    "PIXEL_DATA_TAGS",
    "dataset_to_dicom_json",
]

logger = logging.getLogger(__name__)

#: (7FE0,0010) Pixel Data, (7FE0,0008) Float Pixel Data and (7FE0,0009)
#: Double Float Pixel Data: always a BulkDataURI at the top level.
PIXEL_DATA_TAGS: frozenset[int] = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
#: (60xx,3000) Overlay Data of the 16 overlay groups 6000-601E.
OVERLAY_DATA_TAGS: frozenset[int] = frozenset(
    ((0x6000 + 2 * i) << 16) | 0x3000 for i in range(16)
)
#: What is kept as InlineBinary whatever its size, unless told otherwise:
#: metastore reads overlays for real (overlayPlaneModule, divergence 3).
DEFAULT_INLINE_TAGS: frozenset[int] = OVERLAY_DATA_TAGS

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
# struct format character and item size of the binary numeric VRs.
_NUMBER_VRS: dict[str, tuple[str, int]] = {
    "US": ("H", 2),
    "SS": ("h", 2),
    "UL": ("L", 4),
    "SL": ("l", 4),
    "FL": ("f", 4),
    "FD": ("d", 8),
    "SV": ("q", 8),
    "UV": ("Q", 8),
}
# VRs decoded with the dataset's (0008,0005) SpecificCharacterSet.
_CHARSET_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
# pydicom fixes the first value of these (SS-encoded) LUT descriptors
# (0028,1101-1103) and (0028,3002) when it is negative.
_LUT_DESCRIPTOR_TAGS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})

# Memo of tag -> "GGGGEEEE"; tags repeat across every file of an archive.
_KEYS: dict[int, str] = {}
# Memo of tag -> dictionary VR for implicit VR files (None: ask pydicom).
_IMPLICIT_VR: dict[int, str | None] = {}


class _Fallback(Exception):
    """pydicom cannot convert an element: redo the dataset as make_cases does."""

    def __init__(self, path: str, exc: BaseException) -> None:
        self.path = path
        self.exc = exc
        super().__init__(f"{path}: {type(exc).__name__}: {exc}")


class _Bulk(str):
    """Placeholder pydicom puts in "BulkDataURI"; resolved by :func:`_bulk`."""

    __slots__ = ("elem",)
    elem: DataElement


def _bulk_marker(elem: DataElement) -> str:
    """Our bulk_data_element_handler for pydicom: remember the element."""
    marker = _Bulk()
    marker.elem = elem
    return marker


class _Ctx:
    """Per-call settings shared by the recursive helpers."""

    __slots__ = ("fast", "handler", "inline", "max_inline", "threshold")

    def __init__(
        self,
        handler: Callable[[str], str] | None,
        threshold: int,
        inline: frozenset[int],
        fast: bool,
    ) -> None:
        self.handler = handler
        self.threshold = threshold
        # to_json_dict's test: bulk when len(bytes) > (threshold // 4) * 3,
        # i.e. when the base64 text would be longer than the threshold.
        self.max_inline = (threshold // 4) * 3
        self.inline = inline
        self.fast = fast


def dataset_to_dicom_json(
    ds: Dataset,
    *,
    bulk_data_uri: Callable[[str], str] | None = None,
    bulk_threshold: int = 1024,
    inline_tags: frozenset[int] | None = None,
) -> DicomJson:
    """Convert a pydicom dataset to a DICOM JSON instance, fast and exactly.

    The result equals what the oracle's ``make_cases.convert()`` builds:
    ``ds.to_json_dict(bulk_data_threshold=bulk_threshold,
    bulk_data_element_handler=...)``, every top-level Pixel Data element
    ((7FE0,0010), (7FE0,0008), (7FE0,0009)) as a BulkDataURI, the file
    meta's (0002,0010) TransferSyntaxUID added, keys sorted.  When pydicom
    cannot convert some value (e.g. IS ``"1A"``), the whole dataset is
    redone the way make_cases does: ``to_json_dict(suppress_invalid_tags=True)``
    with strict reading, which drops the offending elements (logged as
    warnings) and keeps the rest.

    Args:
        ds: The dataset, typically from ``dcmread(path, stop_before_pixels=True)``
            and not yet touched (elements pydicom has not converted yet are
            decoded here without converting them in ``ds``).
        bulk_data_uri: Called with the 8-hex-digit tag (``"7FE00010"``) of an
            element that is bulk data; returns its BulkDataURI.  ``None``:
            elements that would be bulk data (Pixel Data included) are left
            out of the result.
        bulk_threshold: Binary values whose base64 text would be longer than
            this become bulk data (pydicom's ``bulk_data_threshold``).
        inline_tags: Tags always kept as InlineBinary whatever their size;
            default :data:`DEFAULT_INLINE_TAGS` (overlay data of groups
            6000-601E).

    Returns:
        The DICOM JSON instance, keys in tag order.

    Raises:
        DicomError: The dataset cannot be converted even with the fallback
            (e.g. an unreadable (0002,0010) TransferSyntaxUID); the message
            names the offending tag.
    """
    ctx = _Ctx(
        bulk_data_uri,
        bulk_threshold,
        DEFAULT_INLINE_TAGS if inline_tags is None else inline_tags,
        _fast_path_allowed(),
    )
    with warnings.catch_warnings():
        # pydicom warns about every invalid value; make_cases ignores them.
        warnings.simplefilter("ignore")
        try:
            meta = _convert(ds, ctx, "", top=True)
        except _Fallback as fb:
            logger.debug("falling back to to_json_dict: %s", fb)
            meta = _make_cases_fallback(ds, ctx)
        try:
            ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        except Exception as exc:
            raise DicomError(
                f"(0002,0010) TransferSyntaxUID cannot be read: {exc}"
            ) from exc
    if ts:
        meta["00020010"] = {"vr": "UI", "Value": [str(ts)]}
    return dict(sorted(meta.items()))


def _fast_path_allowed() -> bool:
    """Whether pydicom's settings are the defaults the direct decoding assumes."""
    c = _pd_config
    h = _pd_hooks.hooks
    return (
        c.settings.reading_validation_mode != c.RAISE
        and not c.datetime_conversion
        and not c.use_DS_numpy
        and not c.use_IS_numpy
        and not c.use_DS_decimal
        and _pd_valuerep.DSclass is _pd_valuerep.DSfloat
        and not c.use_none_as_empty_text_VR_value
        and c.data_element_callback is None
        and h.raw_element_vr is _pd_hooks.raw_element_vr
        and h.raw_element_value is _pd_hooks.raw_element_value
        and not h.raw_element_kwargs
    )


def _key(tag: int) -> str:
    key = _KEYS.get(tag)
    if key is None:
        key = _KEYS[tag] = f"{tag:08X}"
    return key


def _tag_str(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _convert(ds: Dataset, ctx: _Ctx, path: str, *, top: bool) -> DicomJson:
    """Convert one dataset (the instance or a sequence item)."""
    out: DicomJson = {}
    encodings = _encodings(ds)
    # A list: converting an element through pydicom replaces it in ds._dict.
    for tag, elem in list(ds._dict.items()):
        key = _key(tag)
        if top and tag in PIXEL_DATA_TAGS:
            value = _pixel_data(ds, tag, elem, ctx, path)
        elif ctx.fast and type(elem) is RawDataElement:
            value = _raw(ds, elem, ctx, path, encodings)
        else:
            value = _element(ds, tag, ctx, path)
        if value is not None:
            out[key] = value
    return out if top else dict(sorted(out.items()))


def _encodings(ds: Dataset) -> list[str]:
    """The Python encodings pydicom decodes ``ds``'s text with."""
    # Exactly what Dataset.__getitem__ passes to convert_raw_data_element:
    # the charset read with the dataset (inherited by sequence items) or
    # its own (0008,0005) SpecificCharacterSet.
    enc = ds.original_character_set or ds._character_set
    if isinstance(enc, str):
        return [enc]
    return list(enc) or ["iso8859"]


def _pixel_data(
    ds: Dataset, tag: int, elem: Any, ctx: _Ctx, path: str
) -> dict[str, Any] | None:
    """A top-level Pixel Data element: always a BulkDataURI, never read."""
    vr = elem.VR
    if type(elem) is not RawDataElement or vr not in _BINARY_VRS:
        # Implicit VR ("OB or OW") or already converted: let pydicom settle it.
        try:
            vr = ds[tag].VR
        except Exception as exc:
            raise _Fallback(path + _tag_str(tag), exc) from exc
    if ctx.handler is None:
        return None
    return {"vr": vr, "BulkDataURI": ctx.handler(_key(tag))}


def _element(ds: Dataset, tag: int, ctx: _Ctx, path: str) -> dict[str, Any] | None:
    """Convert one element through pydicom (exact by construction)."""
    try:
        elem = ds[tag]
        if elem.VR == "SQ":
            items = list(elem.value)
            where = path + _tag_str(tag)
            return {
                "vr": "SQ",
                "Value": [
                    _convert(item, ctx, f"{where}[{i}]", top=False)
                    for i, item in enumerate(items)
                ],
            }
        value: dict[str, Any] = elem.to_json_dict(_bulk_marker, ctx.threshold)
    except _Fallback:
        raise
    except Exception as exc:
        raise _Fallback(path + _tag_str(tag), exc) from exc
    bulk = value.get("BulkDataURI")
    if isinstance(bulk, _Bulk):
        return _bulk(tag, elem.VR, bulk.elem.value, ctx)
    return value


def _bulk(tag: int, vr: str, data: bytes, ctx: _Ctx) -> dict[str, Any] | None:
    """A binary value above the threshold: inline, BulkDataURI or left out."""
    if tag in ctx.inline:
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    if ctx.handler is None:
        return None
    return {"vr": vr, "BulkDataURI": ctx.handler(_key(tag))}


def _implicit_vr(tag: int) -> str | None:
    """The dictionary VR of a public tag in an implicit VR dataset."""
    try:
        return _IMPLICIT_VR[tag]
    except KeyError:
        pass
    vr: str | None
    if tag >> 16 & 1:
        vr = None  # private: the VR depends on the private creator
    else:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            # pydicom: group length -> UL, anything else -> UN with a warning
            vr = "UL" if tag & 0xFFFF == 0 else None
    _IMPLICIT_VR[tag] = vr
    return vr


def _raw(
    ds: Dataset,
    raw: RawDataElement,
    ctx: _Ctx,
    path: str,
    encodings: list[str],
) -> dict[str, Any] | None:
    """Convert a raw element directly, or through pydicom when it is tricky."""
    tag = raw.tag
    vr = raw.VR
    if vr is None:
        vr = _implicit_vr(tag)
    if vr is None or vr == "UN" or vr == "SQ" or " " in vr:
        # UN may be replaced by a known VR; ambiguous VRs ("US or SS") are
        # resolved from other elements; sequences are parsed by pydicom.
        return _element(ds, tag, ctx, path)
    data = raw.value
    if data is None:  # deferred read (defer_size)
        return _element(ds, tag, ctx, path)
    if raw.length == 0 or not data:
        if vr == "SQ":
            return {"vr": "SQ", "Value": []}
        return {"vr": vr}
    values: list[Any] | None
    if vr in _BINARY_VRS:
        if len(data) > ctx.max_inline:
            return _bulk(tag, vr, data, ctx)
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    if vr in _NUMBER_VRS:
        values = _numbers(vr, data, raw.is_little_endian, tag)
    elif vr in _CHARSET_VRS:
        values = _charset_text(vr, data, encodings)
    elif vr == "AT":
        values = _tags(data, raw.is_little_endian)
    else:
        values = _ascii_text(vr, data)
    if values is None:
        return _element(ds, tag, ctx, path)
    if not values:
        return {"vr": vr}
    return {"vr": vr, "Value": values}


def _numbers(vr: str, data: bytes, little: bool, tag: int) -> list[Any] | None:
    """US/SS/UL/SL/FL/FD/SV/UV values; None when the length is wrong."""
    fmt, size = _NUMBER_VRS[vr]
    n, rest = divmod(len(data), size)
    if rest:
        return None  # pydicom raises BytesLengthException
    values = list(struct.unpack(f"{'<' if little else '>'}{n}{fmt}", data))
    if n > 1 and tag in _LUT_DESCRIPTOR_TAGS and values[0] < 0:
        values[0] += 65536
    return values


def _tags(data: bytes, little: bool) -> list[Any] | None:
    """AT values as "GGGGEEEE" strings."""
    n, rest = divmod(len(data), 4)
    if rest:
        return None
    words = struct.unpack(f"{'<' if little else '>'}{2 * n}H", data)
    return [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, 2 * n, 2)]


def _ascii_text(vr: str, data: bytes) -> list[Any] | None:
    """Text VRs pydicom always decodes as ISO 8859-1; [] means empty."""
    text = data.decode("latin-1")
    parts: list[str]
    if vr == "AE":
        parts = [s.strip() for s in text.split("\\")]
    elif vr == "UI":
        parts = [s.strip() for s in text.rstrip("\x00 ").split("\\")]
    elif vr == "UR":
        parts = [text.rstrip()]
    elif vr == "DS":
        parts = text.strip().rstrip(" \x00").split("\\")
        if len(parts) == 1 and not parts[0]:
            return []
        try:
            return [float(s) for s in parts]
        except ValueError:
            return None
    elif vr == "IS":
        parts = text.rstrip(" \x00").split("\\")
        if len(parts) == 1 and not parts[0]:
            return []
        return _ints(parts)
    elif vr in ("AS", "CS", "DA", "DT", "TM"):
        parts = text.rstrip(" \x00").split("\\")
    else:
        return None  # unknown VR: pydicom raises NotImplementedError
    if len(parts) == 1 and not parts[0]:
        return []
    return parts


def _ints(parts: list[str]) -> list[Any] | None:
    """IS values; None for anything but plain short integers."""
    out = []
    for s in parts:
        t = s.strip(" ")
        digits = t[1:] if t[:1] in ("+", "-") else t
        # "1.0", "1e3", "1_0" and huge values have their own pydicom rules.
        if not digits.isdigit() or not digits.isascii() or len(digits) > 15:
            return None
        out.append(int(t))
    return out


def _charset_text(vr: str, data: bytes, encodings: list[str]) -> list[Any] | None:
    """SH/LO/UC/ST/LT/UT/PN values in the dataset's charset; [] means empty."""
    if b"\x1b" in data:
        return None  # ISO 2022 escape sequences: pydicom's decode_bytes
    if vr == "PN":
        data = data.rstrip(b"\x00 ")
    try:
        text = data.decode(encodings[0])
    except (UnicodeError, LookupError):
        return None  # pydicom warns and decodes differently
    if vr == "PN":
        # pydicom re-encodes each name (PersonName.encode); keep to names
        # that survive the round trip unchanged.
        try:
            if text.encode(encodings[0]) != data:
                return None
        except UnicodeError:
            return None
        return _person_names(text)
    if vr in ("ST", "LT", "UT"):
        text = text.rstrip("\x00 ")
        return [text] if text else []
    parts = [s.rstrip("\x00 ") for s in text.split("\\")]
    if len(parts) == 1 and not parts[0]:
        return []
    return parts


def _person_names(text: str) -> list[Any] | None:
    """PN values as {"Alphabetic", "Ideographic", "Phonetic"} objects."""
    names = text.split("\\")
    out = []
    for name in names:
        comps = name.split("=")
        while comps and not comps[-1]:
            comps.pop()
        if not comps:
            if len(names) == 1:
                return []
            return None  # pydicom raises IndexError on an empty name
        pn = {"Alphabetic": comps[0]}
        if len(comps) > 1:
            pn["Ideographic"] = comps[1]
        if len(comps) > 2:
            pn["Phonetic"] = comps[2]
        out.append(pn)
    return out


def _make_cases_fallback(ds: Dataset, ctx: _Ctx) -> DicomJson:
    """What make_cases.convert() does when to_json_dict raises."""
    try:
        meta: DicomJson = ds.to_json_dict(
            bulk_data_threshold=ctx.threshold, bulk_data_element_handler=_bulk_marker
        )
    except Exception:
        # to_json_dict(suppress_invalid_tags=True), with the dropped tags kept
        # for the log: elements left raw so far are read strictly now.
        meta = {}
        with _pd_config.strict_reading():
            for tag in list(ds.keys()):
                try:
                    meta[_key(tag)] = ds[tag].to_json_dict(_bulk_marker, ctx.threshold)
                except Exception as exc:
                    logger.warning(
                        "dropped %s: %s: %s", _tag_str(tag), type(exc).__name__, exc
                    )
    _resolve(meta, ctx, top=True)
    return meta


def _resolve(meta: DicomJson, ctx: _Ctx, *, top: bool) -> None:
    """Replace the placeholders of a to_json_dict result, in place."""
    for key in list(meta):
        value = meta[key]
        tag = int(key, 16)
        if top and tag in PIXEL_DATA_TAGS:
            if ctx.handler is None:
                del meta[key]
            else:
                meta[key] = {"vr": value["vr"], "BulkDataURI": ctx.handler(key)}
            continue
        bulk = value.get("BulkDataURI")
        if isinstance(bulk, _Bulk):
            resolved = _bulk(tag, value["vr"], bulk.elem.value, ctx)
            if resolved is None:
                del meta[key]
            else:
                meta[key] = resolved
        elif value.get("vr") == "SQ":
            for item in _items(value):
                _resolve(item, ctx, top=False)


def _items(value: dict[str, Any]) -> Iterator[DicomJson]:
    yield from value.get("Value", [])
