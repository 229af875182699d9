"""QIDO-RS (PS3.18 §10.6): search requests turned into one store query.

The request's query parameters become the arguments of
:meth:`metastore.store.Store.query` (in :func:`search`, the one place the
server calls it): matching keys by keyword or tag with the QIDO value
syntax as they are, ``includefield``, ``limit``, ``offset`` and
``fuzzymatching``.  Nothing of the matching is done here; this module
checks the parameters, adds RetrieveURL and writes the JSON.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Literal

import orjson

from metastore.errors import QueryError
from metastore.keywords import tag_for_keyword
from metastore.store import Store
from metastore.types import DicomJson
from metastore.web.media import HTTPError

Level = Literal["studies", "series", "instances"]

#: Query parameters that are not matching keys (PS3.18 §8.3.4).
CONTROL = frozenset({"limit", "offset", "fuzzymatching", "includefield"})
#: The largest limit or offset the server takes as a number at all.
MAX_INTEGER = 2**31 - 1
#: (0008,1190) RetrieveURL.
RETRIEVE_URL = "00081190"
#: An attribute as a query names it: a keyword or eight hex digits.
_ATTRIBUTE = re.compile(r"[0-9A-Fa-f]{8}|[A-Za-z][A-Za-z0-9]*")
_HEX = re.compile(r"[0-9A-Fa-f]{8}")
#: PS3.5 §9.1: digits and dots, no empty component, at most 64 characters.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
#: The UID attributes of each level (path parameters and RetrieveURL).
_STUDY, _SERIES, _SOP = "0020000D", "0020000E", "00080018"


def check_uid(name: str, uid: str) -> str:
    """Return ``uid`` if it is a well-formed UID, else raise 400 naming it."""
    if len(uid) > 64 or not _UID.fullmatch(uid):
        shown = uid if len(uid) <= 80 else uid[:80] + "..."
        raise HTTPError(
            400,
            f"malformed {name} {shown!r}: a UID is digits and dots, at most 64 "
            "characters (PS3.5 9.1)",
        )
    return uid


@dataclass(slots=True)
class Search:
    """One QIDO request, checked."""

    level: Level
    filters: dict[str, str | list[str]] = field(default_factory=dict)
    include: list[str] | Literal["all"] = field(default_factory=list)
    limit: int | None = None
    offset: int = 0
    fuzzy: bool = False


def _integer(name: str, text: str, minimum: int) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise HTTPError(
            400, f"{name} must be a whole number >= {minimum}, not {text!r}"
        )
    value = int(text)
    if value < minimum or value > MAX_INTEGER:
        raise HTTPError(
            400, f"{name} must be between {minimum} and {MAX_INTEGER}, not {text!r}"
        )
    return value


def _attribute(param: str, name: str) -> str:
    name = name.strip()
    if not _ATTRIBUTE.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise HTTPError(
            400,
            f"{param} {shown!r} is not an attribute: give a DICOM keyword "
            "(PatientName) or a tag of eight hex digits (00100010); sequence "
            "paths are not supported",
        )
    if not _HEX.fullmatch(name) and tag_for_keyword(name) is None:
        raise HTTPError(
            400, f"{param} {name!r} is not a DICOM keyword (PS3.6); a tag works too"
        )
    return name


def parse(
    level: Level,
    params: Sequence[tuple[str, str]],
    path_uids: Mapping[str, str],
) -> Search:
    """Check a request's query parameters and path UIDs.

    Args:
        level: the level the route searches.
        params: the query parameters, in order, repeated keys included.
        path_uids: ``{"StudyInstanceUID": ..., "SeriesInstanceUID": ...}``
            from the path (already checked).

    Raises:
        HTTPError: 400 naming the parameter at fault.
    """
    search = Search(level)
    include: list[str] = []
    include_all = False
    seen: dict[str, list[str]] = {}
    for key, value in params:
        if key == "limit":
            search.limit = _integer("limit", value, 1)
        elif key == "offset":
            search.offset = _integer("offset", value, 0)
        elif key == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise HTTPError(
                    400, f"fuzzymatching must be true or false, not {value!r}"
                )
            search.fuzzy = value.lower() == "true"
        elif key == "includefield":
            for name in value.split(","):
                if name.strip().lower() == "all":
                    include_all = True
                elif name.strip():
                    include.append(_attribute("includefield", name))
        else:
            seen.setdefault(_attribute("matching key", key), []).append(value)
    for key, values in seen.items():
        search.filters[key] = values[0] if len(values) == 1 else values
    for key, uid in path_uids.items():
        search.filters[key] = uid  # the path names the parent: it wins
    search.include = "all" if include_all else list(dict.fromkeys(include))
    return search


def search(
    store: Store, request: Search, max_results: int
) -> tuple[list[DicomJson], bool]:
    """Run a search; ``(rows, truncated)``.

    At most ``max_results`` rows are returned; ``truncated`` says the
    server's maximum cut the answer: the client asked for more (or gave no
    limit) and more were there.

    Raises:
        HTTPError: 400 for a filter or attribute the store refuses.
    """
    wanted = max_results if request.limit is None else min(request.limit, max_results)
    # The one call into the query layer (issue 11's Store.query); typed
    # loosely so this module does not pin its exact signature.
    query: Any = store.query
    rows: Iterator[DicomJson] | None = None
    try:
        # One row past what is returned tells whether the answer was cut.
        rows = query(
            request.level,
            request.filters,
            include=request.include,
            limit=wanted + 1,
            offset=request.offset,
            fuzzy=request.fuzzy,
        )
        found = list(islice(rows, wanted + 1))
    except QueryError as exc:
        raise HTTPError(400, str(exc)) from None
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
    cut = request.limit is None or request.limit > max_results
    return found[:wanted], cut and len(found) > wanted


def add_retrieve_urls(rows: list[DicomJson], level: Level, base: str) -> None:
    """Set (0008,1190) RetrieveURL of each row to this server's resource."""
    for row in rows:
        study = _text(row, _STUDY)
        if study is None:
            continue
        url = f"{base}/studies/{study}"
        if level != "studies":
            series = _text(row, _SERIES)
            if series is None:
                continue
            url += f"/series/{series}"
            if level == "instances":
                sop = _text(row, _SOP)
                if sop is None:
                    continue
                url += f"/instances/{sop}"
        row[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}


def _text(row: DicomJson, tag: str) -> str | None:
    element = row.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if not isinstance(values, list) or not values or not isinstance(values[0], str):
        return None
    return values[0]


def dump(value: Any) -> bytes:
    """JSON bytes of DICOM JSON: orjson, or the stdlib for what it refuses.

    NaN and infinities become ``null`` either way (JSON has no syntax for
    them); lone surrogates are written as ``\\ud800`` escapes.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(_finite(value), separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
