"""The reindex side of :class:`metastore.store.Store`: stale instances in, modules out.

This module owns what ``metastore reindex`` needs of the database: counting
the instances whose modules a mapping other than the running one computed
(``instances.mapping_version``), reading them back with their stored DICOM
JSON and imageIds, and replacing their module rows in one transaction per
batch, images kept by imageId.  It is private to the store and imports no
pydicom; the recomputing happens in ``metastore.index.reindex``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore.records import Source, StoredInstance
from metastore.store import codec
from metastore.store import schema as t
from metastore.store import write as store_write
from metastore.store.encode import Prepared
from metastore.store.prune import _delete_orphans


def is_stale(current: str) -> sa.ColumnElement[bool]:
    """``instances.mapping_version`` is not ``current`` (``NULL``: unknown, stale)."""
    version = t.instances.c.mapping_version
    return sa.or_(version.is_(None), version != current)


def count_stale(conn: Connection, current: str) -> int:
    """How many instances hold modules of another mapping than ``current``.

    Reads ``ix_instances_mapping_version`` only, not the instance rows (which
    hold the DICOM JSON).
    """
    stmt = sa.select(sa.func.count()).select_from(t.instances).where(is_stale(current))
    return int(conn.execute(stmt).scalar_one())


def fingerprint(base_id: int | None, blob: bytes) -> tuple[int | None, str]:
    """The identity of a stored DICOM JSON: its base row and the MD5 of its blob.

    MD5 because PostgreSQL computes it next to the data (``md5(bytea)``),
    so checking an instance costs 32 characters, not its JSON; a collision
    would need a crafted file and could only make a reindex write answers
    of one's own JSON.
    """
    return base_id, hashlib.md5(blob, usedforsecurity=False).hexdigest()


def read_instances(
    conn: Connection, current: str | None, after: int, limit: int
) -> list[StoredInstance]:
    """Up to ``limit`` instances with ``id > after``, by id, as stored.

    Only those stale against ``current``; every one when it is ``None``.
    """
    ins, src = t.instances, t.sources
    base = t.module_values.alias("base")
    stmt = (
        sa.select(
            ins.c.id,
            ins.c.sop_instance_uid,
            ins.c.dicom_json,
            ins.c.dicom_json_base_id,
            base.c.value,
            src.c.location,
            src.c.size,
            src.c.mtime_ns,
        )
        .join(src, src.c.id == ins.c.source_id)
        .outerjoin(base, base.c.id == ins.c.dicom_json_base_id)
        .where(ins.c.id > after)
        .order_by(ins.c.id)
        .limit(limit)
    )
    if current is not None:
        stmt = stmt.where(is_stale(current))
    rows = conn.execute(stmt).all()
    names = _image_ids(conn, [row.id for row in rows])
    bases: dict[int, bytes] = {}
    out = []
    for row in rows:
        blob = bytes(row.dicom_json)
        base_bytes = None
        if row.dicom_json_base_id is not None and row.value is not None:
            base_bytes = bases.get(row.dicom_json_base_id)
            if base_bytes is None:
                base_bytes = codec.inflate(bytes(row.value))
                bases[row.dicom_json_base_id] = base_bytes
        out.append(
            StoredInstance(
                id=row.id,
                sop_instance_uid=row.sop_instance_uid,
                source=Source(row.location, row.size, row.mtime_ns),
                dicom_json=codec.decode_dicom_json(blob, base_bytes),
                image_ids=names.get(row.id, {}),
                fingerprint=fingerprint(row.dicom_json_base_id, blob),
            )
        )
    return out


def _image_ids(
    conn: Connection, instance_ids: Sequence[int]
) -> dict[int, dict[int, str]]:
    """``{instance id: {frame: imageId}}`` of the images stored for them."""
    img, pre = t.images, t.image_id_prefixes
    found: dict[int, dict[int, str]] = {}
    for where in store_write.key_in(conn, img.c.instance_id, sorted(instance_ids)):
        stmt = (
            sa.select(img.c.instance_id, img.c.frame, pre.c.prefix + img.c.suffix)
            .join(pre, pre.c.id == img.c.prefix_id)
            .where(where)
        )
        for instance_id, frame, image_id in conn.execute(stmt):
            found.setdefault(instance_id, {})[frame] = image_id
    return found


def _fingerprints(
    conn: Connection, instance_ids: Sequence[int]
) -> dict[int, tuple[int | None, str]]:
    """The current fingerprint of each of ``instance_ids`` still stored."""
    ins = t.instances
    postgres = store_write.is_postgres(conn)
    # PostgreSQL hashes next to the data; SQLite's blobs are local anyway.
    blob = sa.func.md5(ins.c.dicom_json) if postgres else ins.c.dicom_json
    found: dict[int, tuple[int | None, str]] = {}
    for where in store_write.key_in(conn, ins.c.id, sorted(instance_ids)):
        stmt = sa.select(ins.c.id, ins.c.dicom_json_base_id, blob).where(where)
        if postgres:
            # Locked until the batch commits: an indexer rewriting this
            # instance's source waits instead of deleting it under us.
            stmt = stmt.with_for_update(of=ins)
        for instance_id, base_id, value in conn.execute(stmt):
            found[instance_id] = (
                (base_id, value) if postgres else fingerprint(base_id, bytes(value))
            )
    return found


@dataclass(frozen=True, slots=True)
class Replaced:
    """What :func:`replace` did to one batch."""

    #: Instances whose modules were replaced.
    instances: int = 0
    #: Instances left alone: deleted or written again since they were read.
    gone: int = 0
    #: Images stored for frames the instance had no image for.
    images_added: int = 0
    #: Images deleted: frames the new mapping does not answer for.
    images_removed: int = 0
    #: New frames whose imageId another instance holds (not stored).
    images_taken: int = 0


def replace(
    conn: Connection,
    batch: Prepared,
    type_ids: Mapping[str, int],
    stored: Mapping[str, StoredInstance],
) -> Replaced:
    """Replace the module rows of the instances of ``batch`` (inside a transaction).

    ``stored`` gives, by SOP Instance UID, the instance each record was
    computed from; an instance deleted or rewritten since (its fingerprint
    differs) is left alone.  An image keeps its row (its imageId) and gets
    the new module rows; a frame the new mapping answers for and that had
    no image gets one, named as ``batch`` says; an image the new mapping
    no longer answers for goes.  Then the instance records its mapping
    version and frame count.  Replaced values stay in ``module_values``
    until :func:`sweep`.
    """
    items = {stored[item.record.sop_instance_uid].id: item for item in batch.instances}
    now = _fingerprints(conn, list(items))
    kept = {
        instance_id: item
        for instance_id, item in sorted(items.items())
        if now.get(instance_id) == stored[item.record.sop_instance_uid].fingerprint
    }
    if not kept:
        return Replaced(gone=len(items))
    img, pre = t.images, t.image_id_prefixes
    existing: dict[int, dict[str, int]] = {}
    for where in store_write.key_in(conn, img.c.instance_id, list(kept)):
        stmt = (
            sa.select(img.c.instance_id, img.c.id, pre.c.prefix + img.c.suffix)
            .join(pre, pre.c.id == img.c.prefix_id)
            .where(where)
        )
        for instance_id, row_id, image_id in conn.execute(stmt):
            existing.setdefault(instance_id, {})[image_id] = row_id

    digests = sorted(
        {
            ref.digest
            for item in kept.values()
            for image in item.images
            for ref in image.refs
        }
    )
    value_ids = store_write.write_values(conn, digests, batch)

    new: list[tuple[str, int, int]] = []
    old: list[int] = []
    gone: list[int] = []
    for instance_id, item in kept.items():
        have = existing.get(instance_id, {})
        produced = {image_id for image_id, _, _ in item.images}
        for image_id, frame, _ in item.images:
            if image_id not in have:
                new.append((image_id, instance_id, frame))
        for image_id, row_id in have.items():
            (old if image_id in produced else gone).append(row_id)
    # Old module rows go first; an image the mapping dropped goes with its rows.
    im = t.image_modules
    for where in store_write.key_in(conn, im.c.image_id, sorted([*old, *gone])):
        conn.execute(sa.delete(im).where(where))
    for where in store_write.key_in(conn, img.c.id, sorted(gone)):
        conn.execute(sa.delete(img).where(where))
    added = store_write.write_images(conn, new)

    rows: list[tuple[int, int, int]] = []
    for instance_id, item in kept.items():
        have = existing.get(instance_id, {})
        for image_id, _, refs in item.images:
            row_id = have.get(image_id)
            if row_id is None:
                row_id = added.get(image_id)
            if row_id is None:  # another instance's imageId: as the indexer does
                continue
            rows.extend((row_id, type_ids[name], value_ids[d]) for name, d in refs)
    store_write.write_image_modules(conn, rows)

    ins = t.instances
    conn.execute(
        sa.update(ins)
        .where(ins.c.id == sa.bindparam("_id"))
        .values(
            mapping_version=sa.bindparam("_version"),
            number_of_frames=sa.bindparam("_frames"),
        ),
        [
            {
                "_id": instance_id,
                "_version": item.record.mapping_version,
                "_frames": item.record.number_of_frames,
            }
            for instance_id, item in kept.items()
        ],
    )
    return Replaced(
        instances=len(kept),
        gone=len(items) - len(kept),
        images_added=len(added),
        images_removed=len(gone),
        images_taken=len(new) - len(added),
    )


def sweep(conn: Connection) -> None:
    """Delete the module values (and prefixes) no row refers to any more."""
    _delete_orphans(conn)
