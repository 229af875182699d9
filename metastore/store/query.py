"""SQL pieces the store's queries share: LIKE escapes, locations under a root.

This module owns the escape character of every ``LIKE`` pattern the store
builds (:data:`ESCAPE`, :func:`escape_like`: ``%``, ``_`` and ``\\`` in a
filter are data; ``Store.query`` in :mod:`metastore.store.qido`), the one
"is under this root" rule as code point ranges (:func:`root_ranges`, for
``Store.known_sources`` and prune), and the database's size on disk
(``Store.stats``).  It is private to the store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: The escape character of every LIKE pattern built with :func:`escape_like`.
ESCAPE = "\\"
_LIKE_SPECIAL = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})


def escape_like(text: str) -> str:
    """``text`` with LIKE's special characters escaped by :data:`ESCAPE`."""
    return text.translate(_LIKE_SPECIAL)


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
