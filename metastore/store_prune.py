"""Pruning for :meth:`metastore.store.Store.prune`: forget what disappeared.

This module owns deciding which stored locations lie under an indexed root
and are gone, deleting them, and sweeping the series, studies and module
values nothing refers to any more.  It is private to the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import schema as t
from metastore import store_write
from metastore.store_query import ESCAPE, escape_like


def prune(
    conn: Connection,
    roots: Sequence[str],
    seen: set[str],
    owns: Callable[[str], bool] | None = None,
) -> int:
    """Delete what ``Store.prune`` deletes, on ``conn``; return the instance count."""

    def gone(location: str) -> bool:
        """Not seen, and this run's to forget (``owns``)."""
        return location not in seen and (owns is None or owns(location))

    stale: list[int] = []
    stale_errors: list[str] = []
    for root in roots:
        src = t.sources
        for source_id, loc in conn.execute(
            sa.select(src.c.id, src.c.location).where(_under(src.c.location, root))
        ):
            if gone(loc):
                stale.append(source_id)
        err = t.index_errors.c.location
        for (loc,) in conn.execute(sa.select(err).where(_under(err, root))):
            if gone(loc):
                stale_errors.append(loc)
    count, emptied = store_write.delete_instances_of_sources(conn, stale)
    # A series or study that lost the instance its attributes came from takes
    # those of its lowest instance left; one left without any goes.
    store_write.settle(conn, emptied, written={}, lost=emptied)
    for part in store_write.chunks(sorted(set(stale))):
        conn.execute(sa.delete(t.sources).where(t.sources.c.id.in_(part)))
    for part in store_write.chunks(sorted(set(stale_errors))):
        conn.execute(
            sa.delete(t.index_errors).where(t.index_errors.c.location.in_(part))
        )
    _delete_orphans(conn)
    return count


def _under(location: sa.ColumnElement[str], root: str) -> sa.ColumnElement[bool]:
    """``location`` is ``root`` or lies inside it (folder ``/`` or zip ``!/``)."""
    escaped = escape_like(root)
    if root.endswith("/"):
        return location.like(escaped + "%", escape=ESCAPE)
    return sa.or_(
        location == root,
        location.like(escaped + "/%", escape=ESCAPE),
        location.like(escaped + "!/%", escape=ESCAPE),
    )


def _delete_orphans(conn: Connection) -> None:
    """Delete module values, series and studies that nothing refers to."""
    im, mv, se, st, ins = (
        t.image_modules,
        t.module_values,
        t.series,
        t.studies,
        t.instances,
    )
    # Three kinds of reference keep a module value: an image's module, a
    # value compressed against it (base_id), an instance's DICOM JSON
    # compressed against it.  None is a declared foreign key (see
    # schema.ModuleValueRow), so nothing else checks them: this sweep must.
    base = t.module_values.alias("dependent")
    refs = (
        (im.c.value_id, None),
        (base.c.base_id, base.c.base_id.is_not(None)),
        (ins.c.dicom_json_base_id, ins.c.dicom_json_base_id.is_not(None)),
    )
    conditions: list[sa.ColumnElement[bool]] = []
    for column, not_null in refs:
        if conn.dialect.name == "sqlite":
            # SQLite runs NOT IN (subquery) as one pass over a temporary
            # index; NOT EXISTS would probe image_modules per value (no index
            # on value_id: it would cost a quarter of the database).
            used = sa.select(column)
            if not_null is not None:
                used = used.where(not_null)
            conditions.append(mv.c.id.not_in(used))
        else:
            # PostgreSQL plans NOT EXISTS as a hash anti-join.
            conditions.append(~sa.select(column).where(column == mv.c.id).exists())
    # Twice: the first pass frees the bases of the values it deletes.
    for _ in range(2):
        conn.execute(sa.delete(mv).where(*conditions))
    prefix, img = t.image_id_prefixes, t.images
    if conn.dialect.name == "sqlite":
        unused: sa.ColumnElement[bool] = prefix.c.id.not_in(sa.select(img.c.prefix_id))
    else:
        unused = ~sa.select(img.c.id).where(img.c.prefix_id == prefix.c.id).exists()
    conn.execute(sa.delete(prefix).where(unused))
    in_series = sa.select(ins.c.id).where(ins.c.series_id == se.c.id)
    conn.execute(sa.delete(se).where(~in_series.exists()))
    in_study = sa.select(se.c.id).where(se.c.study_id == st.c.id)
    conn.execute(sa.delete(st).where(~in_study.exists()))
