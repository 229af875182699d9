"""Direct decoding of encoded DICOM values into DICOM JSON (helpers of dicomjson).

Values are decoded from their bytes exactly as pydicom's value conversion
followed by ``DataElement.to_json_dict`` would, or answered with
:data:`DELEGATE` when pydicom treats the value specially (the caller then lets
pydicom convert that element).  Decoded values are memoised by their bytes:
an archive repeats most values from file to file.  :mod:`metastore.dicomjson._sequences`
reads whole encoded sequences with them.  pydicom is imported only by this
module, ``metastore.dicomjson.convert`` and the indexer.
"""

from __future__ import annotations

import base64
import codecs
import struct
import warnings
from collections.abc import Callable
from typing import Any, Final

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, private_dictionary_VR

#: Answer meaning "let pydicom convert this element".
DELEGATE: Final[Any] = object()
#: Cached answer meaning "no value": the element is ``{"vr": vr}``.
EMPTY: Final[Any] = object()

#: A JSON element: {"vr": ..., "Value"/"InlineBinary"/"BulkDataURI": ...}.
Element = dict[str, Any]
#: Memo of decoded values for one VR: encoded bytes -> tuple | EMPTY | DELEGATE.
ValueCache = dict[bytes, Any]


class Abort(Exception):
    """An encoded sequence holds something only pydicom should interpret."""


class Names(tuple[dict[str, str], ...]):
    """Decoded PN values: their dicts are copied for every element made."""

    __slots__ = ()


class Ctx:
    """Per-call settings shared by the decoders."""

    __slots__ = ("guard", "handler", "inline", "max_inline", "threshold")

    def __init__(
        self,
        handler: Callable[[str], str] | None,
        threshold: int,
        inline: frozenset[int],
    ) -> None:
        self.handler = handler
        self.threshold = threshold
        # to_json_dict's test: bulk when len(bytes) > (threshold // 4) * 3,
        # i.e. when the base64 text would be longer than the threshold.
        self.max_inline = (threshold // 4) * 3
        self.inline = inline
        self.guard: warnings.catch_warnings[None] | None = None

    def quiet(self) -> None:
        """Silence warnings until :meth:`close`: pydicom is about to run.

        pydicom warns about every odd value (make_cases ignores them); the
        guard is entered only when needed because it is not free.
        """
        if self.guard is None:
            self.guard = warnings.catch_warnings()
            self.guard.__enter__()
            warnings.simplefilter("ignore")

    def close(self) -> None:
        """Restore the warning filters :meth:`quiet` replaced."""
        if self.guard is not None:
            self.guard.__exit__(None, None, None)
            self.guard = None


# Memo of tag -> "GGGGEEEE"; the same tags come back in every file.
KEYS: dict[int, str] = {}
#: Memo of tag -> dictionary VR for implicit VR data (None: ask pydicom).
IMPLICIT_VRS: dict[int, str | None] = {}
# Memo of (private tag, private creator) -> VR.
_PRIVATE_VRS: dict[tuple[int, str], str] = {}
# Memo of encoded (0008,0005) SpecificCharacterSet -> Python encodings.
_CHARSETS: dict[bytes, list[str]] = {}
# (little endian, first encoding) -> {vr: value cache}
_CACHE_MAPS: dict[tuple[bool, str], dict[str, ValueCache]] = {}
# A value cache is emptied when it grows past this many values.
CACHE_SIZE = 20_000


def clear_caches() -> None:
    """Forget every memoised value (benchmarks: each round starts cold)."""
    _CACHE_MAPS.clear()


def key(tag: int) -> str:
    """The DICOM JSON key of ``tag`` (a plain int): 8 upper-case hex digits."""
    k = KEYS.get(tag)
    if k is None:
        k = KEYS[tag] = f"{tag:08X}"
    return k


def tag_str(tag: int) -> str:
    """``(GGGG,EEEE)``, for messages."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def implicit_vr(tag: int) -> str | None:
    """The VR pydicom gives a public tag in implicit VR data; None: not simple."""
    try:
        return IMPLICIT_VRS[tag]
    except KeyError:
        pass
    vr: str | None
    if tag >> 16 & 1:
        vr = None  # private: depends on the private creator
    else:
        try:
            vr = str(dictionary_VR(tag))
        except KeyError:
            # pydicom: group length -> UL; anything else -> UN with a warning
            vr = "UL" if tag & 0xFFFF == 0 else None
        if vr is not None and (" " in vr or vr == "UN"):
            vr = None  # "US or SS" etc. are resolved from other elements
    IMPLICIT_VRS[tag] = vr
    return vr


def private_vr(tag: int, creator: str, ctx: Ctx) -> str | None:
    """The VR of a private tag in pydicom's private dictionary, else UN.

    None when the dictionary gives an ambiguous VR ("US or SS").
    """
    vr = _PRIVATE_VRS.get((tag, creator))
    if vr is None:
        ctx.quiet()
        try:
            vr = str(private_dictionary_VR(tag, creator))
        except KeyError:
            vr = "UN"
        _PRIVATE_VRS[tag, creator] = vr
    return None if " " in vr else vr


def item_encodings(data: bytes, ctx: Ctx) -> list[str]:
    """Python encodings of an item's own (0008,0005) SpecificCharacterSet."""
    enc = _CHARSETS.get(data)
    if enc is None:
        ctx.quiet()  # convert_encodings warns about misspelt charsets
        # pydicom: convert_string (latin-1, rstrip, split) then convert_encodings
        parts = data.decode("latin-1").rstrip(" \x00").split("\\")
        enc = convert_encodings(parts[0] if len(parts) == 1 else parts)
        _CHARSETS[data] = enc
    return enc


def caches_for(little: bool, enc: list[str]) -> dict[str, ValueCache]:
    """The value caches for data of this endianness and charset, by VR."""
    caches = _CACHE_MAPS.get((little, enc[0]))
    if caches is None:
        caches = _CACHE_MAPS[little, enc[0]] = {vr: {} for vr in _VALUE_DECODERS}
    return caches


def decode(
    cache: ValueCache, vr: str, data: bytes, little: bool, enc: list[str]
) -> Any:
    """Decode ``data`` (not empty) and remember the answer in ``cache``."""
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    value = cache[data] = _VALUE_DECODERS[vr](vr, data, little, _codec(enc[0]))
    return value


def binary(tag: int, vr: str, data: bytes, ctx: Ctx) -> Element | None:
    """A binary value (not empty): InlineBinary, BulkDataURI or left out."""
    if len(data) > ctx.max_inline and tag not in ctx.inline:
        if ctx.handler is None:
            return None
        return {"vr": vr, "BulkDataURI": ctx.handler(key(tag))}
    return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}


def signed_shorts(tag: int, data: bytes, little: bool) -> Any:
    """The element for SS data (not empty); DELEGATE for a wrong length."""
    values = _numbers("SS", data, little, "")
    if values.__class__ is not tuple:
        return DELEGATE
    if tag in _LUT_DESCRIPTOR_TAGS and len(values) > 1 and values[0] < 0:
        # pydicom makes the first value of a LUT descriptor unsigned
        return {"vr": "SS", "Value": [values[0] + 65536, *values[1:]]}
    return {"vr": "SS", "Value": list(values)}


def bulk(tag: int, vr: str, data: bytes, ctx: Ctx) -> Element | None:
    """A binary value above the threshold: inline, BulkDataURI or left out."""
    if tag in ctx.inline:
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    if ctx.handler is None:
        return None
    return {"vr": vr, "BulkDataURI": ctx.handler(key(tag))}


def element(v: Any, vr: str) -> Any:
    """The element for a cached answer ``v`` (fresh containers every time)."""
    if v.__class__ is tuple:
        return {"vr": vr, "Value": list(v)}
    if v is EMPTY:
        return {"vr": vr}
    if v.__class__ is Names:
        return {"vr": vr, "Value": list(map(dict, v))}
    return v  # DELEGATE


#: The binary VRs: InlineBinary or BulkDataURI.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
#: Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5
#: 7.1.2); the others have a 2-byte length.  The one table of them: the
#: sequence reader, the indexer's sniffer and its truncation check use it.
LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_LUT_DESCRIPTOR_TAGS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})
_FAST_CODECS = {"iso8859-1": "latin-1", "utf-8": "utf-8", "ascii": "ascii"}
_CODECS: dict[str, str] = {}


def _codec(encoding: str) -> str:
    """``encoding`` under a name CPython decodes without a codec lookup."""
    name = _CODECS.get(encoding)
    if name is None:
        try:
            name = _FAST_CODECS.get(codecs.lookup(encoding).name, encoding)
        except LookupError:
            name = encoding  # decoding fails and the value is delegated
        _CODECS[encoding] = name
    return name


# --------------------------------------------------------------------------
# value decoders: (vr, data, little, codec) -> tuple of values | EMPTY | DELEGATE
# ``data`` is never empty.  They depend on nothing else, so they are cached.

_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}
_NUMBER_FORMATS |= {"FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_SIZES = {vr: struct.calcsize("<" + fmt) for vr, fmt in _NUMBER_FORMATS.items()}


def _numbers(vr: str, data: bytes, little: bool, codec: str) -> Any:
    count, rest = divmod(len(data), _SIZES[vr])
    if rest:
        return DELEGATE  # pydicom raises BytesLengthException
    order = "<" if little else ">"
    return struct.unpack(f"{order}{count}{_NUMBER_FORMATS[vr]}", data)


def _at(vr: str, data: bytes, little: bool, codec: str) -> Any:
    count, rest = divmod(len(data), 4)
    if rest:
        return DELEGATE
    w = struct.unpack(f"{'<' if little else '>'}{2 * count}H", data)
    return tuple(f"{w[i]:04X}{w[i + 1]:04X}" for i in range(0, len(w), 2))


def _cs(vr: str, data: bytes, little: bool, codec: str) -> Any:
    # AS CS DA DT TM: latin-1, trailing padding off the whole value, split
    text = data.decode("latin-1").rstrip(" \x00")
    return tuple(text.split("\\")) if text else EMPTY


def _strings(parts: list[str]) -> Any:
    if len(parts) == 1 and not parts[0]:
        return EMPTY
    return tuple(parts)


def _ui(vr: str, data: bytes, little: bool, codec: str) -> Any:
    # pydicom's UID() strips each value
    text = data.decode("latin-1").rstrip("\x00 ")
    return _strings([s.strip() for s in text.split("\\")])


def _ae(vr: str, data: bytes, little: bool, codec: str) -> Any:
    return _strings([s.strip() for s in data.decode("latin-1").split("\\")])


def _ur(vr: str, data: bytes, little: bool, codec: str) -> Any:
    text = data.decode("latin-1").rstrip()
    return (text,) if text else EMPTY


def _ds(vr: str, data: bytes, little: bool, codec: str) -> Any:
    text = data.decode("latin-1").strip().rstrip(" \x00")
    if not text:
        return EMPTY
    try:
        # DSfloat is float(str); an empty item in a multi-value makes
        # to_json_dict raise, and so does float("") here.
        return tuple(map(float, text.split("\\")))
    except ValueError:
        return DELEGATE


def _is(vr: str, data: bytes, little: bool, codec: str) -> Any:
    text = data.decode("latin-1").rstrip(" \x00")
    if not text:
        return EMPTY
    out = []
    for s in text.split("\\"):
        t = s.strip(" ")
        digits = t[1:] if t[:1] in ("+", "-") else t
        # "1.0", "1e3", "1_0", " " and huge values follow their own pydicom
        # rules (ISfloat, validation): pydicom's business.
        if not (digits.isdigit() and digits.isascii() and len(digits) < 16):
            return DELEGATE
        out.append(int(t))
    return tuple(out)


def _text(vr: str, data: bytes, little: bool, codec: str) -> Any:
    # SH LO UC: charset, split, trailing padding off each value
    if b"\x1b" in data:
        return DELEGATE  # ISO 2022 escape sequences: pydicom's decode_bytes
    try:
        text = data.decode(codec)
    except (UnicodeError, LookupError):
        return DELEGATE  # pydicom warns and decodes with replacements
    return _strings([s.rstrip("\x00 ") for s in text.split("\\")])


def _long_text(vr: str, data: bytes, little: bool, codec: str) -> Any:
    # ST LT UT: one value, backslashes kept
    if b"\x1b" in data:
        return DELEGATE
    try:
        text = data.decode(codec).rstrip("\x00 ")
    except (UnicodeError, LookupError):
        return DELEGATE
    return (text,) if text else EMPTY


def _pn(vr: str, data: bytes, little: bool, codec: str) -> Any:
    data = data.rstrip(b"\x00 ")
    if b"\x1b" in data:
        return DELEGATE
    try:
        text = data.decode(codec)
        # pydicom re-encodes every name (PersonName.encode); keep to names
        # that survive that round trip unchanged.
        if text.encode(codec) != data:
            return DELEGATE
    except (UnicodeError, LookupError):
        return DELEGATE
    names = text.split("\\")
    out = []
    for name in names:
        comps = name.split("=")
        while comps and not comps[-1]:
            comps.pop()
        if not comps:
            if len(names) == 1:
                return EMPTY
            return DELEGATE  # to_json_dict raises IndexError on an empty name
        pn = {"Alphabetic": comps[0]}
        if len(comps) > 1:
            pn["Ideographic"] = comps[1]
            if len(comps) > 2:
                pn["Phonetic"] = comps[2]
        out.append(pn)
    return Names(out)


_VALUE_DECODERS: dict[str, Callable[[str, bytes, bool, str], Any]] = {
    **dict.fromkeys(("US", "UL", "SL", "FL", "FD", "SV", "UV"), _numbers),
    **dict.fromkeys(("AS", "CS", "DA", "DT", "TM"), _cs),
    **dict.fromkeys(("SH", "LO", "UC"), _text),
    **dict.fromkeys(("ST", "LT", "UT"), _long_text),
    "AE": _ae,
    "AT": _at,
    "DS": _ds,
    "IS": _is,
    "PN": _pn,
    "UI": _ui,
    "UR": _ur,
}
# SS (LUT descriptors), binary VRs and SQ are not memoised
# (metastore.dicomjson._sequences's other()); UN and the ambiguous VRs are pydicom's.

#: The VRs decoded here or in ``metastore.dicomjson._sequences`` (UN and the
#: ambiguous VRs are pydicom's).
KNOWN_VRS = frozenset([*_VALUE_DECODERS, *BINARY_VRS, "SS", "SQ"])
