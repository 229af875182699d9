"""How the ``metastore`` command writes: JSON Lines, tables, CSV.

Machine output is JSON Lines (one compact document per line; NaN and
infinities written as ``null``, integral floats as integers where a
command asks); tables go through rich, which measures wide characters.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from typing import IO, Any

import orjson


def write_json_lines(rows: Iterable[Any], out: IO[bytes]) -> None:
    """Write one compact JSON document per line (NaN and infinities as null)."""
    for row in rows:
        try:
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # lone surrogates, integers past 64 bits
            line = _stdlib_json_line(row)
        out.write(line)
    out.flush()


def _stdlib_json_line(row: Any) -> bytes:
    """What orjson refuses, by the standard library: lone surrogates as
    ``\\ud800`` escapes (ASCII output), big integers as they are, NaN and
    infinities as null like orjson."""
    text = json.dumps(_nan_to_null(row), ensure_ascii=True, separators=(",", ":"))
    return text.encode("ascii") + b"\n"


def _nan_to_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_null(item) for item in value]
    return value


def stdout() -> IO[bytes]:
    """The binary stdout, after flushing what was written to the text one."""
    sys.stdout.flush()
    return sys.stdout.buffer
