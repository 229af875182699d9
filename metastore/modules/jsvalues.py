"""Cornerstone's DICOM JSON value getters, ported value for value.

This module owns the WADO-RS helpers (``getValue``, ``getNumberValue``,
``getNumberValues``, ``getFirstNumberValue``, ``getSequenceItems``,
``getTagValue``) and the bits of JavaScript semantics they rest on: an exact
``parseFloat``, ``ToNumber``, ``String()``, truthiness and property access on
arbitrary JSON values.  It imports nothing from metastore but ``types``; never
pydicom or SQLAlchemy.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Final

from metastore.types import JSON

__all__ = [
    "UNDEFINED",
    "Undefined",
    "get_first_number_value",
    "get_number_value",
    "get_number_values",
    "get_sequence_items",
    "get_tag_value",
    "get_value",
    "js_entries",
    "js_get",
    "js_index",
    "js_json",
    "js_own_keys",
    "js_to_number",
    "js_to_string",
    "js_truthy",
    "js_values",
    "parse_float",
    "parse_int",
]


class Undefined:
    """JavaScript's ``undefined``, kept apart from JSON ``null`` (``None``).

    Cornerstone tells the two apart in a few places (``getNumberValue`` returns
    undefined for a missing value but ``parseFloat(null)`` = NaN for a null
    one), so the raw getters return :data:`UNDEFINED`; the public getters turn
    it into ``None``.
    """

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        """Return the one instance."""
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        """Print as JavaScript does."""
        return "undefined"

    def __bool__(self) -> bool:
        """``undefined`` is falsy."""
        return False


#: The one :class:`Undefined` value.
UNDEFINED: Final = Undefined()

# ECMAScript WhiteSpace + LineTerminator (StrWhiteSpaceChar): TAB VT FF SP
# NBSP ZWNBSP, every Unicode "Zs" character, LF CR LS PS.  Python's
# str.strip() differs (it strips U+001C-U+001F and U+0085, which JS keeps).
_JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# StrDecimalLiteral, longest prefix; ASCII digits only (\d would take any
# Unicode digit).
_DECIMAL_PREFIX: Final = re.compile(
    r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_DECIMAL_FULL: Final = re.compile(
    r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\Z"
)
_NON_DECIMAL: Final = re.compile(r"0(?:[xX]([0-9a-fA-F]+)|[oO]([0-7]+)|[bB]([01]+))\Z")


def _float_of_int(value: int) -> float:
    """A JSON integer as the double JavaScript reads it (huge ones -> ±Infinity)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _number_to_string(value: float) -> str:
    """``Number.prototype.toString()`` for a double (ECMA-262 Number::toString)."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"  # also for -0
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as JavaScript does.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple))
    stripped = digits.rstrip("0")
    assert isinstance(exponent, int)
    exponent += len(digits) - len(stripped)
    digits = stripped.lstrip("0")
    k = len(digits)
    n = k + exponent  # the decimal point sits after n digits
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exp = f"e+{e}" if e >= 0 else f"e-{-e}"
    if k == 1:
        return sign + digits + exp
    return sign + digits[0] + "." + digits[1:] + exp


#: Integers beyond this are not exact in a JavaScript number (2**53).
_MAX_SAFE: Final = 2**53


def _has_unsafe_int(value: JSON) -> bool:
    """Whether a JSON value holds an integer JavaScript could not keep exactly."""
    if isinstance(value, dict):
        return any(_has_unsafe_int(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_unsafe_int(item) for item in value)
    return type(value) is int and not -_MAX_SAFE <= value <= _MAX_SAFE


def js_json(value: JSON) -> JSON:
    """A raw JSON value as JavaScript's ``JSON.parse`` would have given it.

    Python's ``json`` keeps integers exact; JavaScript reads every number as
    a double, so ``9007199254740993`` is ``9007199254740992`` there (and
    ``1e400`` Infinity).  Raw values that Cornerstone returns as they are
    (``getValue``, functional-group items) go through this.

    Args:
        value: Any JSON value (nested lists and objects included).

    Returns:
        ``value`` itself when every integer in it is exact in a double;
        otherwise a copy with those integers as the nearest ``float``.
    """
    kind = type(value)
    if kind is str or kind is float or kind is bool or value is None:
        return value
    if kind is int:
        assert isinstance(value, int)
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return value
        # Cornerstone quirk (JavaScript): JSON numbers are doubles
        return _float_of_int(value)
    if not _has_unsafe_int(value):
        return value
    if isinstance(value, dict):
        return {key: js_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [js_json(item) for item in value]
    return value


def js_to_string(value: JSON) -> str:
    """JavaScript ``String(value)`` for a JSON value.

    Args:
        value: Any JSON value (or :data:`UNDEFINED`).

    Returns:
        The string JavaScript would make: ``null`` -> ``"null"``, ``true`` ->
        ``"true"``, numbers in JS notation, arrays joined with ``,`` (null
        items empty), objects ``"[object Object]"``.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return _number_to_string(_float_of_int(value))
    if isinstance(value, float):
        return _number_to_string(value)
    if isinstance(value, list):
        return ",".join(
            "" if item is None or item is UNDEFINED else js_to_string(item)
            for item in value
        )
    return "[object Object]"


def parse_float(value: JSON) -> float:
    """JavaScript ``parseFloat(value)``, exactly.

    The argument is first turned into a string as JavaScript does
    (``String(value)``), then leading JS white space is skipped and the longest
    prefix that is a decimal literal (or ``Infinity``) is read.  No hex, no
    numeric separators.

    Args:
        value: Any JSON value.

    Returns:
        The number, ``nan`` when no prefix parses (``""``, ``None``, ``True``,
        ``"abc"``).  ``-0`` survives from text (``"-0"``) but not from a number
        (JavaScript prints ``-0`` as ``"0"``).
    """
    if isinstance(value, float):
        if value != value:  # NaN prints as "NaN", which does not parse
            return math.nan
        return value + 0.0  # -0.0 + 0.0 == 0.0, as String(-0) is "0"
    if isinstance(value, int) and not isinstance(value, bool):
        return _float_of_int(value) + 0.0
    text = value if isinstance(value, str) else js_to_string(value)
    match = _DECIMAL_PREFIX.match(text.lstrip(_JS_WHITESPACE))
    if match is None:
        return math.nan
    return float(match.group())


_INT_PREFIX: Final = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str) -> int | None:
    """JavaScript ``parseInt(text, 10)``.

    Args:
        text: The string to read.

    Returns:
        The integer read from the longest ``[+-]digits`` prefix after JS white
        space (exact: JavaScript would round it to a double beyond 2**53), or
        ``None`` where JavaScript gives NaN.
    """
    match = _INT_PREFIX.match(text.lstrip(_JS_WHITESPACE))
    return None if match is None else int(match.group())


def js_to_number(value: JSON) -> float:
    """JavaScript ``Number(value)`` (ToNumber), as ``>`` and ``<`` apply it.

    Unlike :func:`parse_float` the whole trimmed text must be a number,
    ``""`` is 0, hex/octal/binary literals are read and ``null`` is 0.

    Args:
        value: Any JSON value.

    Returns:
        The number, possibly ``nan``.
    """
    if value is None or value is False:
        return 0.0
    if value is True:
        return 1.0
    if value is UNDEFINED:
        return math.nan
    if isinstance(value, int):
        return _float_of_int(value)
    if isinstance(value, float):
        return value
    if isinstance(value, dict):
        return math.nan
    text = js_to_string(value).strip(_JS_WHITESPACE)
    if not text:
        return 0.0
    if _DECIMAL_FULL.match(text):
        return float(text)
    other = _NON_DECIMAL.match(text)
    if other:
        hex_digits, oct_digits, bin_digits = other.groups()
        if hex_digits is not None:
            return float(int(hex_digits, 16))
        if oct_digits is not None:
            return float(int(oct_digits, 8))
        return float(int(bin_digits, 2))
    return math.nan


def js_truthy(value: JSON) -> bool:
    """JavaScript truthiness: None, undefined, False, 0, NaN and ``""`` are falsy.

    Args:
        value: Any JSON value.

    Returns:
        Whether ``if (value)`` takes the branch in JavaScript.
    """
    if value is None or value is UNDEFINED or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, (int, float)):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True  # arrays and objects, even empty ones


def _utf16_units(text: str) -> list[str]:
    """``text`` as JavaScript sees it: one entry per UTF-16 code unit."""
    raw = text.encode("utf-16-le", "surrogatepass")
    return [
        raw[i : i + 2].decode("utf-16-le", "surrogatepass")
        for i in range(0, len(raw), 2)
    ]


def js_index(value: JSON, index: int) -> JSON:
    """JavaScript ``value[index]`` for a JSON value.

    Args:
        value: Any JSON value.
        index: A non-negative integer index.

    Returns:
        The item, the character (UTF-16 code unit) of a string, ``value["0"]``
        for an object, or :data:`UNDEFINED`.

    Raises:
        TypeError: For ``None`` or undefined, as JavaScript does.
    """
    if isinstance(value, list):
        return value[index] if 0 <= index < len(value) else UNDEFINED
    if isinstance(value, str):
        if value.isascii():
            return value[index] if 0 <= index < len(value) else UNDEFINED
        units = _utf16_units(value)
        return units[index] if 0 <= index < len(units) else UNDEFINED
    if isinstance(value, dict):
        return value.get(str(index), UNDEFINED)
    if value is None or value is UNDEFINED:
        raise TypeError(f"Cannot read properties of {value!r} (reading '{index}')")
    return UNDEFINED


def js_get(value: JSON, key: str) -> JSON:
    """JavaScript ``value[key]`` for a JSON value and a non-index key.

    Args:
        value: Any JSON value.
        key: A property name such as ``"Value"`` or ``"00200037"``.

    Returns:
        ``value[key]`` for an object, ``len`` for ``"length"`` of an array or
        string, otherwise :data:`UNDEFINED`.

    Raises:
        TypeError: For ``None`` or undefined, as JavaScript does.
    """
    if isinstance(value, dict):
        return value.get(key, UNDEFINED)
    if value is None or value is UNDEFINED:
        raise TypeError(f"Cannot read properties of {value!r} (reading '{key}')")
    if key == "length" and isinstance(value, list):
        return len(value)
    if key == "length" and isinstance(value, str):
        return len(_utf16_units(value)) if not value.isascii() else len(value)
    return UNDEFINED


_MAX_ARRAY_INDEX: Final = 2**32 - 2


def _is_array_index(key: str) -> bool:
    """Whether JavaScript treats ``key`` as an array index (``"0"``, ``"20051401"``)."""
    return (
        key.isascii()
        and key.isdigit()
        and (key == "0" or key[0] != "0")
        and int(key) <= _MAX_ARRAY_INDEX
    )


def js_own_keys(value: dict[str, JSON]) -> list[str]:
    """The keys of a JSON object in JavaScript's own-property order.

    JavaScript enumerates integer-like keys (array indexes such as
    ``"20051401"``, a private tag of an all-digit group and element) first,
    in ascending numeric order, then the other keys in insertion order.  DICOM
    keys with a leading zero (``"00289110"``) are not array indexes.

    Args:
        value: A JSON object.

    Returns:
        Its keys in the order ``Object.keys`` gives them.
    """
    keys = list(value)
    indexes = [key for key in keys if key[:1] != "0" and _is_array_index(key)]
    if "0" in value:
        indexes.append("0")
    if not indexes:
        return keys
    # Cornerstone quirk (JavaScript): integer-like keys come first, ascending
    indexes.sort(key=int)
    chosen = set(indexes)
    return indexes + [key for key in keys if key not in chosen]


def js_values(value: JSON) -> list[JSON]:
    """JavaScript ``Object.values(value)``.

    Raises:
        TypeError: For ``None`` or undefined ("Cannot convert undefined or null
            to object").
    """
    if isinstance(value, dict):
        return [value[key] for key in js_own_keys(value)]
    if isinstance(value, list):
        return list(value)
    if isinstance(value, str):
        return list(value) if value.isascii() else _utf16_units(value)
    if value is None or value is UNDEFINED:
        raise TypeError("Cannot convert undefined or null to object")
    return []


def js_entries(value: JSON) -> Iterator[tuple[str, JSON]]:
    """JavaScript ``Object.entries(value)`` (keys as strings).

    Raises:
        TypeError: For ``None`` or undefined.
    """
    if isinstance(value, dict):
        return ((key, value[key]) for key in js_own_keys(value))
    if isinstance(value, list):
        return ((str(i), item) for i, item in enumerate(value))
    if isinstance(value, str):
        return ((str(i), ch) for i, ch in enumerate(js_values(value)))
    if value is None or value is UNDEFINED:
        raise TypeError("Cannot convert undefined or null to object")
    return iter(())


def raw_value(element: JSON, index: int = 0, default: JSON = UNDEFINED) -> JSON:
    """Cornerstone ``getValue(element, index, default)``, keeping undefined apart.

    Args:
        element: A DICOM JSON element (``{"vr", "Value"}``) or anything else.
        index: Which value.
        default: Returned when the element, its ``Value`` or the index is missing.

    Returns:
        ``Value[index]`` raw (which may be ``None`` for a JSON null), the
        default, or :data:`UNDEFINED` when a non-array ``Value`` has nothing at
        ``index``.
    """
    if type(element) is dict:
        values = element.get("Value")
        if type(values) is list:  # the usual case, fast
            return values[index] if index < len(values) else default
    elif not js_truthy(element):
        return default
    values = js_get(element, "Value")
    if not js_truthy(values):
        return default
    # Cornerstone quirk: a non-array Value is indexed as it is, so a string
    # Value "CT" gives "C" and a number gives undefined.
    return js_index(values, index)


def get_value(element: JSON, index: int = 0, default: JSON = None) -> JSON:
    """Cornerstone ``getValue``: the raw ``Value[index]`` of a DICOM JSON element.

    Args:
        element: A DICOM JSON element, or ``None`` when the tag is absent.
        index: Which value (0-based).
        default: What to return when there is no such value.

    Returns:
        The value as JSON holds it (a PN stays an object), else ``default``;
        JavaScript's undefined becomes ``None``.
    """
    result = raw_value(element, index, default)
    return None if result is UNDEFINED else js_json(result)


def get_number_value(element: JSON, index: int = 0) -> float | None:
    """Cornerstone ``getNumberValue``: ``parseFloat`` of ``Value[index]``.

    Args:
        element: A DICOM JSON element, or ``None``.
        index: Which value.

    Returns:
        ``None`` when the value is missing, else its ``parseFloat`` (a JSON
        null gives NaN).
    """
    value = raw_value(element, index)
    if value is UNDEFINED:
        return None
    return parse_float(value)


def get_number_values(element: JSON, minimum_length: int = 0) -> list[float] | None:
    """Cornerstone ``getNumberValues``: ``parseFloat`` of every value.

    Args:
        element: A DICOM JSON element, or ``None``.
        minimum_length: Fewer values than this give ``None`` (0: no minimum).

    Returns:
        The list of numbers, or ``None`` when the element or an array ``Value``
        is missing or too short.
    """
    if type(element) is dict:
        values = element.get("Value")
    elif not js_truthy(element):
        return None
    else:
        values = js_get(element, "Value")
    if not isinstance(values, list) or not values:
        # Cornerstone quirk: an empty array passes `!Value`, so [] gives []
        if isinstance(values, list) and not minimum_length:
            return []
        return None
    if minimum_length and len(values) < minimum_length:
        return None
    return [parse_float(v) for v in values]


def get_first_number_value(item: JSON, key: str) -> float | None:
    """Cornerstone ``getFirstNumberValue(sequenceItem, tag)``.

    Args:
        item: One sequence item (a DICOM JSON object).
        key: The tag key inside it.

    Returns:
        The first number, or ``None`` (Cornerstone gives null when the tag is
        missing and undefined for an empty ``Value``; both are ``None``).

    Raises:
        TypeError: When ``item`` is ``None`` (Cornerstone throws too).
    """
    values = get_number_values(js_get(item, key))
    return values[0] if values else None


def get_sequence_items(element: JSON) -> list[JSON]:
    """Cornerstone ``getSequenceItems``: the items of a sequence element.

    Args:
        element: A DICOM JSON SQ element, or ``None``.

    Returns:
        The ``Value`` array; ``[]`` when it is missing or empty.  A non-array
        object ``Value`` is wrapped in a list only when it has a truthy
        ``length`` property (Cornerstone tests ``Value?.length`` first).
    """
    if element is None or element is UNDEFINED:
        return []
    values = js_get(element, "Value")
    if values is None or values is UNDEFINED:
        return []
    if not js_truthy(js_get(values, "length")):
        return []
    if isinstance(values, list):
        return values
    if isinstance(values, dict):
        # Cornerstone quirk: only an object with a truthy `length` is wrapped
        return [values]
    return []


def get_tag_value(element: JSON, just_element: bool = True) -> JSON:
    """The loader's ``getTagValue(tag, justElement)``.

    Args:
        element: A DICOM JSON element, or anything.
        just_element: Return the first value when it is truthy.

    Returns:
        ``Value[0]`` when truthy and ``just_element``; else ``Value`` when
        truthy; else the element itself (so an element without ``Value`` comes
        back whole).
    """
    if js_truthy(element):
        values = js_get(element, "Value")
        if js_truthy(values):
            if just_element:
                first = js_index(values, 0)
                if js_truthy(first):
                    return first
            return values
    return element
