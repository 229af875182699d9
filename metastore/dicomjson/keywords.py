"""Attribute names: DICOM keywords and tags, as users write them.

Owns :func:`tag_of` (``PatientName``, ``00100010`` or ``(0010,0010)`` to
the 8-hex-digit key of DICOM JSON) and :func:`keyword_of`, through pydicom's
data dictionary (PS3.6).
"""

from __future__ import annotations

import re

from pydicom import datadict

from metastore.errors import QueryError

__all__ = ["keyword_of", "tag_of"]

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
