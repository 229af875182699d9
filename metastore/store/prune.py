"""Pruning for :meth:`metastore.store.Store.prune`: forget what disappeared.

This module owns deciding which stored locations lie under an indexed root
and are gone, deleting them, and sweeping the series, studies and module
values nothing refers to any more; and forgetting the old spelling of a
location when its source is written under the new one
(``metastore.locations.legacy_location``).  It is private to the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore.chunking import chunked
from metastore.locations import legacy_location
from metastore.store import schema as t
from metastore.store import write as store_write
from metastore.store.encode import EncodedInstance
from metastore.store.query import under_root


def adopt_legacy(conn: Connection, instances: Sequence[EncodedInstance]) -> None:
    """Forget the old spelling of locations about to be written (on ``conn``).

    A source whose location has a name ending in ``!`` (see
    :func:`legacy_location`) may still be stored under its old spelling,
    which it no longer finds (so it is read again) and which would make its
    instances duplicates of themselves.  In the transaction that writes it,
    the old location is deleted (instances, source row and error rows)
    when its rows are certainly this source's: every imageId stored under
    it is one this write stores (a file's wadouri imageIds hold its own
    path, wadors ones the instance's UIDs), or, for rows without images,
    every SOP Instance UID.  Otherwise the old row is left for ``--prune``:
    it may be a zip member's, whose location is spelled as it was.
    """
    written: dict[str, tuple[set[str], set[str]]] = {}
    for item in instances:
        old = legacy_location(item.record.source.location)
        if old is None:
            continue
        sops, image_ids = written.setdefault(old, (set(), set()))
        sops.add(item.record.sop_instance_uid)
        image_ids.update(image.image_id for image in item.images)
    if not written:
        return
    src = t.sources
    adopted: dict[int, str] = {}
    for part in chunked(sorted(written), store_write.CHUNK):
        rows = conn.execute(
            sa.select(src.c.id, src.c.location).where(src.c.location.in_(part))
        )
        for source_id, old in rows:
            sops, image_ids = written[old]
            stored_sops, stored_images = _stored_under(conn, source_id)
            # imageIds tell a file's rows (its path) or an instance's (its
            # UIDs); instances without images only have their SOP UID
            if (stored_images and stored_images <= image_ids) or (
                not stored_images and stored_sops <= sops
            ):
                adopted[source_id] = old
    if not adopted:
        return
    _, emptied = store_write.delete_instances_of_sources(conn, list(adopted))
    # The write that follows stores these instances again, but it need not
    # hold every one (a file rewritten under another SOP Instance UID): the
    # series and studies they were in are settled as after a prune.
    store_write.settle(conn, emptied, written={}, lost=emptied)
    for ids in chunked(sorted(adopted), store_write.CHUNK):
        conn.execute(sa.delete(src).where(src.c.id.in_(ids)))
    for part in chunked(sorted(adopted.values()), store_write.CHUNK):
        conn.execute(
            sa.delete(t.index_errors).where(t.index_errors.c.location.in_(part))
        )


def _stored_under(conn: Connection, source_id: int) -> tuple[set[str], set[str]]:
    """The SOP Instance UIDs and the imageIds stored for one source."""
    ins, img, pre = t.instances, t.images, t.image_id_prefixes
    sops = conn.execute(
        sa.select(ins.c.sop_instance_uid).where(ins.c.source_id == source_id)
    ).scalars()
    image_ids = conn.execute(
        sa.select(pre.c.prefix + img.c.suffix)
        .join(pre, pre.c.id == img.c.prefix_id)
        .join(ins, ins.c.id == img.c.instance_id)
        .where(ins.c.source_id == source_id)
    ).scalars()
    return set(sops), set(image_ids)


def prune(
    conn: Connection,
    roots: Sequence[str],
    seen: set[str],
    owns: Callable[[str], bool] | None = None,
    keep: Collection[str] = (),
) -> int:
    """Delete what ``Store.prune`` deletes, on ``conn``; return the instance count."""
    kept = frozenset(keep)

    def gone(location: str) -> bool:
        """Not seen, not under a location kept, and this run's to forget (``owns``)."""
        return (
            location not in seen
            and not (kept and _within(location, kept))
            and (owns is None or owns(location))
        )

    stale: list[int] = []
    stale_errors: list[str] = []
    for root in roots:
        # (ranges, exact and case-sensitive on both backends: "/DATA/x" is
        # not under "/data")
        src = t.sources
        for source_id, loc in conn.execute(
            sa.select(src.c.id, src.c.location).where(
                under_root(conn, src.c.location, root)
            )
        ):
            if gone(loc):
                stale.append(source_id)
        err = t.index_errors.c.location
        for (loc,) in conn.execute(sa.select(err).where(under_root(conn, err, root))):
            if gone(loc):
                stale_errors.append(loc)
    count, emptied = store_write.delete_instances_of_sources(conn, stale)
    # A series or study that lost the instance its attributes came from takes
    # those of its lowest instance left; one left without any goes.
    store_write.settle(conn, emptied, written={}, lost=emptied)
    for ids in chunked(sorted(set(stale)), store_write.CHUNK):
        conn.execute(sa.delete(t.sources).where(t.sources.c.id.in_(ids)))
    for part in chunked(sorted(set(stale_errors)), store_write.CHUNK):
        conn.execute(
            sa.delete(t.index_errors).where(t.index_errors.c.location.in_(part))
        )
    _delete_orphans(conn)
    return count


def _within(location: str, kept: frozenset[str]) -> bool:
    """``location`` is one of ``kept`` or lies inside one (folder or archive)."""
    if location in kept:
        return True
    for i, char in enumerate(location):
        if char in _SEPARATORS:
            # "x/..." lies in folder x (or "x/"), "x!/..." in archive x
            if location[:i] in kept or location[: i + 1] in kept:
                return True
            if i and location[i - 1] == "!" and location[: i - 1] in kept:
                return True
    return False


#: What continues a folder's path in the locations under it.
_SEPARATORS = frozenset(("/", os.sep))


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
    # schema.module_values), so nothing else checks them: this sweep must.
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
