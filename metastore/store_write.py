"""The write side of :class:`metastore.store.Store`: one batch, one transaction.

This module owns how a batch of :class:`~metastore.records.InstanceRecord`
becomes rows: set-based inserts with ``ON CONFLICT`` on both backends,
replacement of re-indexed locations, duplicate detection, content-addressed
module values and the narrow ``image_modules`` rows.  It is private to the
store and imports no pydicom.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from metastore import schema as t
from metastore.records import ErrorRecord
from metastore.store_encode import (
    EncodedInstance,
    Prepared,
    duplicate,
    fold,
    image_key,
    int32,
    int64,
    split_image_id,
)

#: Bound parameters per IN list (well under SQLite's 32766 and PostgreSQL's 65535).
CHUNK = 5000

#: The study columns written from a record; each ``*_key`` is its column's
#: text case-folded by :func:`~metastore.store_encode.fold`, what
#: ``Store.query`` matches on both backends.
STUDY_FIELDS = (
    "patient_id",
    "patient_id_key",
    "patient_name",
    "patient_name_key",
    "study_date",
    "study_time",
    "accession_number",
    "accession_number_key",
    "study_description",
    "study_description_key",
)
SERIES_FIELDS = (
    "modality",
    "series_number",
    "series_description",
    "series_description_key",
)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """Yield ``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect ``INSERT`` that has ``on_conflict_do_*`` for ``conn``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def select_map(
    conn: Connection,
    key: sa.ColumnElement[Any],
    columns: Sequence[Any],
    keys: Iterable[Any],
) -> dict[Any, sa.Row[Any]]:
    """``{key: row}`` for the rows whose ``key`` is in ``keys`` (chunked IN)."""
    wanted = sorted(set(keys))
    found: dict[Any, sa.Row[Any]] = {}
    for part in chunks(wanted):
        stmt = sa.select(key, *columns).where(key.in_(part))
        for row in conn.execute(stmt):
            found[row[0]] = row
    return found


def ensure_module_types(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    """Ids of module types ``names``, inserting the missing ones."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    stmt = insert(conn, t.module_types).on_conflict_do_nothing(index_elements=["name"])
    conn.execute(stmt, [{"name": name} for name in wanted])
    rows = select_map(conn, t.module_types.c.name, [t.module_types.c.id], wanted)
    return {name: row.id for name, row in rows.items()}


def _upsert_keyed(
    conn: Connection,
    table: sa.Table,
    key: str,
    rows: dict[str, dict[str, Any]],
    fields: Sequence[str],
) -> dict[str, int]:
    """Insert-or-ignore ``rows`` keyed by UID, then fill in changed fields.

    ``DO NOTHING`` first (no row lock when nothing changed, which is the
    common case for a study seen in many batches), then an ``UPDATE`` of the
    few rows whose attributes differ, keeping stored values where the new
    ones are missing.
    """
    if not rows:
        return {}
    ordered = [rows[uid] for uid in sorted(rows)]
    conn.execute(
        insert(conn, table).on_conflict_do_nothing(index_elements=[key]), ordered
    )
    key_col = table.c[key]
    stored = select_map(
        conn, key_col, [table.c.id, *(table.c[f] for f in fields)], rows
    )
    updates = []
    for uid, new in sorted(rows.items()):
        old = stored[uid]
        merged = {f: new[f] if new[f] is not None else getattr(old, f) for f in fields}
        if any(merged[f] != getattr(old, f) for f in fields):
            updates.append({"_id": old.id, **merged})
    if updates:
        stmt = (
            sa.update(table)
            .where(table.c.id == sa.bindparam("_id"))
            .values({f: sa.bindparam(f) for f in fields})
        )
        conn.execute(stmt, updates)
    return {uid: row.id for uid, row in stored.items()}


def write(
    conn: Connection, batch: Prepared, type_ids: dict[str, int]
) -> list[ErrorRecord]:
    """Write a prepared batch on ``conn`` (inside its transaction).

    Returns:
        The errors recorded for this batch beyond those passed in: duplicates
        found against the database and imageIds stored by another instance.
    """
    now = datetime.now(UTC)
    new_errors: list[ErrorRecord] = []
    records = [item.record for item in batch.instances]

    studies: dict[str, dict[str, Any]] = {}
    series: dict[str, dict[str, Any]] = {}
    for r in records:
        studies[r.study_instance_uid] = {
            "study_instance_uid": r.study_instance_uid,
            "patient_id": r.patient_id,
            "patient_id_key": fold(r.patient_id),
            "patient_name": r.patient_name,
            "patient_name_key": fold(r.patient_name),
            "study_date": r.study_date,
            "study_time": r.study_time,
            "accession_number": r.accession_number,
            "accession_number_key": fold(r.accession_number),
            "study_description": r.study_description,
            "study_description_key": fold(r.study_description),
        }
    study_ids = _upsert_keyed(
        conn, t.studies, "study_instance_uid", studies, STUDY_FIELDS
    )
    for r in records:
        series[r.series_instance_uid] = {
            "series_instance_uid": r.series_instance_uid,
            "study_id": study_ids[r.study_instance_uid],
            "modality": r.modality,
            "series_number": int32(r.series_number),
            "series_description": r.series_description,
            "series_description_key": fold(r.series_description),
        }
    series_ids = _upsert_keyed(
        conn, t.series, "series_instance_uid", series, SERIES_FIELDS
    )

    # Sources: one row per location, refreshed on every successful write.
    sources = {r.source.location: r.source for r in records}
    if sources:
        stmt = insert(conn, t.sources)
        stmt = stmt.on_conflict_do_update(
            index_elements=["location"],
            set_={
                "size": stmt.excluded.size,
                "mtime_ns": stmt.excluded.mtime_ns,
                "indexed_at": stmt.excluded.indexed_at,
            },
        )
        conn.execute(
            stmt,
            [
                {
                    "location": loc,
                    "size": int64(src.size),
                    "mtime_ns": int64(src.mtime_ns),
                    "indexed_at": now,
                }
                for loc, src in sorted(sources.items())
            ],
        )
    source_ids = {
        loc: row.id
        for loc, row in select_map(
            conn, t.sources.c.location, [t.sources.c.id], sources
        ).items()
    }

    # Re-indexed locations: their previous instances go first.
    delete_instances_of_sources(conn, list(source_ids.values()))

    # Bases of the DICOM JSON (the module values' bases come with them).
    base_ids = write_rows(
        conn,
        {
            item.dicom_json_base: (batch.bases[item.dicom_json_base], None)
            for item in batch.instances
            if item.dicom_json_base is not None
        },
    )

    # Instances: DO NOTHING + RETURNING tells ours from those already stored.
    inserted: set[str] = set()
    if batch.instances:
        stmt = (
            insert(conn, t.instances)
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(t.instances.c.sop_instance_uid)
        )
        rows = [
            {
                "sop_instance_uid": item.record.sop_instance_uid,
                "series_id": series_ids[item.record.series_instance_uid],
                "sop_class_uid": item.record.sop_class_uid,
                "instance_number": int32(item.record.instance_number),
                "number_of_frames": item.record.number_of_frames,
                "source_id": source_ids[item.record.source.location],
                "dicom_json": item.dicom_json,
                "dicom_json_base_id": None
                if item.dicom_json_base is None
                else base_ids[item.dicom_json_base],
            }
            for item in sorted(
                batch.instances, key=lambda item: item.record.sop_instance_uid
            )
        ]
        inserted = set(conn.execute(stmt, rows).scalars())
    stored = select_map(
        conn,
        t.instances.c.sop_instance_uid,
        [t.instances.c.id, t.instances.c.source_id],
        (item.record.sop_instance_uid for item in batch.instances),
    )
    to_write: list[tuple[EncodedInstance, int]] = []
    location_of = {sid: loc for loc, sid in source_ids.items()}
    foreign_sources = {
        row.source_id for row in stored.values() if row.source_id not in location_of
    }
    foreign = {
        row.id: row.location
        for row in select_map(
            conn, t.sources.c.id, [t.sources.c.location], foreign_sources
        ).values()
    }
    for item in batch.instances:
        sop = item.record.sop_instance_uid
        row = stored[sop]
        if sop in inserted:
            to_write.append((item, row.id))
        elif row.source_id != source_ids[item.record.source.location]:
            location = location_of.get(row.source_id) or foreign.get(row.source_id, "?")
            new_errors.append(duplicate(item.record, location))
        # else: a concurrent writer stored this very location: nothing to do.

    # Module values, content-addressed: insert-or-ignore, then fetch ids.
    digests = sorted(
        {d for item, _ in to_write for _, _, refs in item.images for _, d in refs}
    )
    value_ids = write_values(conn, digests, batch)

    # Images, then their module rows in one executemany.
    image_ids = write_images(
        conn,
        [
            (image_id, instance_id, frame)
            for item, instance_id in to_write
            for image_id, frame, _ in item.images
        ],
    )
    module_rows: list[dict[str, int]] = []
    for item, _ in to_write:
        for image_id, _, refs in item.images:
            row_id = image_ids.get(image_id)
            if row_id is None:
                new_errors.append(
                    ErrorRecord(
                        item.record.source.location,
                        "duplicate",
                        f"imageId {image_id} is already stored for another instance",
                    )
                )
                continue
            module_rows.extend(
                {
                    "image_id": row_id,
                    "module_type_id": type_ids[module_type],
                    "value_id": value_ids[d],
                }
                for module_type, d in refs
            )
    if module_rows:
        conn.execute(sa.insert(t.image_modules), module_rows)

    # Errors: a location written again loses its old errors.
    all_errors = [*batch.errors, *new_errors]
    locations = {r.source.location for r in records} | {e.location for e in all_errors}
    for part in chunks(sorted(locations)):
        conn.execute(
            sa.delete(t.index_errors).where(t.index_errors.c.location.in_(part))
        )
    if all_errors:
        conn.execute(
            sa.insert(t.index_errors),
            [
                {"location": e.location, "kind": e.kind, "reason": e.reason, "at": now}
                for e in all_errors
            ],
        )
    # A location whose every instance was a duplicate is not "stored".
    drop_empty_sources(conn, list(source_ids.values()))
    return new_errors


def write_images(
    conn: Connection, images: Sequence[tuple[str, int, int]]
) -> dict[str, int]:
    """Insert ``(image_id, instance row id, frame)`` rows; return their ids.

    An imageId already stored (for another instance) is left out of the
    result.
    """
    if not images:
        return {}
    split = {image_id: split_image_id(image_id) for image_id, _, _ in images}
    prefixes = sorted({prefix for prefix, _ in split.values()})
    p = t.image_id_prefixes
    conn.execute(
        insert(conn, p).on_conflict_do_nothing(index_elements=["prefix"]),
        [{"prefix": prefix} for prefix in prefixes],
    )
    prefix_ids = {
        key: row.id
        for key, row in select_map(conn, p.c.prefix, [p.c.id], prefixes).items()
    }
    keys = {image_key(image_id): image_id for image_id, _, _ in images}
    rows = [
        {
            "image_key": key,
            "prefix_id": prefix_ids[split[image_id][0]],
            "suffix": split[image_id][1],
            "instance_id": instance_id,
            "frame": frame,
        }
        for image_id, instance_id, frame in images
        for key in (image_key(image_id),)
    ]
    stmt = (
        insert(conn, t.images)
        .on_conflict_do_nothing(index_elements=["image_key"])
        .returning(t.images.c.image_key, t.images.c.id)
    )
    return {keys[row.image_key]: row.id for row in conn.execute(stmt, rows)}


def write_values(
    conn: Connection, digests: Sequence[bytes], batch: Prepared
) -> dict[bytes, int]:
    """Ids of the module values ``digests``, inserting those not stored yet.

    A value already stored keeps its stored encoding; only new values bring
    their base row along.
    """
    if not digests:
        return {}
    known = _select_ids(conn, digests)
    missing = [d for d in digests if d not in known]
    if missing:
        needed = {batch.values[d][1] for d in missing} - {None}
        base_ids = write_rows(
            conn, {b: (batch.bases[b], None) for b in needed if b is not None}
        )
        rows: dict[bytes, tuple[bytes, int | None]] = {}
        for d in missing:
            blob, base = batch.values[d]
            rows[d] = (blob, None if base is None else base_ids[base])
        known.update(write_rows(conn, rows))
    return known


def _select_ids(conn: Connection, digests: Iterable[bytes]) -> dict[bytes, int]:
    """``{digest: id}`` of the stored module_values rows among ``digests``."""
    mv = t.module_values
    return {
        d: row.id
        for d, row in select_map(conn, mv.c.digest, [mv.c.id], digests).items()
    }


def write_rows(
    conn: Connection, rows: dict[bytes, tuple[bytes, int | None]]
) -> dict[bytes, int]:
    """Insert-or-ignore module_values ``{digest: (blob, base_id)}``; return ids.

    Rows already stored (by digest) are left as they are.  Inserted in digest
    order so that concurrent writers take row locks in one order.
    """
    if not rows:
        return {}
    known = _select_ids(conn, rows)
    missing = sorted(d for d in rows if d not in known)
    if missing:
        stmt = insert(conn, t.module_values).on_conflict_do_nothing(
            index_elements=["digest"]
        )
        conn.execute(
            stmt,
            [
                {"digest": d, "value": rows[d][0], "base_id": rows[d][1]}
                for d in missing
            ],
        )
        known.update(_select_ids(conn, missing))
    return known


def delete_instances_of_sources(conn: Connection, source_ids: Sequence[int]) -> int:
    """Delete the instances of ``source_ids`` with their images; return the count."""
    count = 0
    for part in chunks(sorted(source_ids)):
        old = sa.select(t.instances.c.id).where(t.instances.c.source_id.in_(part))
        instance_ids = list(conn.execute(old).scalars())
        count += delete_instances(conn, instance_ids)
    return count


def delete_instances(conn: Connection, instance_ids: Sequence[int]) -> int:
    """Delete instances by id with their images and image_modules rows."""
    for part in chunks(sorted(instance_ids)):
        images = sa.select(t.images.c.id).where(t.images.c.instance_id.in_(part))
        conn.execute(
            sa.delete(t.image_modules).where(t.image_modules.c.image_id.in_(images))
        )
        conn.execute(sa.delete(t.images).where(t.images.c.instance_id.in_(part)))
        conn.execute(sa.delete(t.instances).where(t.instances.c.id.in_(part)))
    return len(instance_ids)


def drop_empty_sources(conn: Connection, source_ids: Sequence[int]) -> None:
    """Delete those of ``source_ids`` that no instance refers to."""
    for part in chunks(sorted(source_ids)):
        used = sa.select(t.instances.c.id).where(
            t.instances.c.source_id == t.sources.c.id
        )
        conn.execute(
            sa.delete(t.sources).where(t.sources.c.id.in_(part), ~used.exists())
        )
