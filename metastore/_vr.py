"""Direct decoding of raw DICOM element values into DICOM JSON (helpers of dicomjson).

Each decoder turns the encoded bytes of one element into its DICOM JSON
object exactly as pydicom's value conversion followed by
``DataElement.to_json_dict`` would, or answers :data:`DELEGATE` when the value
is one pydicom treats specially (the caller then lets pydicom convert it).
:func:`parse_sequence` does the same for a whole encoded sequence, raising
:class:`Abort` on anything unusual.  pydicom is imported only by this module,
``metastore.dicomjson`` and the indexer.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any, Final

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR

#: Answer of a decoder: "let pydicom convert this element".
DELEGATE: Final[Any] = object()

#: A JSON element: {"vr": ..., "Value"/"InlineBinary"/"BulkDataURI": ...}.
Element = dict[str, Any]


class Abort(Exception):
    """An encoded sequence holds something only pydicom should interpret."""


class Ctx:
    """Per-call settings shared by the decoders."""

    __slots__ = ("handler", "inline", "max_inline", "threshold")

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


# Memo of tag -> "GGGGEEEE"; the same tags come back in every file.
_KEYS: dict[int, str] = {}
# Memo of tag -> dictionary VR for implicit VR data (None: ask pydicom).
_IMPLICIT_VR: dict[int, str | None] = {}
# Memo of encoded (0008,0005) SpecificCharacterSet -> Python encodings.
_CHARSETS: dict[bytes, list[str]] = {}


def key(tag: int) -> str:
    """The DICOM JSON key of ``tag`` (a plain int): 8 upper-case hex digits."""
    k = _KEYS.get(tag)
    if k is None:
        k = _KEYS[tag] = f"{tag:08X}"
    return k


def tag_str(tag: int) -> str:
    """``(GGGG,EEEE)``, for messages."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def implicit_vr(tag: int) -> str | None:
    """The VR pydicom gives a public tag in implicit VR data; None: not simple."""
    try:
        return _IMPLICIT_VR[tag]
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
    _IMPLICIT_VR[tag] = vr
    return vr


def item_encodings(data: bytes) -> list[str]:
    """Python encodings of an item's own (0008,0005) SpecificCharacterSet."""
    enc = _CHARSETS.get(data)
    if enc is None:
        # pydicom: convert_string (latin-1, rstrip, split) then convert_encodings
        parts = data.decode("latin-1").rstrip(" \x00").split("\\")
        enc = convert_encodings(parts[0] if len(parts) == 1 else parts)
        _CHARSETS[data] = enc
    return enc


# --------------------------------------------------------------------------
# value decoders: (tag, vr, data, little, encodings, ctx, implicit) -> element
# ``data`` is never empty; the answer is an element, None (bulk data left
# out) or DELEGATE.

Decoder = Callable[[int, str, bytes, bool, list[str], Ctx, bool], Any]


def _binary(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Element | None:
    if len(data) > ctx.max_inline and tag not in ctx.inline:
        if ctx.handler is None:
            return None
        return {"vr": vr, "BulkDataURI": ctx.handler(key(tag))}
    return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}


def bulk(tag: int, vr: str, data: bytes, ctx: Ctx) -> Element | None:
    """A binary value above the threshold: inline, BulkDataURI or left out."""
    if tag in ctx.inline:
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    if ctx.handler is None:
        return None
    return {"vr": vr, "BulkDataURI": ctx.handler(key(tag))}


_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l"}
_NUMBER_FORMATS |= {"FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
# (vr, little endian) -> (item size, struct for one item, format character)
_NUMBERS: dict[tuple[str, bool], tuple[int, struct.Struct, str]] = {
    (vr, little): (
        struct.calcsize("<" + fmt),
        struct.Struct(("<" if little else ">") + fmt),
        fmt,
    )
    for vr, fmt in _NUMBER_FORMATS.items()
    for little in (True, False)
}
# pydicom makes the first value of these LUT descriptors unsigned when it
# comes out negative: (0028,1101-1103) and (0028,3002).
_LUT_DESCRIPTOR_TAGS = frozenset({0x00281101, 0x00281102, 0x00281103, 0x00283002})


def _numbers(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    size, one, fmt = _NUMBERS[vr, little]
    n = len(data)
    if n == size:
        return {"vr": vr, "Value": list(one.unpack(data))}
    count, rest = divmod(n, size)
    if rest:
        return DELEGATE  # pydicom raises BytesLengthException
    values = list(struct.unpack(f"{'<' if little else '>'}{count}{fmt}", data))
    if tag in _LUT_DESCRIPTOR_TAGS and values[0] < 0:
        values[0] += 65536
    return {"vr": vr, "Value": values}


def _at(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    count, rest = divmod(len(data), 4)
    if rest:
        return DELEGATE
    w = struct.unpack(f"{'<' if little else '>'}{2 * count}H", data)
    return {
        "vr": vr,
        "Value": [f"{w[i]:04X}{w[i + 1]:04X}" for i in range(0, len(w), 2)],
    }


def _strings(vr: str, parts: list[str]) -> Element:
    if len(parts) == 1 and not parts[0]:
        return {"vr": vr}
    return {"vr": vr, "Value": parts}


def _cs(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    # AS CS DA DT TM: latin-1, trailing padding off the whole value, split
    text = data.decode("latin-1").rstrip(" \x00")
    if not text:
        return {"vr": vr}
    return {"vr": vr, "Value": text.split("\\")}


def _ui(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    # pydicom's UID() strips each value
    text = data.decode("latin-1").rstrip("\x00 ")
    return _strings(vr, [s.strip() for s in text.split("\\")])


def _ae(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    return _strings(vr, [s.strip() for s in data.decode("latin-1").split("\\")])


def _ur(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    text = data.decode("latin-1").rstrip()
    return {"vr": vr, "Value": [text]} if text else {"vr": vr}


def _ds(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    text = data.decode("latin-1").strip().rstrip(" \x00")
    if not text:
        return {"vr": vr}
    try:
        # DSfloat is float(str); an empty item in a multi-value makes
        # to_json_dict raise, and so does float("") here.
        return {"vr": vr, "Value": [float(s) for s in text.split("\\")]}
    except ValueError:
        return DELEGATE


def _is(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    text = data.decode("latin-1").rstrip(" \x00")
    if not text:
        return {"vr": vr}
    out = []
    for s in text.split("\\"):
        t = s.strip(" ")
        digits = t[1:] if t[:1] in ("+", "-") else t
        # "1.0", "1e3", "1_0", " " and huge values follow their own pydicom
        # rules (ISfloat, validation): pydicom's business.
        if not (digits.isdigit() and digits.isascii() and len(digits) < 16):
            return DELEGATE
        out.append(int(t))
    return {"vr": vr, "Value": out}


def _text(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    # SH LO UC: charset, split, trailing padding off each value
    if b"\x1b" in data:
        return DELEGATE  # ISO 2022 escape sequences: pydicom's decode_bytes
    try:
        text = data.decode(enc[0])
    except (UnicodeError, LookupError):
        return DELEGATE  # pydicom warns and decodes with replacements
    if "\\" not in text:
        text = text.rstrip("\x00 ")
        return {"vr": vr, "Value": [text]} if text else {"vr": vr}
    return {"vr": vr, "Value": [s.rstrip("\x00 ") for s in text.split("\\")]}


def _long_text(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    # ST LT UT: one value, backslashes kept
    if b"\x1b" in data:
        return DELEGATE
    try:
        text = data.decode(enc[0]).rstrip("\x00 ")
    except (UnicodeError, LookupError):
        return DELEGATE
    return {"vr": vr, "Value": [text]} if text else {"vr": vr}


def _pn(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    data = data.rstrip(b"\x00 ")
    if b"\x1b" in data:
        return DELEGATE
    try:
        text = data.decode(enc[0])
        # pydicom re-encodes every name (PersonName.encode); keep to names
        # that survive that round trip unchanged.
        if text.encode(enc[0]) != data:
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
                return {"vr": vr}
            return DELEGATE  # to_json_dict raises IndexError on an empty name
        pn = {"Alphabetic": comps[0]}
        if len(comps) > 1:
            pn["Ideographic"] = comps[1]
            if len(comps) > 2:
                pn["Phonetic"] = comps[2]
        out.append(pn)
    return {"vr": vr, "Value": out}


def _sq(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    items, _ = parse_sequence(data, 0, len(data), im, little, enc, ctx)
    return {"vr": "SQ", "Value": items}


DECODERS: dict[str, Decoder] = {
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW"), _binary),
    **dict.fromkeys(_NUMBER_FORMATS, _numbers),
    **dict.fromkeys(("AS", "CS", "DA", "DT", "TM"), _cs),
    **dict.fromkeys(("SH", "LO", "UC"), _text),
    **dict.fromkeys(("ST", "LT", "UT"), _long_text),
    "AE": _ae,
    "AT": _at,
    "DS": _ds,
    "IS": _is,
    "PN": _pn,
    "SQ": _sq,
    "UI": _ui,
    "UR": _ur,
}
# UN and the ambiguous VRs are missing on purpose: pydicom replaces them.


# --------------------------------------------------------------------------
# encoded sequences (a defined-length SQ value pydicom has not parsed yet)

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UR"})
_LONG_VRS |= {"UT", "UV", "UN"}
# explicit VR bytes -> (VR, has a 4-byte length)
_VR_BYTES = {vr.encode(): (vr, vr in _LONG_VRS) for vr in [*DECODERS, "UN"]}
# VRs whose decoding depends on the charset (SQ: its items inherit it)
_ENCODED_VRS = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN", "SQ"})
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_HEADER = {True: struct.Struct("<HHL"), False: struct.Struct(">HHL")}
_EXPLICIT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
_LENGTH32 = {True: struct.Struct("<L"), False: struct.Struct(">L")}
_UNDEFINED = 0xFFFFFFFF


def parse_sequence(
    buf: bytes,
    pos: int,
    end: int | None,
    implicit: bool,
    little: bool,
    enc: list[str],
    ctx: Ctx,
) -> tuple[list[dict[str, Element]], int]:
    """The items of an encoded sequence value, as pydicom's read_sequence reads them.

    Args:
        buf: The bytes holding the sequence.
        pos: Where its first item starts.
        end: Where the value ends; None for an undefined length (up to the
            sequence delimiter).
        implicit: Implicit VR encoding.
        little: Little endian encoding.
        enc: The Python encodings the items inherit.
        ctx: Conversion settings.

    Returns:
        The items and the position after the sequence.

    Raises:
        Abort: Something pydicom may read differently (a malformed or
            truncated value, private or ambiguous VRs in implicit VR data,
            UN, escape sequences...).
    """
    items = []
    header = _HEADER[little]
    size = len(buf)
    while end is None or pos < end:
        if pos + 8 > size:
            raise Abort("sequence ends inside an item header")
        group, element, length = header.unpack_from(buf, pos)
        pos += 8
        tag = group << 16 | element
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM:
            raise Abort(f"expected an item, found {tag_str(tag)}")
        if length == _UNDEFINED:
            item, pos = _parse_item(buf, pos, None, implicit, little, enc, ctx)
        else:
            stop = pos + length
            if stop > (size if end is None else end):
                raise Abort("item longer than its sequence")
            item, pos = _parse_item(buf, pos, stop, implicit, little, enc, ctx)
        items.append(item)
    return items, pos


def _parse_item(
    buf: bytes,
    pos: int,
    end: int | None,
    implicit: bool,
    little: bool,
    enc: list[str],
    ctx: Ctx,
) -> tuple[dict[str, Element], int]:
    """One item's elements, up to ``end`` or the item delimiter."""
    out: dict[str, Element] = {}
    size = len(buf)
    header = _HEADER[little] if implicit else _EXPLICIT[little]
    length32 = _LENGTH32[little]
    limit = size if end is None else end
    text_seen = False
    while end is None or pos < end:
        if pos + 8 > limit:
            raise Abort("item ends inside an element header")
        if implicit:
            group, element, length = header.unpack_from(buf, pos)
            pos += 8
            tag = group << 16 | element
            if tag == _ITEM_END:
                break
            vr = implicit_vr(tag)
            if vr is None:
                raise Abort(f"{tag_str(tag)} has no simple VR in implicit VR data")
        else:
            group, element, vr_bytes, length = header.unpack_from(buf, pos)
            pos += 8
            tag = group << 16 | element
            if tag == _ITEM_END:
                break
            known = _VR_BYTES.get(vr_bytes)
            if known is None:
                raise Abort(f"{tag_str(tag)} has VR {vr_bytes!r}")
            vr, long = known
            if long:
                if pos + 4 > limit:
                    raise Abort("item ends inside an element header")
                (length,) = length32.unpack_from(buf, pos)
                pos += 4
        if tag == 0x00080005:
            # pydicom decodes the whole item with the item's own charset
            if text_seen:
                raise Abort("(0008,0005) after text elements")
            enc = item_encodings(buf[pos : pos + length])
        elif vr in _ENCODED_VRS:
            text_seen = True
        if length == _UNDEFINED:
            if vr != "SQ":
                raise Abort(f"{tag_str(tag)} has an undefined length")
            items, pos = parse_sequence(buf, pos, None, implicit, little, enc, ctx)
            out[key(tag)] = {"vr": "SQ", "Value": items}
            continue
        stop = pos + length
        if stop > limit:
            raise Abort(f"{tag_str(tag)} is longer than its item")
        if length == 0:
            value: Any = {"vr": "SQ", "Value": []} if vr == "SQ" else {"vr": vr}
        else:
            decoder = DECODERS.get(vr)
            if decoder is None:
                raise Abort(f"{tag_str(tag)} has VR {vr}")
            value = decoder(tag, vr, buf[pos:stop], little, enc, ctx, implicit)
            if value is DELEGATE:
                raise Abort(f"{tag_str(tag)} needs pydicom")
        pos = stop
        if value is not None:
            out[key(tag)] = value
    return dict(sorted(out.items())), pos
