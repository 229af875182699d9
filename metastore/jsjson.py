"""JSON text as JavaScript's ``JSON.stringify`` writes it, for metastore's answers.

This module owns the one difference between metastore's Python answers and
what a browser prints for Cornerstone's: numbers.  JavaScript has one number
type, so ``JSON.stringify`` writes ``800`` where Python's ``json`` and orjson
write ``800.0``, ``0`` for ``-0``, ``null`` for ``NaN`` and the infinities,
and switches to exponent form only for magnitudes of at least ``1e21`` or
below ``1e-6`` (as ``1e+21``, ``1.5e-7``).  :func:`dumps` writes a value as
``JSON.stringify(value)`` would for the same answer, so ``metastore get`` and
``metastore export`` can be diffed against ``JSON.stringify(metaData.get(...))``
from a browser.  The Python API keeps Python types; only the text changes.

A leaf: it imports orjson and the standard library, nothing of metastore.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

__all__ = ["dumps", "number_text"]

#: Integers JavaScript holds exactly (``Number.MAX_SAFE_INTEGER`` + 1 is
#: exact too, but past it a Python int is not the number JavaScript has).
_EXACT_INT = 2**53


def number_text(value: float) -> str:
    """``JSON.stringify(value)`` for a number: ``Number.prototype.toString``.

    ``NaN`` and the infinities are ``"null"`` (``JSON.stringify``'s rule), and
    ``-0`` is ``"0"``.  Otherwise the digits are the shortest that read back
    as the same double (Python's ``repr`` finds the same ones JavaScript's
    ``Number::toString`` does, ECMA-262 6.1.6.1.20), laid out by
    JavaScript's rule: plain for ``1e-7 < |x| < 1e21``, else ``d.ddde+n``.

    An ``int`` is the number JavaScript would hold: exact up to ``2**53``,
    else the nearest double (``2**64`` is ``18446744073709552000``).
    """
    if isinstance(value, int):
        if -_EXACT_INT <= value <= _EXACT_INT:
            return str(int(value))
        try:
            value = float(value)
        except OverflowError:  # past the doubles: Infinity in JavaScript
            return "null"
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"  # -0 too: JSON.stringify(-0) is "0"
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if not e:
        # repr is plain for 1e-4 <= |x| < 1e16, where JavaScript is plain too
        # with the same digits; it only adds ".0" to integral values.
        return text[:-2] if text.endswith(".0") else text
    sign = ""
    if mantissa[0] == "-":
        sign, mantissa = "-", mantissa[1:]
    digits = mantissa.replace(".", "")  # k significant digits, no zeros around
    k = len(digits)
    n = int(exponent) + 1  # the value is 0.digits * 10**n
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    power = f"e+{n - 1}" if n > 0 else f"e-{1 - n}"
    if k == 1:
        return sign + digits + power
    return sign + digits[0] + "." + digits[1:] + power


#: Types written alike by orjson and ``JSON.stringify``, not worth a call.
_PLAIN = frozenset({str, bool, type(None)})

#: ``number_text`` of the floats seen lately, as orjson fragments: an
#: archive repeats few distinct numbers (spacings, window levels), and the
#: text costs most of a conversion.  Emptied when it reaches its bound.
_FRAGMENTS: dict[float, orjson.Fragment] = {}
_FRAGMENTS_LIMIT = 65_536


def _js_values(value: Any) -> Any:
    """``value`` with every number orjson would write differently pre-written."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _PLAIN else _js_values(v) for k, v in value.items()}
    if kind is float:
        if value != value:
            return None  # NaN: null, and never a key of _FRAGMENTS (NaN != NaN)
        fragment = _FRAGMENTS.get(value)
        if fragment is None:
            if len(_FRAGMENTS) >= _FRAGMENTS_LIMIT:
                _FRAGMENTS.clear()
            fragment = _FRAGMENTS[value] = orjson.Fragment(number_text(value))
        return fragment
    if kind is int:
        return value if -_EXACT_INT <= value <= _EXACT_INT else _big_int(value)
    if kind is list or kind is tuple:
        return [v if type(v) in _PLAIN else _js_values(v) for v in value]
    if kind in _PLAIN:
        return value
    return _other(value)


def _big_int(value: int) -> orjson.Fragment:
    return orjson.Fragment(number_text(value))


def _other(value: Any) -> Any:
    """Subclasses of the JSON types (an ``IntEnum``, a ``dict`` subclass)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return orjson.Fragment(number_text(value))
    if isinstance(value, float):
        return orjson.Fragment(number_text(value))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {key: _js_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_js_values(item) for item in value]
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def dumps(value: Any) -> bytes:
    """``JSON.stringify(value)`` as UTF-8 bytes: compact, numbers as JavaScript's.

    Strings are written as ``JSON.stringify`` writes them: non-ASCII text as
    is, a lone surrogate (which orjson refuses) as a ``\\udXXX`` escape.

    Raises:
        TypeError: ``value`` holds something that is not a JSON value.
    """
    converted = _js_values(value)
    try:
        return orjson.dumps(converted)
    except TypeError:  # a lone surrogate: the slow path, JSON.stringify's way
        return _slow(value).encode("utf-8")


#: A surrogate code point on its own (a pair is never in a Python str).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _string(text: str) -> str:
    """A JSON string as ``JSON.stringify`` writes it (well-formed, ES2019)."""
    quoted = json.dumps(text, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _slow(value: Any) -> str:
    """:func:`dumps` without orjson, for what orjson refuses."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "true" if value else "false"
    if isinstance(value, int | float):
        return number_text(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        items = (f"{_string(str(k))}:{_slow(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_slow(item) for item in value) + "]"
    raise TypeError(f"{type(value).__name__} is not a JSON value")
