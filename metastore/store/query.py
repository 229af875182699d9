"""Search of the store at study, series or instance level (``Store.query``).

This module owns how user filters become SQL: DICOM-style ``*``/``?``
wildcards translated to ``LIKE`` with an explicit escape character (``%``,
``_``, ``\\`` and quotes in a filter are data, and every value is a bound
parameter), case-insensitive matching that also works for non-Latin names
(against ``str.casefold`` key columns the store writes, the same on SQLite and
PostgreSQL), and ``YYYYMMDD`` date ranges.  It is private to the store.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore.errors import QueryError
from metastore.store import schema as t
from metastore.store.encode import fold, storable

LEVELS = ("study", "series", "instance")
#: The escape character of every LIKE pattern built here.
ESCAPE = "\\"
_DATE = re.compile(r"[0-9]{8}")
_LIKE_SPECIAL = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})


def escape_like(text: str) -> str:
    """``text`` with LIKE's special characters escaped by :data:`ESCAPE`."""
    return text.translate(_LIKE_SPECIAL)


def like_pattern(text: str, fold: Any) -> tuple[str, bool]:
    """Translate a DICOM wildcard filter into a folded LIKE pattern.

    Args:
        text: the filter; ``*`` matches any run of characters, ``?`` one.
        fold: the case-folding function that matches the SQL side.

    Returns:
        ``(pattern, has_wildcards)``; without wildcards the pattern is the
        folded text itself, to be compared with ``=``.
    """
    folded = fold(text)
    if "*" not in folded and "?" not in folded:
        return folded, False
    escaped = escape_like(folded)
    return escaped.replace("*", "%").replace("?", "_"), True


def check_date(name: str, value: object) -> str | None:
    """Validate a ``YYYYMMDD`` filter.

    Raises:
        QueryError: the value is not a real date in that form.
    """
    if value is None:
        return None
    if not isinstance(value, str) or _DATE.fullmatch(value) is None:
        raise QueryError(f"{name} must be a date as YYYYMMDD, not {value!r}")
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise QueryError(f"{name} is not a valid date: {value!r}") from None
    return value


class _Matcher:
    """Builds case-insensitive match conditions for one dialect.

    Text filters match a ``*_key`` column, written as the plain column
    case-folded in Python (:func:`metastore.store.encode.fold`), against the
    filter folded by the same function: ``STRASSE`` finds ``straße`` and
    ``ΟΔΟΣ`` finds ``οδος`` on SQLite and PostgreSQL alike.  Only
    ``modality`` has no key: it is folded in SQL (:meth:`match_code`).
    """

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"

    def match(self, key: sa.ColumnElement[Any], text: object) -> sa.ColumnElement[bool]:
        """The folded ``key`` column matches wildcard filter ``text``, ignoring case.

        Args:
            key: a column holding ``fold(...)`` of the searched attribute.
            text: the user's filter.
        """
        return _compare(key, _text(text), fold)

    def match_code(
        self, column: sa.ColumnElement[Any], text: object
    ) -> sa.ColumnElement[bool]:
        """A code string column (``modality``) matches ``text``, ignoring case.

        The column is folded in SQL: Python's ``str.casefold`` on SQLite,
        ``lower()`` on PostgreSQL.  The two agree on the ASCII letters, digits,
        spaces and underscores a DICOM CS value is made of.
        """
        if self.sqlite:
            return _compare(
                sa.func.metastore_casefold(column), _text(text), str.casefold
            )
        return _compare(sa.func.lower(column), _text(text), str.lower)


def _text(text: object) -> str:
    """``text`` as the store keeps text, if it is a string, else QueryError.

    NUL and lone surrogates become U+FFFD as in stored attributes
    (:func:`~metastore.store.encode.storable`): the filter then matches what
    was stored from such text, and the drivers can always send it.
    """
    if not isinstance(text, str):
        raise QueryError(f"a text filter must be a string, not {text!r}")
    return storable(text)


def _compare(
    target: sa.ColumnElement[Any], text: str, folder: Any
) -> sa.ColumnElement[bool]:
    """``target`` equals, or is LIKE, ``text`` folded by ``folder``."""
    pattern, wild = like_pattern(text, folder)
    if not wild:
        return target == pattern
    return target.like(pattern, escape=ESCAPE)


def query(
    conn: Connection,
    level: str,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    modality: str | None = None,
    study_date_from: str | None = None,
    study_date_to: str | None = None,
    accession_number: str | None = None,
    description: str | None = None,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Run :meth:`metastore.store.Store.query` on ``conn``."""
    if level not in LEVELS:
        raise QueryError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    date_from = check_date("study_date_from", study_date_from)
    date_to = check_date("study_date_to", study_date_to)
    if date_from and date_to and date_from > date_to:
        raise QueryError(
            f"study_date_from {date_from} is after study_date_to {date_to}"
        )
    _check_limit(limit)
    m = _Matcher(conn.dialect.name)
    st, se, ins, src = t.studies, t.series, t.instances, t.sources

    where: list[sa.ColumnElement[bool]] = []
    if patient_id is not None:
        where.append(m.match(st.c.patient_id_key, patient_id))
    if patient_name is not None:
        where.append(m.match(st.c.patient_name_key, patient_name))
    if accession_number is not None:
        where.append(m.match(st.c.accession_number_key, accession_number))
    if date_from is not None:
        where.append(st.c.study_date >= date_from)
    if date_to is not None:
        where.append(st.c.study_date <= date_to)
    if study_instance_uid is not None:
        where.append(st.c.study_instance_uid == _text(study_instance_uid))

    study_cols = [
        st.c.study_instance_uid,
        st.c.patient_id,
        st.c.patient_name,
        st.c.study_date,
        st.c.study_time,
        st.c.accession_number,
        st.c.study_description,
    ]
    if level == "study":
        if description is not None:
            where.append(m.match(st.c.study_description_key, description))
        if modality is not None:
            where.append(
                sa.select(se.c.id)
                .where(se.c.study_id == st.c.id, m.match_code(se.c.modality, modality))
                .exists()
            )
        if series_instance_uid is not None:
            where.append(
                sa.select(se.c.id)
                .where(
                    se.c.study_id == st.c.id,
                    se.c.series_instance_uid == _text(series_instance_uid),
                )
                .exists()
            )
        stmt = (
            sa.select(st.c.id, *study_cols)
            .where(*where)
            .order_by(st.c.study_date, st.c.study_instance_uid)
            .limit(limit)
        )
        rows = list(conn.execute(stmt))
        return _with_study_counts(conn, rows)

    if description is not None:
        where.append(m.match(se.c.series_description_key, description))
    if modality is not None:
        where.append(m.match_code(se.c.modality, modality))
    if series_instance_uid is not None:
        where.append(se.c.series_instance_uid == _text(series_instance_uid))
    series_cols = [
        se.c.series_instance_uid,
        se.c.modality,
        se.c.series_number,
        se.c.series_description,
    ]
    if level == "series":
        instance_count = (
            sa.select(sa.func.count())
            .where(ins.c.series_id == se.c.id)
            .scalar_subquery()
            .label("number_of_instances")
        )
        stmt = (
            sa.select(*study_cols, *series_cols, instance_count)
            .select_from(st.join(se, se.c.study_id == st.c.id))
            .where(*where)
            .order_by(
                st.c.study_instance_uid, se.c.series_number, se.c.series_instance_uid
            )
            .limit(limit)
        )
        return [dict(row._mapping) for row in conn.execute(stmt)]

    stmt = (
        sa.select(
            *study_cols,
            *series_cols,
            ins.c.sop_instance_uid,
            ins.c.sop_class_uid,
            ins.c.instance_number,
            ins.c.number_of_frames,
            src.c.location,
        )
        .select_from(
            st.join(se, se.c.study_id == st.c.id)
            .join(ins, ins.c.series_id == se.c.id)
            .join(src, src.c.id == ins.c.source_id)
        )
        .where(*where)
        .order_by(
            se.c.series_instance_uid, ins.c.instance_number, ins.c.sop_instance_uid
        )
        .limit(limit)
    )
    return [dict(row._mapping) for row in conn.execute(stmt)]


#: The largest ``LIMIT`` both backends take (a signed 64-bit integer).
MAX_LIMIT = 2**63 - 1


def _check_limit(limit: object) -> None:
    """Raise QueryError unless ``limit`` is ``None`` or an int in 0..MAX_LIMIT."""
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise QueryError(f"limit must be a non-negative integer, not {limit!r}")
    if limit > MAX_LIMIT:
        # SQLite's driver would raise OverflowError, PostgreSQL "out of range"
        raise QueryError(f"limit {limit} is more than the largest, {MAX_LIMIT}")


def database_bytes(conn: Connection) -> int | None:
    """Size of the database on disk, as the backend reports it."""
    if conn.dialect.name == "sqlite":
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        return int(pages) * int(size)
    if conn.dialect.name == "postgresql":
        stmt = sa.text("SELECT pg_database_size(current_database())")
        return int(conn.execute(stmt).scalar_one())
    return None  # pragma: no cover


def _with_study_counts(
    conn: Connection, rows: list[sa.Row[Any]]
) -> list[dict[str, Any]]:
    """Study rows as dicts with their modalities and series/instance counts."""
    se, ins = t.series, t.instances
    ids = [row.id for row in rows]
    modalities: dict[int, set[str]] = {i: set() for i in ids}
    series_count = dict.fromkeys(ids, 0)
    instance_count = dict.fromkeys(ids, 0)
    for start in range(0, len(ids), 5000):
        part = ids[start : start + 5000]
        stmt = (
            sa.select(se.c.study_id, se.c.modality, sa.func.count(ins.c.id))
            .select_from(se.outerjoin(ins, ins.c.series_id == se.c.id))
            .where(se.c.study_id.in_(part))
            .group_by(se.c.id, se.c.study_id, se.c.modality)
        )
        for study_id, modality, n in conn.execute(stmt):
            series_count[study_id] += 1
            instance_count[study_id] += n
            if modality:
                modalities[study_id].add(modality)
    out = []
    for row in rows:
        item = dict(row._mapping)
        del item["id"]
        item["modalities"] = sorted(modalities[row.id])
        item["number_of_series"] = series_count[row.id]
        item["number_of_instances"] = instance_count[row.id]
        out.append(item)
    return out


#: What continues a folder's path in the locations under it.
_SEPARATORS = tuple(dict.fromkeys(("/", os.sep)))


def root_ranges(root: str) -> list[tuple[str, str | None]]:
    """The location ranges under ``root``: the one "is under this root" rule.

    A location is under ``root`` when it equals it or continues it after a
    folder separator (``/``, or ``os.sep``) or a zip's ``!/``; a root that
    ends with a separator has only what continues it.  Each range is
    ``(low, None)`` for ``low`` itself, or ``[prefix, bound)`` where
    ``bound`` is the prefix with its last character replaced by the next
    one (``/`` -> ``0``): exactly the texts starting with ``prefix``.
    """
    if root.endswith(_SEPARATORS):
        return [(root, root[:-1] + chr(ord(root[-1]) + 1))]
    ranges: list[tuple[str, str | None]] = [(root, None)]
    for sep in (*_SEPARATORS, "!/"):
        ranges.append((root + sep, root + sep[:-1] + chr(ord(sep[-1]) + 1)))
    return ranges


def in_ranges(
    conn: Connection,
    location: sa.ColumnElement[str],
    ranges: Sequence[tuple[str, str | None]],
) -> sa.ColumnElement[bool]:
    """``location`` is in one of ``ranges`` (:func:`root_ranges`).

    Compared code point by code point on both backends (SQLite's BINARY
    collation, PostgreSQL's "C"), where a range is exactly a prefix and case
    counts (``LIKE`` ignores ASCII case on SQLite); SQLite can use the index.
    """
    if conn.dialect.name == "postgresql":
        location = location.collate("C")
    return sa.or_(
        *(
            location == low
            if high is None
            else sa.and_(location >= low, location < high)
            for low, high in ranges
        )
    )


def under_root(
    conn: Connection, location: sa.ColumnElement[str], root: str
) -> sa.ColumnElement[bool]:
    """``location`` is ``root`` or lies inside it (:func:`root_ranges`)."""
    return in_ranges(conn, location, root_ranges(root))
