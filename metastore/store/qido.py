"""QIDO-RS style search of the store: :meth:`metastore.store.Store.query`.

This module owns how a QIDO query (level, attribute filters, included
attributes, limit, offset, fuzzy matching) becomes SQL and DICOM JSON rows:

- which attributes are columns (:data:`COLUMNS`, indexed where they are
  required matching keys) and which are answered from the stored DICOM
  JSON (the slower path: decompressed and matched in Python, a chunk at a
  time);
- the matching rules of PS3.4 C.2.2.2 and PS3.18 8.3.4 per VR, as
  ``docs/query.md`` states them;
- streaming: rows come from one statement read in chunks (a server-side
  cursor on PostgreSQL), with the computed attributes and any DICOM JSON
  fetched per chunk, so memory stays flat whatever the result's size.

Validation happens in :func:`plan`, before any row is read, so a bad query
raises :class:`~metastore.errors.QueryError` at the call, never half-way
through a stream.  Private to the store; pydicom's data dictionary is
loaded only for attributes that are not columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore.chunking import gc_paused
from metastore.errors import QueryError, StoreError
from metastore.keywords import dictionary_vr, tag_for_keyword
from metastore.store import codec
from metastore.store import schema as t
from metastore.store.encode import MAX_SEARCH, storable
from metastore.store.names import (
    SEP,
    NameMatcher,
    fold,
    fuzzy_fold,
    has_wildcards,
    pn_json,
    pn_text,
    wildcard_regex,
)
from metastore.store.query import ESCAPE, escape_like
from metastore.store.read import no_jit
from metastore.types import DicomJson

Level = Literal["studies", "series", "instances"]
#: The levels, top down; a level's depth is its index.
LEVELS: tuple[Level, ...] = ("studies", "series", "instances")
FilterValue = str | Sequence[str] | date
#: Rows read from the database per round trip (and per chunk of computed
#: attributes and DICOM JSON fetched for them).
CHUNK = 500
#: Decoded DICOM JSON bases kept per query (one per series; small).
BASE_CACHE = 64


@dataclass(frozen=True, slots=True)
class Column:
    """An attribute the store keeps in a column of a level's table."""

    tag: str
    keyword: str
    vr: str
    #: 0 studies, 1 series, 2 instances.
    depth: int
    #: The column holding the value (as returned).
    name: str
    #: The case-folded column text filters match, if not ``name`` itself.
    key: str | None = None
    #: The fuzzy token column of a PN.
    fuzzy: str | None = None


def _c(tag: str, keyword: str, vr: str, depth: int, name: str, *more: str) -> Column:
    return Column(tag, keyword, vr, depth, name, *more)


#: Every attribute with a column.  The required matching keys of each level
#: (PS3.18 Table 10.6.1-5) are indexed; the rest are return keys.
COLUMNS: tuple[Column, ...] = (
    _c("00080020", "StudyDate", "DA", 0, "study_date"),
    _c("00080030", "StudyTime", "TM", 0, "study_time"),
    _c(
        "00080050",
        "AccessionNumber",
        "SH",
        0,
        "accession_number",
        "accession_number_key",
    ),
    _c(
        "00080090",
        "ReferringPhysicianName",
        "PN",
        0,
        "referring_physician_name",
        "referring_physician_name_key",
        "referring_physician_name_fuzzy",
    ),
    _c(
        "00081030",
        "StudyDescription",
        "LO",
        0,
        "study_description",
        "study_description_key",
    ),
    _c(
        "00100010",
        "PatientName",
        "PN",
        0,
        "patient_name",
        "patient_name_key",
        "patient_name_fuzzy",
    ),
    _c("00100020", "PatientID", "LO", 0, "patient_id", "patient_id_key"),
    _c("00100030", "PatientBirthDate", "DA", 0, "patient_birth_date"),
    _c("00100040", "PatientSex", "CS", 0, "patient_sex"),
    _c("0020000D", "StudyInstanceUID", "UI", 0, "study_instance_uid"),
    _c("00200010", "StudyID", "SH", 0, "dicom_study_id", "dicom_study_id_key"),
    _c("00080060", "Modality", "CS", 1, "modality"),
    _c(
        "0008103E",
        "SeriesDescription",
        "LO",
        1,
        "series_description",
        "series_description_key",
    ),
    _c("0020000E", "SeriesInstanceUID", "UI", 1, "series_instance_uid"),
    _c("00200011", "SeriesNumber", "IS", 1, "series_number"),
    _c(
        "00400244",
        "PerformedProcedureStepStartDate",
        "DA",
        1,
        "performed_procedure_step_start_date",
    ),
    _c(
        "00400245",
        "PerformedProcedureStepStartTime",
        "TM",
        1,
        "performed_procedure_step_start_time",
    ),
    _c("00080016", "SOPClassUID", "UI", 2, "sop_class_uid"),
    _c("00080018", "SOPInstanceUID", "UI", 2, "sop_instance_uid"),
    _c("00200013", "InstanceNumber", "IS", 2, "instance_number"),
    _c("00280008", "NumberOfFrames", "IS", 2, "number_of_frames"),
    _c("00280010", "Rows", "US", 2, "image_rows"),
    _c("00280011", "Columns", "US", 2, "image_columns"),
    _c("00280100", "BitsAllocated", "US", 2, "bits_allocated"),
)
BY_TAG = {c.tag: c for c in COLUMNS}

#: Attributes computed from the rows below: (keyword, VR, depth).
COMPUTED: dict[str, tuple[str, str, int]] = {
    "00080061": ("ModalitiesInStudy", "CS", 0),
    "00201206": ("NumberOfStudyRelatedSeries", "IS", 0),
    "00201208": ("NumberOfStudyRelatedInstances", "IS", 0),
    "00201209": ("NumberOfSeriesRelatedInstances", "IS", 1),
}
MODALITIES_IN_STUDY = "00080061"

#: What every row of a level carries (PS3.18 Table 10.6.3-3/4/5, the
#: attributes the store keeps; parent UIDs included).
RETURNED: dict[str, tuple[str, ...]] = {
    "studies": (
        "00080020", "00080030", "00080050", "00080061", "00080090", "00081030",
        "00100010", "00100020", "00100030", "00100040", "0020000D", "00200010",
        "00201206", "00201208",
    ),
    "series": (
        "00080060", "0008103E", "0020000D", "0020000E", "00200011", "00201209",
        "00400244", "00400245",
    ),
    "instances": (
        "00080016", "00080018", "0020000D", "0020000E", "00200013", "00280008",
        "00280010", "00280011", "00280100",
    ),
}  # fmt: skip

_KEYWORDS = {c.keyword: c.tag for c in COLUMNS} | {
    kw: tag for tag, (kw, _, _) in COMPUTED.items()
}
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
#: VRs whose filter values are lists when they hold ``,`` or ``\`` (neither
#: can be part of one value).
_NUMBERS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
_LISTS = _NUMBERS | {"UI", "CS"}
_NOT_MATCHABLE = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_DATE = re.compile(r"[0-9]{8}")
_TIME = re.compile(r"([0-9]{2})([0-9]{2})?([0-9]{2})?(?:\.([0-9]{1,6}))?")
_DATETIME = re.compile(
    r"([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?"
    r"(?:\.([0-9]{1,6}))?([+-][0-9]{4})?"
)


# -- attributes ----------------------------------------------------------------


def _tag_of(part: str, name: str) -> str:
    """The 8-hex-digit tag of one keyword or tag (``QueryError`` if unknown)."""
    if _HEX_TAG.fullmatch(part):
        return part.upper()
    tag = _KEYWORDS.get(part)
    if tag is not None:
        return tag
    number = tag_for_keyword(part) if part.isidentifier() else None
    if number is None:
        raise QueryError(
            f"unknown attribute {name!r}: not a DICOM keyword or an 8-hex-digit tag"
        )
    return f"{number:08X}"


def resolve(name: object) -> tuple[str, ...]:
    """The tag path of an attribute name: ``PatientName``, ``00100010``, or
    ``RequestAttributeSequence.ScheduledProcedureStepID`` (into sequences)."""
    if not isinstance(name, str) or not name.strip():
        raise QueryError(f"an attribute must be a keyword or a tag, not {name!r}")
    return tuple(_tag_of(part.strip(), name) for part in name.split("."))


def vr_of(tag: str) -> str | None:
    """The dictionary VR of a tag; ``None`` for private and unknown tags."""
    column = BY_TAG.get(tag)
    if column is not None:
        return column.vr
    if tag in COMPUTED:
        return COMPUTED[tag][1]
    vr = dictionary_vr(int(tag, 16))
    # "US or SS", "OB or OW": both are matched alike, take the first
    return vr.split(" or ")[0] if vr else None


# -- filter values -------------------------------------------------------------


def _alternatives(name: str, vr: str | None, value: object) -> list[str] | None:
    """The values a filter accepts ("any of"), or ``None`` for universal match.

    An empty value and ``*`` match everything (PS3.4 C.2.2.2.3); a Python
    sequence means any of its items; for UIDs, codes and numbers a ``,`` or
    ``\\`` separated text is a list too (PS3.18 8.3.4.1 UID list matching).
    """
    items: list[object]
    if isinstance(value, str | date | int | float) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, Sequence) and not isinstance(value, bytes):
        items = list(value)
        if not items:
            raise QueryError(f"{name}: an empty list matches nothing")
    else:
        raise QueryError(
            f"{name}: a filter is text, a date or a list of them, not {value!r}"
        )
    out: list[str] = []
    for item in items:
        if isinstance(item, datetime):
            raise QueryError(f"{name}: give a datetime.date, or text, not {item!r}")
        if isinstance(item, date):
            out.append(item.strftime("%Y%m%d"))
            continue
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise QueryError(f"{name}: a filter value must be text, not {item!r}")
        text = str(item)
        parts = re.split(r"[,\\]", text) if vr in _LISTS else [text]
        for part in parts:
            if vr in _LISTS or vr is None:
                part = part.strip()
            if part in ("", "*"):
                return None
            out.append(part)
    return out


def _check_date(name: str, text: str) -> str:
    if not _DATE.fullmatch(text):
        raise QueryError(f"{name}: {text!r} is not a date as YYYYMMDD")
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise QueryError(f"{name}: {text!r} is not a valid date") from None
    return text


def _split_range(name: str, text: str) -> tuple[str, str] | None:
    """``(low, high)`` of ``low-high``, ``low-``, ``-high``; ``None`` if no ``-``."""
    if "-" not in text:
        return None
    low, _, high = text.partition("-")
    if not (low or high) or "-" in high:
        raise QueryError(f"{name}: {text!r} is not a range like 20200101-20201231")
    return low, high


Bounds = tuple[str | None, str | None]


def _date_bounds(name: str, text: str) -> Bounds:
    parts = _split_range(name, text)
    if parts is None:
        day = _check_date(name, text)
        return day, day
    low = _check_date(name, parts[0]) if parts[0] else None
    high = _check_date(name, parts[1]) if parts[1] else None
    if low and high and low > high:
        raise QueryError(f"{name}: the range {text!r} ends before it starts")
    return low, high


def normal_time(text: str, *, upper: bool = False) -> str | None:
    """A TM value as ``HHMMSS.ffffff`` (``None`` if it is not one).

    Missing parts are zeros, or with ``upper`` the largest value they may
    have: ``10`` -> ``100000.000000`` / ``105959.999999``.
    """
    m = _TIME.fullmatch(text.strip().replace(":", ""))
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        return None
    fill = "9" if upper else "0"
    return (
        hh
        + (mm or ("59" if upper else "00"))
        + (ss or ("59" if upper else "00"))
        + "."
        + (frac or "").ljust(6, fill)
    )


def normal_datetime(text: str, *, upper: bool = False) -> str | None:
    """A DT value as ``YYYYMMDDHHMMSS.ffffff``, its UTC offset ignored."""
    m = _DATETIME.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hh, mm, ss, frac, _ = m.groups()
    low = ("01", "01", "00", "00", "00")
    high = ("12", "31", "23", "59", "59")
    fills = high if upper else low
    parts = [p or f for p, f in zip((month, day, hh, mm, ss), fills, strict=True)]
    return year + "".join(parts) + "." + (frac or "").ljust(6, "9" if upper else "0")


def _norm_bounds(
    name: str, text: str, norm: Callable[..., str | None], what: str
) -> Bounds:
    def bound(part: str, upper: bool) -> str:
        value = norm(part, upper=upper)
        if value is None:
            raise QueryError(f"{name}: {part!r} is not a {what}")
        return value

    if norm(text) is not None:  # one value (a DT may hold a '-' offset)
        return bound(text, False), bound(text, True)
    parts = _split_range(name, text)
    if parts is None:
        raise QueryError(f"{name}: {text!r} is not a {what} or a range of them")
    low = bound(parts[0], False) if parts[0] else None
    high = bound(parts[1], True) if parts[1] else None
    if low and high and low > high:
        raise QueryError(f"{name}: the range {text!r} ends before it starts")
    return low, high


def _in(bounds: list[Bounds], value: str | None) -> bool:
    if value is None:
        return False
    return any(
        (low is None or value >= low) and (high is None or value <= high)
        for low, high in bounds
    )


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise QueryError(f"{name}: {text!r} is not a number") from None


def _no_wildcards(name: str, vr: str, values: list[str]) -> None:
    for value in values:
        if has_wildcards(value):
            raise QueryError(
                f"{name}: wildcards match text only, not a {vr} value ({value!r})"
            )


# -- matching in Python ---------------------------------------------------------

#: Matches one element's ``Value`` list (the values as DICOM JSON has them).
ValueMatcher = Callable[[list[Any]], bool]


def _strip(value: Any) -> str:
    return str(value).strip().strip("\x00").strip()


def value_matcher(name: str, vr: str, values: list[str], fuzzy: bool) -> ValueMatcher:
    """How the values of a ``vr`` element are matched against ``values``.

    Raises:
        QueryError: the filter cannot apply to this VR (a malformed date,
            a wildcard in a UID, a sequence...).
    """
    if vr in _NOT_MATCHABLE:
        what = "a sequence: name an attribute inside it" if vr == "SQ" else "binary"
        raise QueryError(f"{name} cannot be matched: it is {what}")
    if vr == "PN":
        names = [NameMatcher(v, fuzzy=fuzzy) for v in values]
        return lambda got: any(m(pn_text(got)) for m in names)
    if vr == "UI":
        _no_wildcards(name, vr, values)
        uids = set(values)
        return lambda got: any(_strip(v) in uids for v in got)
    if vr == "DA":
        _no_wildcards(name, vr, values)
        dates = [_date_bounds(name, v) for v in values]
        return lambda got: any(_in(dates, _date_text(v)) for v in got)
    if vr == "TM":
        _no_wildcards(name, vr, values)
        times = [_norm_bounds(name, v, normal_time, "time as HHMMSS") for v in values]
        return lambda got: any(_in(times, normal_time(str(v))) for v in got)
    if vr == "DT":
        _no_wildcards(name, vr, values)
        stamps = [
            _norm_bounds(name, v, normal_datetime, "date-time as YYYYMMDDHHMMSS")
            for v in values
        ]
        return lambda got: any(_in(stamps, normal_datetime(str(v))) for v in got)
    if vr in _NUMBERS:
        _no_wildcards(name, vr, values)
        numbers = {_number(name, v) for v in values}
        return lambda got: any(_as_number(v) in numbers for v in got)
    # text: case-insensitive, DICOM wildcards
    exact = {fold(v) for v in values if not has_wildcards(v)}
    patterns = [wildcard_regex(fold(v)) for v in values if has_wildcards(v)]

    def text(got: list[Any]) -> bool:
        for v in got:
            if v is None or isinstance(v, dict | list):
                continue
            folded = fold(_strip(v))
            if folded in exact or any(p.fullmatch(folded) for p in patterns):
                return True
        return False

    return text


def _date_text(value: Any) -> str | None:
    text = _strip(value)
    if re.fullmatch(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2}", text):
        text = text.replace(".", "")
    return text if _DATE.fullmatch(text) else None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@dataclass
class JsonFilter:
    """A filter answered from the stored DICOM JSON (the slower path)."""

    name: str
    path: tuple[str, ...]
    values: list[str]
    fuzzy: bool
    #: Matchers per VR, built on first use (a private tag's VR is only
    #: known from the stored element).
    by_vr: dict[str, ValueMatcher | None] = field(default_factory=dict)

    def matcher(self, vr: str) -> ValueMatcher | None:
        """The matcher for elements of ``vr`` (``None``: they never match)."""
        if vr not in self.by_vr:
            try:
                self.by_vr[vr] = value_matcher(self.name, vr, self.values, self.fuzzy)
            except QueryError:
                self.by_vr[vr] = None  # e.g. "2020-01" against a stored DA
        return self.by_vr[vr]

    def __call__(self, instance: DicomJson | None) -> bool:
        """Whether the instance has a value in the path that matches."""
        if instance is None:
            return False
        datasets: list[Any] = [instance]
        for tag in self.path[:-1]:
            items: list[Any] = []
            for ds in datasets:
                element = ds.get(tag)
                if isinstance(element, dict) and isinstance(element.get("Value"), list):
                    items += [i for i in element["Value"] if isinstance(i, dict)]
            datasets = items
        for ds in datasets:
            element = ds.get(self.path[-1])
            if not isinstance(element, dict):
                continue
            got = element.get("Value")
            vr = element.get("vr")
            if not isinstance(got, list) or not got or not isinstance(vr, str):
                continue
            match = self.matcher(vr)
            if match is not None and match(got):
                return True
        return False


# -- the plan --------------------------------------------------------------------


@dataclass
class RowCheck:
    """A filter checked in Python on a column value of each row."""

    column: Column
    match: ValueMatcher


@dataclass
class Plan:
    """A validated query: SQL conditions, Python checks, what rows carry."""

    level: Level
    depth: int
    where: list[sa.ColumnElement[bool]]
    row_checks: list[RowCheck]
    json_filters: list[JsonFilter]
    #: Column attributes each row carries (by tag), returned ones first.
    columns: list[Column]
    #: Tags returned from the DICOM JSON (included, not columns).
    json_tags: list[str]
    #: Included columns of a lower level: from the level's first instance.
    lower_columns: list[Column]
    computed: list[str]
    include_all: bool
    limit: int | None
    offset: int
    #: The DICOM JSON of the level's rows is needed for every row.
    needs_json: bool = False


def _tables(depth: int) -> tuple[sa.Table, ...]:
    return (t.studies, t.series, t.instances)[: depth + 1]


def plan(
    dialect: str,
    level: object,
    filters: Mapping[str, FilterValue] | None,
    include: Sequence[str] | str,
    limit: object,
    offset: object,
    fuzzy: bool,
) -> Plan:
    """Validate a query and decide how each of its parts is answered.

    Raises:
        QueryError: an unknown level or attribute, a malformed value, a
            negative limit or offset; the message names the key or value.
    """
    if level not in LEVELS:
        hint = ""
        for singular, plural in (("study", "studies"), ("instance", "instances")):
            if level == singular:
                hint = f" (did you mean {plural!r}?)"
        raise QueryError(
            f"level must be one of {', '.join(LEVELS)}, not {level!r}{hint}"
        )
    lvl: Level = level
    depth = LEVELS.index(lvl)
    for what, number in (("limit", limit), ("offset", offset)):
        if number is None and what == "limit":
            continue
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise QueryError(f"{what} must be a non-negative integer, not {number!r}")
    if filters is not None and not isinstance(filters, Mapping):
        raise QueryError(
            f"filters must be a mapping of attribute to value, not {filters!r}"
        )
    p = Plan(
        level=lvl,
        depth=depth,
        where=[],
        row_checks=[],
        json_filters=[],
        columns=[],
        json_tags=[],
        lower_columns=[],
        computed=[],
        include_all=False,
        limit=limit,  # type: ignore[arg-type]
        offset=offset,  # type: ignore[arg-type]
    )
    m = _Sql(dialect, depth)
    for name, value in (filters or {}).items():
        path = resolve(name)
        tag = path[-1]
        vr = vr_of(tag)
        values = _alternatives(name, vr, value)
        if values is None:
            continue  # universal match
        column = BY_TAG.get(tag) if len(path) == 1 else None
        if len(path) == 1 and tag in COMPUTED:
            if tag != MODALITIES_IN_STUDY:
                raise QueryError(f"{name} is computed: it can be returned, not matched")
            p.where.append(m.modalities(values))
            continue
        if column is not None and column.vr == "TM" and column.depth > depth:
            column = None  # times are checked in Python: from the JSON here
        if column is None:
            if vr is not None:
                value_matcher(name, vr, values, fuzzy)  # validates the values
            p.json_filters.append(JsonFilter(name, path, values, fuzzy))
            continue
        # columns hold storable text (encode.storable): so does the filter
        values = [storable(v) for v in values]
        match = value_matcher(name, column.vr, values, fuzzy)  # validates
        condition = m.condition(column, values, fuzzy, name)
        if condition is not None:
            p.where.append(condition)
        if column.vr in ("PN", "TM"):
            p.row_checks.append(RowCheck(column, match))
    # what rows carry
    wanted = list(RETURNED[lvl])
    include_all = False
    if isinstance(include, str):
        include = [include]
    for item in include:
        if not isinstance(item, str):
            raise QueryError(f"include names attributes, not {item!r}")
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "all":
                include_all = True
                continue
            tag = resolve(part)[0]  # a path returns its whole top-level sequence
            if tag not in wanted:
                wanted.append(tag)
    p.include_all = include_all
    for tag in wanted:
        column = BY_TAG.get(tag)
        if column is not None and column.depth <= depth:
            p.columns.append(column)
        elif column is not None:
            p.lower_columns.append(column)
        elif tag in COMPUTED:
            if COMPUTED[tag][2] <= depth:  # a lower level's count: not here
                p.computed.append(tag)
        else:
            p.json_tags.append(tag)
    for check in p.row_checks:
        if check.column not in p.columns:
            p.columns.append(check.column)
    p.needs_json = include_all or bool(p.json_tags or p.json_filters)
    return p


class _Sql:
    """SQL conditions on the columns, for one dialect and level."""

    def __init__(self, dialect: str, depth: int) -> None:
        self.sqlite = dialect == "sqlite"
        self.depth = depth

    def _text(self, text: str) -> str:
        return storable(text)

    def _like(self, target: sa.ColumnElement[Any], text: str) -> sa.ColumnElement[bool]:
        """``target`` equals ``text``, or matches it as a wildcard pattern."""
        if not has_wildcards(text):
            return target == text
        pattern = escape_like(text).replace("*", "%").replace("?", "_")
        return target.like(pattern, escape=ESCAPE)

    def _contains(
        self, target: sa.ColumnElement[Any], text: str, start: str = ""
    ) -> sa.ColumnElement[bool]:
        """``target`` contains ``start + text`` (wildcards kept): a prefilter."""
        pattern = escape_like(start + text).replace("*", "%").replace("?", "_")
        return target.like(f"%{pattern}%", escape=ESCAPE)

    def _fold_code(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """A code string column folded in SQL (``str.casefold`` on SQLite)."""
        if self.sqlite:
            return sa.func.metastore_casefold(column)
        return sa.func.lower(column)

    def condition(
        self, column: Column, values: list[str], fuzzy: bool, name: str
    ) -> sa.ColumnElement[bool] | None:
        """The SQL condition of a column filter (a prefilter for PN), or
        ``None`` when it is checked in Python only (TM)."""
        table = _tables(2)[column.depth]
        col = table.c[column.name]
        if column.vr == "TM":
            return None
        alternatives: list[sa.ColumnElement[bool]] = []
        for value in values:
            text = self._text(value)
            if column.vr == "UI":
                alternatives.append(col == text)
            elif column.vr == "DA":
                low, high = _date_bounds(name, text)
                parts = []
                if low is not None:
                    parts.append(col >= low)
                if high is not None:
                    parts.append(col <= high)
                alternatives.append(sa.and_(*parts))
            elif column.vr in _NUMBERS:
                number = _number(name, text)
                if number.is_integer() and -(2**31) <= number < 2**31:
                    alternatives.append(col == int(number))
            elif column.vr == "PN":
                alternatives.append(self._name(table, column, text, fuzzy))
            elif column.key is not None:
                alternatives.append(self._like(table.c[column.key], fold(text)))
            else:  # a code string without a key column: folded in SQL
                folder = str.casefold if self.sqlite else str.lower
                alternatives.append(self._like(self._fold_code(col), folder(text)))
        condition = sa.or_(*alternatives) if alternatives else sa.false()
        if column.depth <= self.depth:
            return condition
        return self._exists_below(column.depth, condition)

    def _name(
        self, table: sa.Table, column: Column, text: str, fuzzy: bool
    ) -> sa.ColumnElement[bool]:
        """A PN prefilter: every named group occurs in the folded key (or,
        fuzzy, starts a token); the exact rule is checked in Python."""
        assert column.key is not None and column.fuzzy is not None
        groups = [g for g in text.split("=") if g and g != "*"]
        if not groups:
            return sa.true()
        if fuzzy:
            key = table.c[column.fuzzy]
            return sa.and_(*(self._contains(key, fuzzy_fold(g), SEP) for g in groups))
        key = table.c[column.key]
        return sa.and_(*(self._contains(key, fold(g)) for g in groups))

    def _exists_below(
        self, depth: int, condition: sa.ColumnElement[bool]
    ) -> sa.ColumnElement[bool]:
        """Some series (instance) of this row matches: for a lower level."""
        se, ins = t.series, t.instances
        if self.depth == 0 and depth == 1:
            return sa.exists().where(se.c.study_id == t.studies.c.id, condition)
        if self.depth == 0:
            return sa.exists(
                sa.select(ins.c.id)
                .select_from(ins.join(se, se.c.id == ins.c.series_id))
                .where(se.c.study_id == t.studies.c.id, condition)
            )
        return sa.exists().where(ins.c.series_id == t.series.c.id, condition)

    def modalities(self, values: list[str]) -> sa.ColumnElement[bool]:
        """(0008,0061) ModalitiesInStudy: the study has a series of one of them."""
        series = t.series.alias("modality_series")
        folder = str.casefold if self.sqlite else str.lower
        col = self._fold_code(series.c.modality)
        return sa.exists().where(
            series.c.study_id == t.studies.c.id,
            sa.or_(*(self._like(col, folder(self._text(v))) for v in values)),
        )


# -- running it ----------------------------------------------------------------


def statement(p: Plan, dialect: str) -> tuple[sa.Select[Any], list[Column]]:
    """The SELECT of a plan: row ids, then the plan's columns."""
    st, se, ins = t.studies, t.series, t.instances
    ids: list[sa.ColumnElement[Any]] = [st.c.id]
    source: Any = st
    if p.depth >= 1:
        ids.append(se.c.id)
        source = se.join(st, st.c.id == se.c.study_id)
    if p.depth == 2:
        ids.append(ins.c.id)
        source = ins.join(se, se.c.id == ins.c.series_id).join(
            st, st.c.id == se.c.study_id
        )
    tables = _tables(2)
    cols = [tables[c.depth].c[c.name] for c in p.columns]

    def text(col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # byte order on both backends, whatever PostgreSQL's collation
        return col if dialect == "sqlite" else sa.collate(col, "C")

    order: list[Any] = [
        sa.nulls_first(st.c.study_date),
        sa.nulls_first(text(st.c.study_time)),
        text(st.c.study_instance_uid),
    ]
    if p.depth >= 1:
        order = [
            text(st.c.study_instance_uid),
            sa.nulls_first(se.c.series_number),
            text(se.c.series_instance_uid),
        ]
    if p.depth == 2:
        order += [sa.nulls_first(ins.c.instance_number), text(ins.c.sop_instance_uid)]
    stmt = sa.select(*ids, *cols).select_from(source).where(*p.where).order_by(*order)
    if not p.row_checks and not p.json_filters:
        stmt = stmt.limit(p.limit).offset(p.offset or None)
    return stmt, p.columns


def run(conn: Connection, p: Plan) -> Iterator[DicomJson]:
    """Stream the rows of a plan on ``conn`` (``Store.query`` opens it when
    first asked for a row, and releases it when done or closed)."""
    stmt, columns = statement(p, conn.dialect.name)
    in_python = bool(p.row_checks or p.json_filters)
    skip = p.offset if in_python else 0
    left = p.limit if in_python else None
    if left == 0:
        return
    n_ids = p.depth + 1
    checks = [(n_ids + columns.index(c.column), c.match) for c in p.row_checks]
    fetch = _Fetcher()
    # JIT compiling costs 5-20 ms a statement, more than these statements
    # take; the planner asks for it when its estimates are high (a table not
    # ANALYZEd since a bulk index, say)
    no_jit(conn)
    small = not in_python and p.limit is not None and p.limit <= CHUNK
    if small:  # one round trip, no server-side cursor to declare and close
        result = conn.execute(stmt)
    else:  # on the statement: the chunk's other queries stay client-side
        result = conn.execute(stmt.execution_options(yield_per=CHUNK))
    for part in result.partitions(CHUNK):
        rows = [r for r in part if all(match([r[i]]) for i, match in checks)]
        jsons: dict[int, DicomJson | None] = {}
        if p.json_filters:
            with gc_paused():
                jsons = fetch.json(conn, p.depth, [r[p.depth] for r in rows])
            rows = [
                r for r in rows if all(f(jsons.get(r[p.depth])) for f in p.json_filters)
            ]
        if skip:
            dropped, skip = min(skip, len(rows)), skip - min(skip, len(rows))
            rows = rows[dropped:]
        if left is not None:
            rows, left = rows[:left], left - min(left, len(rows))
        if rows:
            # thousands of new dicts: the cyclic GC would walk them all
            # again and again (3x slower); paused per chunk, never while
            # the caller has a row
            with gc_paused():
                built = _build(conn, p, columns, rows, jsons, fetch)
            yield from built
        if left == 0:
            return


def _altered(column: Column, value: Any) -> bool:
    """Whether a column's text may differ from the element (cut, or U+FFFD)."""
    if not isinstance(value, str) or column.vr == "UI":
        return False
    width = 16 if column.vr == "CS" else MAX_SEARCH
    return len(value) >= width or "\ufffd" in value


def _build(
    conn: Connection,
    p: Plan,
    columns: list[Column],
    rows: list[Any],
    jsons: dict[int, DicomJson | None],
    fetch: _Fetcher,
) -> list[DicomJson]:
    """DICOM JSON rows for one chunk of matching rows."""
    built: list[DicomJson] = []
    n_ids = p.depth + 1
    own = p.depth  # the row id of the level's own table
    wanted = [r[own] for r in rows]
    if not p.needs_json:
        wanted = [
            r[own]
            for r in rows
            if any(_altered(c, r[n_ids + i]) for i, c in enumerate(columns))
        ]
    missing = [i for i in wanted if i not in jsons]
    if missing:
        jsons.update(fetch.json(conn, p.depth, missing))
    lower: dict[int, dict[str, Any]] = {}
    if p.lower_columns:
        lower = fetch.lower_columns(
            conn, p.depth, [r[own] for r in rows], p.lower_columns
        )
    studies: dict[int, tuple[list[str], int, int]] = {}
    series: dict[int, int] = {}
    if any(COMPUTED[tag][2] == 0 for tag in p.computed):
        studies = fetch.study_counts(conn, [r[0] for r in rows])
    if any(COMPUTED[tag][2] == 1 for tag in p.computed):
        series = fetch.series_counts(conn, [r[1] for r in rows])
    for r in rows:
        instance = jsons.get(r[own])
        out: DicomJson = {}
        if p.include_all and instance is not None:
            out.update(instance)
        for tag in p.json_tags:
            element = None if instance is None else instance.get(tag)
            if element is not None:
                out[tag] = element
            elif tag not in out:
                vr = vr_of(tag)
                if vr is not None:
                    out[tag] = {"vr": vr}
        for i, c in enumerate(columns):
            value = r[n_ids + i]
            if instance is not None and _altered(c, value) and c.tag in instance:
                out[c.tag] = instance[c.tag]
            else:
                out[c.tag] = _element(c.vr, value)
        for tag in p.computed:
            out[tag] = _computed(tag, r, studies, series)
        values = lower.get(r[own], {})
        for c in p.lower_columns:
            out[c.tag] = _element(c.vr, values.get(c.tag))
        built.append(dict(sorted(out.items())))
    return built


def _element(vr: str, value: Any) -> dict[str, Any]:
    """A column value as a DICOM JSON element."""
    if value is None or value == "":
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": pn_json(value)}
    return {"vr": vr, "Value": [value]}


def _computed(
    tag: str,
    row: Any,
    studies: dict[int, tuple[list[str], int, int]],
    series: dict[int, int],
) -> dict[str, Any]:
    vr = COMPUTED[tag][1]
    if tag == "00201209":
        return {"vr": vr, "Value": [series.get(row[1], 0)]}
    modalities, n_series, n_instances = studies.get(row[0], ([], 0, 0))
    if tag == MODALITIES_IN_STUDY:
        return {"vr": vr, "Value": modalities} if modalities else {"vr": vr}
    return {"vr": vr, "Value": [n_series if tag == "00201206" else n_instances]}


#: The ids of a chunk, bound as one list (SQLAlchemy expands it per call,
#: without coercing each id into a literal of the statement).
_IDS: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)


class _Fetcher:
    """What a query reads beside its main statement, a chunk at a time."""

    def __init__(self) -> None:
        self.bases: dict[int, bytes] = {}

    def first_instances(
        self, conn: Connection, depth: int, ids: Sequence[int]
    ) -> dict[int, int]:
        """``{row id: instances.id}`` of each row's first instance.

        A study's or series' first instance is its instance with the lowest
        SOP Instance UID, the one its columns come from, stored in the row
        (``first_instance_id``, kept by ``store.write.settle``): one primary
        key lookup per row, whatever order the instances were stored in.
        An instance is its own.
        """
        ids = sorted(set(ids))
        if depth == 2 or not ids:
            return {i: i for i in ids}
        table = _tables(depth)[depth]
        stmt = sa.select(table.c.id, table.c.first_instance_id).where(
            table.c.id.in_(_IDS)
        )
        found = conn.execute(stmt, {"ids": ids})
        return {i: f for i, f in found if f is not None}

    def lower_columns(
        self, conn: Connection, depth: int, ids: Sequence[int], columns: list[Column]
    ) -> dict[int, dict[str, Any]]:
        """``{row id: {tag: value}}``: columns of a lower level, from each
        row's first instance (and its series)."""
        se, ins = t.series, t.instances
        first = self.first_instances(conn, depth, ids)
        if not first:
            return {}
        tables = _tables(2)
        cols = [tables[c.depth].c[c.name] for c in columns]
        stmt = (
            sa.select(ins.c.id, *cols)
            .select_from(ins.join(se, se.c.id == ins.c.series_id))
            .where(ins.c.id.in_(_IDS))
        )
        rows = conn.execute(stmt, {"ids": sorted(set(first.values()))})
        found = {row[0]: row[1:] for row in rows}
        return {
            row_id: {c.tag: v for c, v in zip(columns, found[i], strict=True)}
            for row_id, i in first.items()
            if i in found
        }

    def json(
        self, conn: Connection, depth: int, ids: Sequence[int]
    ) -> dict[int, DicomJson | None]:
        """The DICOM JSON of each row id of a level (its first instance's for
        a study or a series: the lowest SOP Instance UID, :meth:`first_instances`)."""
        ins = t.instances
        ids = sorted(set(ids))
        if not ids:
            return {}
        first = self.first_instances(conn, depth, ids)
        blobs = {
            i: (blob, base)
            for i, blob, base in conn.execute(
                sa.select(ins.c.id, ins.c.dicom_json, ins.c.dicom_json_base_id).where(
                    ins.c.id.in_(_IDS)
                ),
                {"ids": sorted(set(first.values()))},
            )
        }
        self._load_bases(conn, {b for _, b in blobs.values() if b is not None})
        out: dict[int, DicomJson | None] = dict.fromkeys(ids)
        for row_id, instance_id in first.items():
            if instance_id not in blobs:
                continue
            blob, base_id = blobs[instance_id]
            base = None if base_id is None else self.bases.get(base_id)
            try:
                out[row_id] = codec.decode_dicom_json(bytes(blob), base)
            except ValueError as exc:
                raise StoreError(
                    f"the stored DICOM JSON of instance row {instance_id} "
                    f"cannot be decoded: {exc}"
                ) from exc
        return out

    def _load_bases(self, conn: Connection, wanted: set[int]) -> None:
        missing = sorted(wanted - set(self.bases))
        if not missing:
            return
        if len(self.bases) + len(missing) > BASE_CACHE:
            # forget all but this chunk's (a chunk may need more than the cap)
            self.bases = {k: v for k, v in self.bases.items() if k in wanted}
        mv = t.module_values
        stmt = sa.select(mv.c.id, mv.c.value).where(mv.c.id.in_(_IDS))
        for base_id, blob in conn.execute(stmt, {"ids": missing}):
            self.bases[base_id] = codec.inflate(bytes(blob))

    def study_counts(
        self, conn: Connection, study_ids: Sequence[int]
    ) -> dict[int, tuple[list[str], int, int]]:
        """``{study id: (modalities, series, instances)}``.

        From the series rows alone: each holds its instance count
        (``series.instance_count``, kept by ``store.write.settle``), so a
        study costs its series, not its instances.
        """
        se = t.series
        ids = sorted(set(study_ids))
        found: dict[int, tuple[set[str], int, int]] = {i: (set(), 0, 0) for i in ids}
        per_series = sa.select(se.c.study_id, se.c.modality, se.c.instance_count).where(
            se.c.study_id.in_(_IDS)
        )
        for study_id, modality, n in conn.execute(per_series, {"ids": ids}):
            modalities, n_series, n_instances = found[study_id]
            if modality:
                modalities.add(modality)
            found[study_id] = (modalities, n_series + 1, n_instances + n)
        return {i: (sorted(m), s, n) for i, (m, s, n) in found.items()}

    def series_counts(
        self, conn: Connection, series_ids: Sequence[int]
    ) -> dict[int, int]:
        """``{series id: instances}`` (the stored ``series.instance_count``)."""
        se = t.series
        stmt = sa.select(se.c.id, se.c.instance_count).where(se.c.id.in_(_IDS))
        found = conn.execute(stmt, {"ids": sorted(set(series_ids))})
        return {series_id: n for series_id, n in found}
