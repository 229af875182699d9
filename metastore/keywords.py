"""Attribute names: DICOM keywords and tags, as users write them.

Owns :func:`tag_of` (``PatientName``, ``00100010`` or ``(0010,0010)`` to
the 8-hex-digit key of DICOM JSON), :func:`keyword_of`, :func:`tag_for_keyword`
and :func:`dictionary_vr`, the lookups of the data dictionary (PS3.6), and
:func:`keyword_row` (a DICOM JSON dataset as keyword -> plain value, as
``metastore query`` prints it).

The dictionary is pydicom's own.  While ``pydicom.datadict`` is not loaded,
its tables are read as data from ``pydicom/_dicom_dict.py``: importing the
``pydicom`` package costs ~0.2 s (its pixel handlers load numpy, PIL and
requests), which ``metastore query`` and the QIDO layer would otherwise pay
only to spell attribute names.  The lookups follow ``pydicom.datadict``'s
rules (repeating groups such as ``60xx`` by mask, never for private tags),
and once pydicom is loaded they are its own functions (entries a program
adds with ``add_dict_entry`` included).  tests/test_keywords.py compares
both ways over the whole dictionary.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from metastore.errors import QueryError

__all__ = [
    "dictionary_vr",
    "keyword_of",
    "keyword_row",
    "tag_for_keyword",
    "tag_of",
]


class _Tables:
    """pydicom's dictionary tables, read as data, with datadict's derived maps."""

    def __init__(self, data: ModuleType) -> None:
        #: tag -> (VR, VM, name, retired, keyword)
        self.entries: dict[int, tuple[str, str, str, str, str]] = data.DicomDictionary
        #: "60xx3000" -> entry: the repeating groups
        self.repeaters: dict[str, tuple[str, str, str, str, str]] = (
            data.RepeatersDictionary
        )
        # datadict.masks: the fixed hex digits of each mask, and which bits
        # must match them ("x" digits are free)
        self.masks = [
            (
                mask,
                int(mask.replace("x", "0"), 16),
                int("".join("0" if c == "x" else "F" for c in mask), 16),
            )
            for mask in self.repeaters
        ]
        # datadict.keyword_dict: a later tag of a repeated keyword wins
        self.by_keyword = {entry[4]: tag for tag, entry in self.entries.items()}

    def entry(self, tag: int) -> tuple[str, str, str, str, str] | None:
        """datadict.get_entry: the standard entry, or a public repeater's."""
        found = self.entries.get(tag)
        if found is not None or tag >> 16 & 1:  # private tags never repeat
            return found
        for mask, fixed, bits in self.masks:
            if (tag ^ fixed) & bits == 0:
                return self.repeaters[mask]
        return None


@cache
def _tables() -> _Tables:
    """pydicom's dictionary module, executed alone (not its package)."""
    spec = importlib.util.find_spec("pydicom")  # finds, does not import
    where = list(spec.submodule_search_locations or []) if spec else []
    path = Path(where[0], "_dicom_dict.py") if where else None
    if path is None or not path.is_file():  # an unusual install: import it
        from pydicom import _dicom_dict

        return _Tables(_dicom_dict)
    data_spec = importlib.util.spec_from_file_location(
        "metastore._pydicom_dicom_dict", path
    )
    if data_spec is None or data_spec.loader is None:  # pragma: no cover
        from pydicom import _dicom_dict

        return _Tables(_dicom_dict)
    data = importlib.util.module_from_spec(data_spec)
    data_spec.loader.exec_module(data)
    return _Tables(data)


def _datadict() -> Any:
    """``pydicom.datadict`` if something loaded it already, else ``None``."""
    return sys.modules.get("pydicom.datadict")


def keyword_of(tag: str) -> str:
    """The PS3.6 keyword of an 8-hex-digit tag, or ``""`` (private, unknown)."""
    datadict = _datadict()
    if datadict is not None:
        # not memoised: pydicom's dictionary can be extended at run time
        return str(datadict.keyword_for_tag(int(tag, 16)))
    return _table_keyword(tag)


# Memoised: the tables are fixed data, and a query's rows name the same few
# tags again and again (7,000 look-ups for 500 studies).
@lru_cache(maxsize=4096)
def _table_keyword(tag: str) -> str:
    """:func:`keyword_of` from the tables read as data."""
    entry = _tables().entry(int(tag, 16))
    return "" if entry is None else entry[4]


def tag_for_keyword(keyword: str) -> int | None:
    """The tag of a PS3.6 keyword (``datadict.tag_for_keyword``), or ``None``."""
    datadict = _datadict()
    if datadict is not None:
        found = datadict.tag_for_keyword(keyword)
        return None if found is None else int(found)
    return _tables().by_keyword.get(keyword)


def dictionary_vr(tag: int) -> str | None:
    """The dictionary VR of a tag (``"US or SS"`` as PS3.6 writes it), or
    ``None`` for private and unknown tags (``datadict.dictionary_VR``)."""
    datadict = _datadict()
    if datadict is not None:
        try:
            return str(datadict.dictionary_VR(tag))
        except KeyError:
            return None
    entry = _tables().entry(tag)
    return None if entry is None else entry[0]


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
    word = name.strip()
    number = tag_for_keyword(word) if word.isidentifier() else None
    if number is None:
        raise QueryError(
            f"unknown attribute {name!r}: not a DICOM keyword or a tag like 00180050"
        )
    return f"{number:08X}"


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
