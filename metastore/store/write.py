"""The write side of :class:`metastore.store.Store`: one batch, one transaction.

This module owns how a batch of :class:`~metastore.records.InstanceRecord`
becomes rows: set-based inserts with ``ON CONFLICT`` on both backends,
replacement of re-indexed locations, duplicate detection, content-addressed
module values and the narrow ``image_modules`` rows.  It is private to the
store and imports no pydicom.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from metastore.records import ErrorRecord
from metastore.store import attrs
from metastore.store import schema as t
from metastore.store.encode import (
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
#: text case-folded by :func:`~metastore.store.encode.fold`, what
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
    *attrs.STUDY_COLUMNS,
)
#: The instances columns written, in the order of the rows ``write`` builds.
INSTANCE_COLUMNS = (
    "sop_instance_uid",
    "series_id",
    "sop_class_uid",
    "instance_number",
    "number_of_frames",
    "source_id",
    "dicom_json",
    "dicom_json_base_id",
    *attrs.INSTANCE_COLUMNS,
)
SERIES_FIELDS = (
    "modality",
    "series_number",
    "series_description",
    "series_description_key",
    *attrs.SERIES_COLUMNS,
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


def is_postgres(conn: Connection) -> bool:
    """Whether ``conn`` talks to PostgreSQL (which gets the array statements)."""
    return conn.dialect.name == "postgresql"


def key_in(
    conn: Connection, key: sa.ColumnElement[Any], keys: Sequence[Any]
) -> Iterator[sa.ColumnElement[bool]]:
    """Conditions "``key`` is one of ``keys``", to run one after the other.

    PostgreSQL: one ``key = ANY(array)``, a single bound parameter whatever
    the number of keys (one short statement text, parsed and planned once per
    connection).  SQLite: ``IN`` lists of at most :data:`CHUNK` parameters.
    """
    if not keys:
        return
    if is_postgres(conn):
        array = sa.bindparam(None, list(keys), type_=postgresql.ARRAY(key.type))
        yield key == sa.any_(array)
        return
    for part in chunks(keys):
        yield key.in_(part)


def select_map(
    conn: Connection,
    key: sa.ColumnElement[Any],
    columns: Sequence[Any],
    keys: Iterable[Any],
) -> dict[Any, sa.Row[Any]]:
    """``{key: row}`` for the rows whose ``key`` is in ``keys``."""
    found: dict[Any, sa.Row[Any]] = {}
    for where in key_in(conn, key, sorted(set(keys))):
        for row in conn.execute(sa.select(key, *columns).where(where)):
            found[row[0]] = row
    return found


#: PostgreSQL ``INSERT ... SELECT FROM unnest(...)`` texts, by their shape.
_UNNEST_SQL: dict[tuple[str, tuple[str, ...], str, tuple[str, ...]], str] = {}


def _unnest_sql(
    conn: Connection,
    table: sa.Table,
    columns: Sequence[str],
    conflict_clause: str,
    returning: Sequence[str],
) -> str:
    shape = (table.name, tuple(columns), conflict_clause, tuple(returning))
    sql = _UNNEST_SQL.get(shape)
    if sql is None:
        arrays = ", ".join(
            f"%(c{i})s::{table.c[name].type.compile(dialect=conn.dialect)}[]"
            for i, name in enumerate(columns)
        )
        sql = (
            f"INSERT INTO {table.name} ({', '.join(columns)}) "
            f"SELECT * FROM unnest({arrays}){conflict_clause}"
        )
        if returning:
            sql += f" RETURNING {', '.join(returning)}"
        _UNNEST_SQL[shape] = sql
    return sql


def insert_rows(
    conn: Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: str | None = None,
    update: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[sa.Row[Any]]:
    """Insert ``rows`` (tuples in ``columns`` order), in the order given.

    With ``conflict`` (a unique column), a row whose key is already stored is
    skipped (``ON CONFLICT DO NOTHING``), or has its ``update`` columns set
    from the new row (``DO UPDATE``).  Returns the ``returning`` columns of
    the rows inserted (or updated), when asked.

    PostgreSQL gets one ``INSERT ... SELECT * FROM unnest(%s::type[], ...)``
    statement: one round trip with one array per column, whatever the number
    of rows, instead of a row-per-statement ``executemany`` or a ``VALUES``
    list the driver must parse.  The rows go in in the order of the arrays,
    so concurrent writers still lock keys in one order.  SQLite gets the
    same through SQLAlchemy (``executemany``, or ``VALUES`` pages with
    ``RETURNING``).
    """
    if not rows:
        return []
    if is_postgres(conn):
        clause = ""
        if conflict is not None:
            action = (
                "DO UPDATE SET "
                + ", ".join(f"{name} = EXCLUDED.{name}" for name in update)
                if update
                else "DO NOTHING"
            )
            clause = f" ON CONFLICT ({conflict}) {action}"
        sql = _unnest_sql(conn, table, columns, clause, returning)
        params = {
            f"c{i}": list(values) for i, values in enumerate(zip(*rows, strict=True))
        }
        result = conn.exec_driver_sql(sql, params)
        return list(result.all()) if returning else []
    stmt = insert(conn, table)
    if conflict is not None:
        if update:
            stmt = stmt.on_conflict_do_update(
                index_elements=[conflict],
                set_={name: stmt.excluded[name] for name in update},
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=[conflict])
    dicts = [dict(zip(columns, row, strict=True)) for row in rows]
    if returning:
        stmt = stmt.returning(*(table.c[name] for name in returning))
        return list(conn.execute(stmt, dicts).all())
    conn.execute(stmt, dicts)
    return []


#: Called with the statement text just before each ``COPY``: a ``COPY`` runs
#: on the driver's connection, so SQLAlchemy's cursor events never see it.
#: ``metastore.testhooks.TestHooks`` adds its SQL hook here.
BEFORE_COPY: list[Callable[[str], None]] = []

#: How PostgreSQL receives the ``image_modules`` rows of a batch.
COPY_IMAGE_MODULES = (
    "COPY image_modules (image_id, module_type_id, value_id) FROM STDIN (FORMAT BINARY)"
)

#: How SQLite receives them (one ``executemany``).
SQLITE_INSERT_IMAGE_MODULES = (
    "INSERT INTO image_modules (image_id, module_type_id, value_id) VALUES (?, ?, ?)"
)


def write_image_modules(conn: Connection, rows: Sequence[tuple[int, int, int]]) -> None:
    """Insert ``(image_id, module_type_id, value_id)`` rows (new images only).

    PostgreSQL: one binary ``COPY`` in the batch's transaction.  The rows
    are about 26 per image; psycopg encodes them in C (``write_row``), where
    arrays for ``unnest`` or an ``executemany`` cost Python work per value,
    and the server inserts them in bulk.  The rows belong to images this
    transaction has just inserted, so no row can conflict.  SQLite: one
    ``executemany`` of tuples.
    """
    if not rows:
        return
    if not is_postgres(conn):
        # Tuples straight to sqlite3's executemany: no dict per row.
        conn.exec_driver_sql(SQLITE_INSERT_IMAGE_MODULES, list(rows))
        return
    copy_rows(conn, COPY_IMAGE_MODULES, ["int4", "int2", "int4"], rows)


def copy_rows(
    conn: Connection,
    statement: str,
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Run a binary ``COPY ... FROM STDIN`` on ``conn``'s psycopg connection.

    It runs in ``conn``'s transaction.  Driver errors come out as SQLAlchemy
    ``DBAPIError`` like those of any statement (so the store retries
    deadlocks and the indexer reconnects after a lost connection), and a
    lost connection is invalidated as SQLAlchemy would.
    """
    for listener in BEFORE_COPY:
        listener(statement)
    fairy = conn.connection
    dbapi = conn.dialect.loaded_dbapi
    try:
        driver: Any = fairy.driver_connection
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(list(types))
            for row in rows:
                copy.write_row(row)
    except dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, fairy.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            statement,
            None,
            exc,
            dbapi.Error,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from exc


def ensure_module_types(conn: Connection, names: Iterable[str]) -> dict[str, int]:
    """Ids of module types ``names``, inserting the missing ones.

    Existing names are looked up before anything is inserted: on PostgreSQL
    an ``INSERT ... ON CONFLICT DO NOTHING`` draws a sequence number for every
    row it tries, and ``module_types.id`` is a ``smallint``, so inserting all
    26 names every batch would exhaust the sequence after ~1,260 batches.
    Only a name another writer adds at the same moment can still cost one.
    """
    wanted = sorted(set(names))
    if not wanted:
        return {}
    name, id_ = t.module_types.c.name, t.module_types.c.id
    ids = {n: row.id for n, row in select_map(conn, name, [id_], wanted).items()}
    missing = [n for n in wanted if n not in ids]
    if missing:
        insert_rows(
            conn, t.module_types, ["name"], [(n,) for n in missing], conflict="name"
        )
        for n, row in select_map(conn, name, [id_], missing).items():
            ids[n] = row.id
    return ids


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
    columns = list(next(iter(rows.values())))
    insert_rows(
        conn,
        table,
        columns,
        [tuple(rows[uid][c] for c in columns) for uid in sorted(rows)],
        conflict=key,
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
            **_search(r, "study"),
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
            **_search(r, "series"),
        }
    series_ids = _upsert_keyed(
        conn, t.series, "series_instance_uid", series, SERIES_FIELDS
    )

    # Sources: one row per location, refreshed on every successful write.
    sources = {r.source.location: r.source for r in records}
    upserted = insert_rows(
        conn,
        t.sources,
        ["location", "size", "mtime_ns", "indexed_at"],
        [
            (loc, int64(src.size), int64(src.mtime_ns), now)
            for loc, src in sorted(sources.items())
        ],
        conflict="location",
        update=["size", "mtime_ns", "indexed_at"],
        returning=["location", "id"],
    )
    # DO UPDATE returns every row, inserted or not.
    source_ids: dict[str, int] = {row.location: row.id for row in upserted}

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
    inserted: dict[str, int] = {
        row.sop_instance_uid: row.id
        for row in insert_rows(
            conn,
            t.instances,
            INSTANCE_COLUMNS,
            [
                (
                    item.record.sop_instance_uid,
                    series_ids[item.record.series_instance_uid],
                    item.record.sop_class_uid,
                    int32(item.record.instance_number),
                    item.record.number_of_frames,
                    source_ids[item.record.source.location],
                    item.dicom_json,
                    None
                    if item.dicom_json_base is None
                    else base_ids[item.dicom_json_base],
                    *map(_search(item.record, "instance").get, attrs.INSTANCE_COLUMNS),
                )
                for item in sorted(
                    batch.instances, key=lambda item: item.record.sop_instance_uid
                )
            ],
            conflict="sop_instance_uid",
            returning=["sop_instance_uid", "id"],
        )
    }
    # Those not inserted: stored before, from here or from elsewhere.
    stored = select_map(
        conn,
        t.instances.c.sop_instance_uid,
        [t.instances.c.id, t.instances.c.source_id],
        (
            item.record.sop_instance_uid
            for item in batch.instances
            if item.record.sop_instance_uid not in inserted
        ),
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
        if sop in inserted:
            to_write.append((item, inserted[sop]))
            continue
        row = stored[sop]
        if row.source_id != source_ids[item.record.source.location]:
            location = location_of.get(row.source_id) or foreign.get(row.source_id, "?")
            new_errors.append(duplicate(item.record, location))
        # else: a concurrent writer stored this very location: nothing to do.

    # Module values, content-addressed: insert-or-ignore, then fetch ids.
    digests = sorted(
        {d for item, _ in to_write for _, _, refs in item.images for _, d in refs}
    )
    value_ids = write_values(conn, digests, batch)

    # Images, then all their module rows in one statement.
    image_ids = write_images(
        conn,
        [
            (image_id, instance_id, frame)
            for item, instance_id in to_write
            for image_id, frame, _ in item.images
        ],
    )
    module_rows: list[tuple[int, int, int]] = []
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
                (row_id, type_ids[module_type], value_ids[d]) for module_type, d in refs
            )
    write_image_modules(conn, module_rows)

    # Errors: a location written again loses its old errors.
    all_errors = [*batch.errors, *new_errors]
    locations = {r.source.location for r in records} | {e.location for e in all_errors}
    for where in key_in(conn, t.index_errors.c.location, sorted(locations)):
        conn.execute(sa.delete(t.index_errors).where(where))
    insert_rows(
        conn,
        t.index_errors,
        ["location", "kind", "reason", "at"],
        [(e.location, e.kind, e.reason, now) for e in all_errors],
    )
    # A location whose every instance was a duplicate is not "stored".
    drop_empty_sources(conn, list(source_ids.values()))
    return new_errors


def _search(record: Any, table: str) -> dict[str, Any]:
    """A record's values of ``table``'s search columns of revision 0003.

    ``prepare`` has filled them in (``store_encode.search_values``).
    """
    values: dict[str, Any] = record.search_values[table]
    return values


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
    insert_rows(
        conn, p, ["prefix"], [(prefix,) for prefix in prefixes], conflict="prefix"
    )
    prefix_ids = {
        key: row.id
        for key, row in select_map(conn, p.c.prefix, [p.c.id], prefixes).items()
    }
    keys = {image_key(image_id): image_id for image_id, _, _ in images}
    rows = [
        (key, prefix_ids[split[image_id][0]], split[image_id][1], instance_id, frame)
        for image_id, instance_id, frame in images
        for key in (image_key(image_id),)
    ]
    inserted = insert_rows(
        conn,
        t.images,
        ["image_key", "prefix_id", "suffix", "instance_id", "frame"],
        rows,
        conflict="image_key",
        returning=["image_key", "id"],
    )
    return {keys[row.image_key]: row.id for row in inserted}


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
        # PostgreSQL returns the ids of the rows it inserted; SQLite's are
        # selected with those a concurrent writer stored first.
        inserted = insert_rows(
            conn,
            t.module_values,
            ["digest", "value", "base_id"],
            [(d, rows[d][0], rows[d][1]) for d in missing],
            conflict="digest",
            returning=["digest", "id"] if is_postgres(conn) else [],
        )
        known.update((bytes(row.digest), row.id) for row in inserted)
        rest = [d for d in missing if d not in known]
        known.update(_select_ids(conn, rest))
    return known


def delete_instances_of_sources(conn: Connection, source_ids: Sequence[int]) -> int:
    """Delete the instances of ``source_ids`` with their images; return the count."""
    count = 0
    for where in key_in(conn, t.instances.c.source_id, sorted(source_ids)):
        old = sa.select(t.instances.c.id).where(where)
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
    used = sa.select(t.instances.c.id).where(t.instances.c.source_id == t.sources.c.id)
    for where in key_in(conn, t.sources.c.id, sorted(source_ids)):
        conn.execute(sa.delete(t.sources).where(where, ~used.exists()))
