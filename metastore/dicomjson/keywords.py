"""Attribute names: DICOM keywords and tags, as users write them.

Owns :func:`tag_of` (``PatientName``, ``00100010`` or ``(0010,0010)`` to
the 8-hex-digit key of DICOM JSON), :func:`keyword_of`, through pydicom's
data dictionary (PS3.6), and :func:`keyword_row` (a DICOM JSON dataset as
keyword -> plain value, as ``metastore query`` prints it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydicom import datadict

from metastore.errors import QueryError

__all__ = ["keyword_of", "keyword_row", "tag_of"]

# "00100010", "0010,0010", "(0010,0010)": a tag in hexadecimal digits.
_TAG = re.compile(r"\(?([0-9A-Fa-f]{4}),?([0-9A-Fa-f]{4})\)?")


def tag_of(name: str) -> str:
    """The DICOM JSON key (8 upper-case hex digits) of a keyword or a tag.

    Args:
        name: a keyword of PS3.6 (``SliceThickness``) or a tag written as
            ``00180050``, ``0018,0050`` or ``(0018,0050)`` (private tags too).

    Raises:
        QueryError: ``name`` is neither (the message names it).
    """
    match = _TAG.fullmatch(name.strip())
    if match is not None:
        return (match.group(1) + match.group(2)).upper()
    number = datadict.tag_for_keyword(name.strip()) if name.isidentifier() else None
    if number is None:
        raise QueryError(
            f"unknown attribute {name!r}: not a DICOM keyword or a tag like 00180050"
        )
    return f"{number:08X}"


def keyword_of(tag: str) -> str:
    """The PS3.6 keyword of an 8-hex-digit tag, or ``""`` (private, unknown)."""
    return str(datadict.keyword_for_tag(int(tag, 16)))


#: The three component groups of a PN value, in the order DICOM joins them.
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def keyword_row(dataset: Mapping[str, Any]) -> dict[str, Any]:
    """A DICOM JSON dataset as ``{keyword: value}``, for people and scripts.

    Keys are PS3.6 keywords; a private or unknown tag keeps its 8-hex-digit
    key.  A single value is a scalar and several are a list; an element
    without a value is ``None``.  PN values are DICOM strings, the component
    groups joined by ``=`` (``Yamada^Taro=山田^太郎``, trailing empty groups
    dropped, as PS3.5 6.2 writes them); DS and IS values are numbers (a
    string that is no number stays as it is); SQ values are lists of such
    dicts, however many items; bulk data is its ``BulkDataURI`` or its
    ``InlineBinary`` base64 text.
    """
    out: dict[str, Any] = {}
    for tag, element in dataset.items():
        out[keyword_of(tag) or tag] = _plain(element)
    return out


def _plain(element: Mapping[str, Any]) -> Any:
    vr = element.get("vr")
    for bulk in ("BulkDataURI", "InlineBinary"):
        if bulk in element:
            return element[bulk]
    values = element.get("Value") or []
    if vr == "SQ":
        return [keyword_row(item or {}) for item in values]
    if vr == "PN":
        values = [_pn_string(v) for v in values]
    elif vr in ("DS", "IS"):
        values = [_number(v) for v in values]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _pn_string(value: Any) -> Any:
    """``{"Alphabetic": a, "Ideographic": i}`` as ``a=i``; None stays None."""
    if not isinstance(value, Mapping):
        return value
    return "=".join(str(value.get(g) or "") for g in _PN_GROUPS).rstrip("=") or None


def _number(value: Any) -> Any:
    """A DS/IS value as an int or float (DICOM JSON may carry it as text)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return value
