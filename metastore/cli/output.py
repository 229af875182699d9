"""How the ``metastore`` command writes: JSON Lines, tables, CSV.

Machine output is JSON Lines (one compact document per line; NaN and
infinities written as ``null``, integral floats as integers where a
command asks); tables go through rich, which measures wide characters.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import orjson

from metastore.keywords import keyword_of


def write_json_lines(rows: Iterable[Any], out: IO[bytes]) -> None:
    """Write one compact JSON document per line (NaN and infinities as null)."""
    for row in rows:
        try:
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # lone surrogates, integers past 64 bits
            line = _stdlib_json_line(row)
        out.write(line)
    out.flush()


def write_js_lines(rows: Iterable[Any], out: IO[bytes]) -> None:
    """One JSON document per line, as JavaScript's ``JSON.stringify`` writes it.

    For ``get`` and ``export``, whose output is diffed against a browser's
    ``JSON.stringify(metaData.get(...))``: ``800`` not ``800.0``, ``-0`` as
    ``0``, NaN as ``null`` (:mod:`metastore.jsjson`).
    """
    from metastore.jsjson import dumps

    for row in rows:
        out.write(dumps(row))
        out.write(b"\n")
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


def plain_numbers(value: Any) -> Any:
    """``value`` with every integral float as an int (``800.0`` -> ``800``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: plain_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_numbers(item) for item in value]
    return value


def stdout() -> IO[bytes]:
    """The binary stdout, after flushing what was written to the text one."""
    sys.stdout.flush()
    return sys.stdout.buffer


def cell(value: Any) -> str:
    """A value as one table cell: lists joined by commas, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ",".join(map(cell, value))
    return str(value)


def print_table(
    rows: Iterable[Sequence[Any]], columns: Sequence[str], *, empty: str = ""
) -> None:
    """Print rows as a table on stdout, aligned by display width.

    rich measures every cell in terminal columns (a CJK character takes
    two), so names in any script line up.  On a terminal, long cells fold
    to its width; elsewhere the table is as wide as its widest row.  Cells
    are text, never rich markup.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in columns:
        table.add_column(Text(name, style="bold"), overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell(value)) for value in row))
    sys.stdout.flush()
    console = Console(file=sys.stdout, highlight=False, emoji=False, markup=False)
    if not table.rows:
        if empty:
            console.print(Text(empty))
        return
    if console.is_terminal:
        console.print(table)
        return
    console.width = _UNBOUNDED  # the table takes its natural width
    with console.capture() as captured:
        console.print(table)
    # no padding after the last cell, for diff, grep and cut
    lines = (line.rstrip() for line in captured.get().splitlines())
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def tag_rows(instance: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """DICOM JSON elements as table rows: tag, keyword, VR and value text."""
    for tag, element in instance.items():
        keyword = keyword_of(tag) if _HEX_TAG.fullmatch(tag) else ""
        vr = element.get("vr", "") if isinstance(element, dict) else ""
        yield f"({tag[:4]},{tag[4:]})", keyword, vr, element_text(element)


def element_text(element: Any) -> str:
    """One DICOM JSON element as text: values joined by backslashes (as in
    Part 10), person names as ``Alphabetic=Ideographic=Phonetic``, a
    sequence as its item count, bulk data as its URI or size."""
    if not isinstance(element, dict):
        return str(element)
    if "BulkDataURI" in element:
        return f"BulkDataURI {element['BulkDataURI']}"
    if "InlineBinary" in element:
        size = len(str(element["InlineBinary"])) * 3 // 4
        return f"InlineBinary (about {size} bytes)"
    values = element.get("Value")
    if not isinstance(values, list):
        return ""
    if element.get("vr") == "SQ":
        return f"{len(values)} item" + ("" if len(values) == 1 else "s")
    return "\\".join(_value_text(value) for value in values)


def _value_text(value: Any) -> str:
    if isinstance(value, dict):  # a person name's groups
        groups = [str(value.get(g) or "") for g in _PN_GROUPS]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    return cell(value)


_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
#: The width of the console when stdout is no terminal: no cell folds.
_UNBOUNDED = 1_000_000
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
