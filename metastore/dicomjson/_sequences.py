"""Encoded sequences read directly into DICOM JSON (helpers of dicomjson).

pydicom keeps a defined-length sequence as raw bytes until asked; parsing it
into ``Dataset`` objects is slow.  :func:`parse_sequence` reads those bytes
the way pydicom's ``read_sequence`` would and decodes every value with
:mod:`metastore.dicomjson._values`; anything unusual raises
:class:`~metastore.dicomjson._values.Abort` and the caller lets pydicom
convert the whole sequence instead.
"""

from __future__ import annotations

import struct
from typing import Any

from metastore.dicomjson._values import (
    BINARY_VRS,
    DELEGATE,
    KEYS,
    KNOWN_VRS,
    LONG_VRS,
    Abort,
    Ctx,
    Element,
    ValueCache,
    binary,
    caches_for,
    decode,
    element,
    implicit_vr,
    item_encodings,
    key,
    signed_shorts,
    tag_str,
)


def other(
    tag: int, vr: str, data: bytes, little: bool, enc: list[str], ctx: Ctx, im: bool
) -> Any:
    """Element for a value without a cache: binary, SS, SQ; else DELEGATE.

    Raises:
        Abort: An SQ value pydicom should parse.
    """
    if vr in BINARY_VRS:
        return binary(tag, vr, data, ctx)
    if vr == "SQ":
        caches = caches_for(little, enc)
        items, _ = parse_sequence(data, 0, len(data), im, little, enc, caches, ctx)
        return {"vr": "SQ", "Value": items}
    if vr == "SS":
        return signed_shorts(tag, data, little)
    return DELEGATE  # UN, "US or SS"...: pydicom replaces the VR


# explicit VR bytes -> (VR, has a 4-byte length)
_VR_BYTES = {vr.encode(): (vr, vr in LONG_VRS) for vr in KNOWN_VRS}
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
    caches: dict[str, ValueCache],
    ctx: Ctx,
) -> tuple[list[dict[str, Element]], int]:
    """The items of an encoded sequence, as pydicom's read_sequence reads them.

    Args:
        buf: The bytes holding the sequence.
        pos: Where its first item starts.
        end: Where the value ends; None for an undefined length (up to the
            sequence delimiter).
        implicit: Implicit VR encoding.
        little: Little endian encoding.
        enc: The Python encodings the items inherit.
        caches: ``caches_for(little, enc)``.
        ctx: Conversion settings.

    Returns:
        The items and the position after the sequence.

    Raises:
        Abort: Something pydicom may read differently (a malformed or
            truncated value, private or ambiguous VRs in implicit VR data,
            UN, escape sequences, invalid values...).
    """
    items = []
    header = _HEADER[little]
    size = len(buf)
    while end is None or pos < end:
        if pos + 8 > size:
            raise Abort("sequence ends inside an item header")
        group, elem, length = header.unpack_from(buf, pos)
        pos += 8
        tag = group << 16 | elem
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM:
            raise Abort(f"expected an item, found {tag_str(tag)}")
        if length == _UNDEFINED:
            item, pos = _parse_item(buf, pos, None, implicit, little, enc, caches, ctx)
        else:
            stop = pos + length
            if stop > (size if end is None else end):
                raise Abort("item longer than its sequence")
            item, pos = _parse_item(buf, pos, stop, implicit, little, enc, caches, ctx)
        items.append(item)
    return items, pos


def _parse_item(
    buf: bytes,
    pos: int,
    end: int | None,
    implicit: bool,
    little: bool,
    enc: list[str],
    caches: dict[str, ValueCache],
    ctx: Ctx,
) -> tuple[dict[str, Element], int]:
    """One item's elements, up to ``end`` or the item delimiter."""
    out: dict[str, Element] = {}
    header = _HEADER[little] if implicit else _EXPLICIT[little]
    length32 = _LENGTH32[little]
    limit = len(buf) if end is None else end
    keys = KEYS
    last = -1
    ordered = True
    vr: str | None
    while end is None or pos < end:
        if pos + 8 > limit:
            raise Abort("item ends inside an element header")
        if implicit:
            group, elem, length = header.unpack_from(buf, pos)
            pos += 8
            tag = group << 16 | elem
            if tag == _ITEM_END:
                break
            vr = implicit_vr(tag)
            if vr is None:
                raise Abort(f"{tag_str(tag)} has no simple VR in implicit VR data")
        else:
            group, elem, vr_bytes, length = header.unpack_from(buf, pos)
            pos += 8
            tag = group << 16 | elem
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
            if any(e["vr"] in _ENCODED_VRS for e in out.values()):
                raise Abort("(0008,0005) after text elements")
            enc = item_encodings(buf[pos : pos + length], ctx)
            caches = caches_for(little, enc)
        if length == _UNDEFINED:
            if vr != "SQ":
                raise Abort(f"{tag_str(tag)} has an undefined length")
            items, pos = parse_sequence(
                buf, pos, None, implicit, little, enc, caches, ctx
            )
            value: Any = {"vr": "SQ", "Value": items}
        else:
            stop = pos + length
            if stop > limit:
                raise Abort(f"{tag_str(tag)} is longer than its item")
            if length == 0:
                value = {"vr": "SQ", "Value": []} if vr == "SQ" else {"vr": vr}
            else:
                data = buf[pos:stop]
                cache = caches.get(vr)
                if vr == "SQ":
                    items, _ = parse_sequence(
                        data, 0, length, implicit, little, enc, caches, ctx
                    )
                    value = {"vr": "SQ", "Value": items}
                elif cache is None:
                    value = other(tag, vr, data, little, enc, ctx, implicit)
                else:
                    v = cache.get(data)
                    if v is None:
                        v = decode(cache, vr, data, little, enc)
                    value = element(v, vr)
                if value is DELEGATE:
                    raise Abort(f"{tag_str(tag)} needs pydicom")
            pos = stop
        if value is not None:
            k = keys.get(tag)
            out[k if k is not None else key(tag)] = value
        if tag < last:
            ordered = False
        last = tag
    return (out if ordered else dict(sorted(out.items()))), pos
