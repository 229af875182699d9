"""The write side of :class:`metastore.store.Store`: one batch, one transaction.

This module owns how a batch of :class:`~metastore.records.InstanceRecord`
becomes rows: set-based inserts with ``ON CONFLICT`` on both backends,
replacement of re-indexed locations, duplicate detection, content-addressed
module values and the narrow ``image_modules`` rows.  It is private to the
store and imports no pydicom.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from metastore.attributes import SearchAttributes, search_attributes
from metastore.chunking import chunked
from metastore.imageid import split_for_storage
from metastore.records import ErrorRecord, InstanceRecord, LazyImages
from metastore.store import attrs, codec
from metastore.store import schema as t
from metastore.store.db import announce_statement
from metastore.store.encode import (
    EncodedInstance,
    Prepared,
    duplicate,
    encode_images,
    fold,
    image_key,
    int32,
    int64,
    search_values,
    storable_attributes,
)

#: Bound parameters per IN list (well under SQLite's 32766 and PostgreSQL's 65535).
CHUNK = 5000
#: Frames of an instance with lazy images built, encoded and written at once.
FRAME_CHUNK = 1000

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
    "mapping_version",
    *attrs.INSTANCE_COLUMNS,
)
SERIES_FIELDS = (
    "modality",
    "series_number",
    "series_description",
    "series_description_key",
    *attrs.SERIES_COLUMNS,
)


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
    for part in chunked(keys, CHUNK):
        yield key.in_(part)


def select_map(
    conn: Connection,
    key: sa.ColumnElement[Any],
    columns: Sequence[Any],
    keys: Iterable[Any],
) -> dict[Any, sa.Row[Any]]:
    """``{key: row}`` for the rows whose ``key`` is in ``keys``.

    ``key`` and ``columns`` are columns of one table.  SQLite: a plain
    ``SELECT ... WHERE key IN (?, ...)`` text per chunk of :data:`CHUNK`
    sorted keys (:func:`sqlite_in`), without SQLAlchemy's per-key work
    for an expanding ``IN``.
    """
    found: dict[Any, sa.Row[Any]] = {}
    wanted = sorted(set(keys))
    table = None if is_postgres(conn) else _table_of(conn, key, columns)
    if table is not None:
        names = ", ".join(_quote(conn, c.name) for c in (key, *columns))
        sql = (
            f"SELECT {names} FROM {_quote(conn, table.name)} "
            f"WHERE {names.partition(', ')[0]} IN {{keys}}"
        )
        for text, params in sqlite_in(sql, wanted):
            for row in conn.exec_driver_sql(text, params):
                found[row[0]] = row
        return found
    for where in key_in(conn, key, wanted):
        for row in conn.execute(sa.select(key, *columns).where(where)):
            found[row[0]] = row
    return found


def _table_of(
    conn: Connection, key: sa.ColumnElement[Any], columns: Sequence[Any]
) -> sa.Table | None:
    """The table of ``key`` and ``columns`` if they are columns of one table
    whose values need no result processing (``None`` otherwise).

    Then the driver's values are what SQLAlchemy would return (a
    ``DateTime`` column would not be: SQLAlchemy parses its text on SQLite).
    """
    table = getattr(key, "table", None)
    if not isinstance(table, sa.Table):
        return None
    for column in (key, *columns):
        if not isinstance(column, sa.Column) or column.table is not table:
            return None
        if column.type.dialect_impl(conn.dialect).result_processor(
            conn.dialect, column.type
        ):
            return None
    return table


def _quote(conn: Connection, name: str) -> str:
    """``name`` as SQLAlchemy spells the identifier (quoted if it must be)."""
    return conn.dialect.identifier_preparer.quote(name)


def sqlite_in(sql: str, keys: Sequence[Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """``(text, parameters)`` of SQLite ``sql`` for each chunk of ``keys``.

    ``sql`` has ``{keys}`` where the ``(?, ?, ...)`` list of a chunk of at
    most :data:`CHUNK` keys goes, and no other parameter.  The caller runs
    each with ``conn.exec_driver_sql`` (statement listeners and driver-error
    mapping as for any statement): the keys are bound as they are, as
    SQLAlchemy binds ``str``, ``int`` and ``bytes`` for sqlite3, without its
    work per key of an expanding ``IN``.
    """
    for part in chunked(keys, CHUNK):
        yield sql.format(keys="(" + ", ".join("?" * len(part)) + ")"), tuple(part)


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


def _conflict_clause(conflict: str | None, update: Sequence[str]) -> str:
    """`` ON CONFLICT (conflict) DO ...`` (both backends spell it alike), or ``""``."""
    if conflict is None:
        return ""
    action = (
        "DO UPDATE SET " + ", ".join(f"{name} = EXCLUDED.{name}" for name in update)
        if update
        else "DO NOTHING"
    )
    return f" ON CONFLICT ({conflict}) {action}"


#: Bound parameters one SQLite statement may have: the default limit since
#: SQLite 3.32 (the store needs 3.35 for ``RETURNING``).
SQLITE_MAX_PARAMETERS = 32766
#: Rows per SQLite ``INSERT ... VALUES ... RETURNING`` page, at most
#: (SQLAlchemy's page size): a batch's full pages share one statement text,
#: which sqlite3 keeps prepared per connection.
SQLITE_PAGE_ROWS = 1000


class _SqliteInsert(NamedTuple):
    """The parts of a SQLite ``INSERT`` text of one shape (:func:`_sqlite_insert`)."""

    #: ``INSERT INTO table (a, b) VALUES ``.
    head: str
    #: One row's ``(?, ?)``.
    row: str
    #: The conflict clause and ``RETURNING``, if any.
    tail: str
    #: ``(position, bind processor)`` of the columns SQLAlchemy converts
    #: before sqlite3 gets them (``DateTime`` to its text).
    processors: tuple[tuple[int, Any], ...]
    #: Rows per ``VALUES`` page under :data:`SQLITE_MAX_PARAMETERS`.
    page: int
    #: Whether it has ``RETURNING`` (sent as ``VALUES`` pages, not
    #: ``executemany``, which returns no rows).
    returns: bool


_SQLITE_INSERTS: dict[
    tuple[str, tuple[str, ...], str, tuple[str, ...]], _SqliteInsert
] = {}


def _sqlite_insert(
    conn: Connection,
    table: sa.Table,
    columns: Sequence[str],
    conflict_clause: str,
    returning: Sequence[str],
) -> _SqliteInsert:
    """The SQLite ``INSERT`` of this shape, built once per process."""
    shape = (table.name, tuple(columns), conflict_clause, tuple(returning))
    found = _SQLITE_INSERTS.get(shape)
    if found is None:
        dialect = conn.dialect
        processors = []
        for i, name in enumerate(columns):
            type_ = table.c[name].type
            # sqlite3 stores bytes as SQLAlchemy's Binary wrapper would.
            if isinstance(type_, sa.LargeBinary):
                continue
            process = type_.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((i, process))
        tail = conflict_clause
        if returning:
            tail += " RETURNING " + ", ".join(_quote(conn, n) for n in returning)
        found = _SqliteInsert(
            head=(
                f"INSERT INTO {_quote(conn, table.name)} "
                f"({', '.join(_quote(conn, n) for n in columns)}) VALUES "
            ),
            row="(" + ", ".join("?" * len(columns)) + ")",
            tail=tail,
            processors=tuple(processors),
            page=max(1, min(SQLITE_PAGE_ROWS, SQLITE_MAX_PARAMETERS // len(columns))),
            returns=bool(returning),
        )
        _SQLITE_INSERTS[shape] = found
    return found


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
    so concurrent writers still lock keys in one order.  SQLite gets a plain
    ``INSERT`` text too (:func:`_sqlite_insert`), sent with the row tuples
    as they are: sqlite3's ``executemany``, or with ``RETURNING`` multi-row
    ``VALUES`` pages (rows in order), without SQLAlchemy's work per row.
    """
    if not rows:
        return []
    clause = _conflict_clause(conflict, update)
    if is_postgres(conn):
        sql = _unnest_sql(conn, table, columns, clause, returning)
        params = {
            f"c{i}": list(values) for i, values in enumerate(zip(*rows, strict=True))
        }
        result = conn.exec_driver_sql(sql, params)
        return list(result.all()) if returning else []
    return _insert_sqlite(
        conn, _sqlite_insert(conn, table, columns, clause, returning), rows
    )


def _insert_sqlite(
    conn: Connection, insert: _SqliteInsert, rows: Sequence[Sequence[Any]]
) -> list[sa.Row[Any]]:
    """:func:`insert_rows` on SQLite: ``rows`` through ``insert``'s text."""
    if insert.processors:
        # A batch's rows share their timestamp: each value is converted once.
        done: dict[int, tuple[Any, Any]] = {}
        converted = []
        for row in rows:
            values = list(row)
            for i, process in insert.processors:
                last = done.get(i)
                if last is None or last[0] is not values[i]:
                    last = done[i] = (values[i], process(values[i]))
                values[i] = last[1]
            converted.append(tuple(values))
        rows = converted
    elif not isinstance(rows[0], tuple):
        rows = [tuple(row) for row in rows]
    if not insert.returns:
        conn.exec_driver_sql(insert.head + insert.row + insert.tail, list(rows))
        return []
    found: list[sa.Row[Any]] = []
    for part in chunked(rows, insert.page):
        sql = insert.head + ", ".join([insert.row] * len(part)) + insert.tail
        found += conn.exec_driver_sql(sql, tuple(chain.from_iterable(part))).all()
    return found


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
    lost connection is invalidated as SQLAlchemy would.  The ``COPY`` runs
    on the driver's connection, past SQLAlchemy's cursor events, so it is
    announced to :func:`metastore.store.db.on_statement`'s listeners here.
    """
    announce_statement(statement)
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


def _insert_keyed(
    conn: Connection, table: sa.Table, key: str, rows: dict[str, dict[str, Any]]
) -> dict[str, int]:
    """Insert the ``rows`` (keyed by UID) not stored yet; return every row's id.

    ``DO NOTHING``: a stored row is left as it is (no row lock, no new row
    version); :func:`settle` decides its attributes once the batch's
    instances are in.
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
    stored = select_map(conn, table.c[key], [table.c.id], rows)
    return {uid: row.id for uid, row in stored.items()}


@dataclass
class WriteState:
    """What the earlier parts of one transaction did (``Store.write_stream``).

    A source too large to hold at once is written as several parts in one
    transaction; a part must not delete what an earlier part wrote.
    """

    #: Sources whose rows stored before this transaction are deleted already.
    replaced: set[int] = field(default_factory=set)
    #: Locations whose errors recorded before this transaction are cleared.
    cleared: set[str] = field(default_factory=set)


#: What a study's and a series' attributes are taken from: a record being
#: written, or the attributes read back from a stored instance.
Searchable = InstanceRecord | SearchAttributes


def study_values(found: Searchable) -> dict[str, Any]:
    """The :data:`STUDY_FIELDS` of a study whose attributes are ``found``'s."""
    return {
        "patient_id": found.patient_id,
        "patient_id_key": fold(found.patient_id),
        "patient_name": found.patient_name,
        "patient_name_key": fold(found.patient_name),
        "study_date": found.study_date,
        "study_time": found.study_time,
        "accession_number": found.accession_number,
        "accession_number_key": fold(found.accession_number),
        "study_description": found.study_description,
        "study_description_key": fold(found.study_description),
        **_search(found, "study"),
    }


def series_values(found: Searchable) -> dict[str, Any]:
    """The :data:`SERIES_FIELDS` of a series whose attributes are ``found``'s."""
    return {
        "modality": found.modality,
        "series_number": int32(found.series_number),
        "series_description": found.series_description,
        "series_description_key": fold(found.series_description),
        **_search(found, "series"),
    }


def _lowest_first(records: Iterable[InstanceRecord]) -> list[InstanceRecord]:
    """``records`` by SOP Instance UID, highest first (so the lowest wins a dict)."""
    return sorted(records, key=lambda r: r.sop_instance_uid, reverse=True)


def write(
    conn: Connection,
    batch: Prepared,
    type_ids: dict[str, int],
    state: WriteState | None = None,
) -> list[ErrorRecord]:
    """Write a prepared batch on ``conn`` (inside its transaction).

    Args:
        conn: The connection, in its transaction.
        batch: What to write.
        type_ids: Module type ids; those lazy images need are added.
        state: Shared by the parts of one transaction, if there are several.

    Returns:
        The errors recorded for this batch beyond those passed in: duplicates
        found against the database and imageIds stored by another instance.
    """
    if state is None:
        state = WriteState()
    now = datetime.now(UTC)
    records = [item.record for item in batch.instances]
    study_ids, series_ids = _write_studies_and_series(conn, records)
    source_ids = _write_sources(conn, records, now)
    emptied, replaced = _replace_sources(conn, batch, source_ids, state)
    to_write, new_errors = _write_instances(conn, batch, series_ids, source_ids)
    _settle_batch(conn, to_write, series_ids, study_ids, replaced)
    new_errors += _write_all_images(conn, batch, to_write, type_ids)
    _replace_errors(conn, records, [*batch.errors, *new_errors], now, state)
    # A location whose every instance was a duplicate is not "stored".
    drop_empty_sources(conn, [*source_ids.values(), *emptied])
    return new_errors


def _write_studies_and_series(
    conn: Connection, records: Sequence[InstanceRecord]
) -> tuple[dict[str, int], dict[str, int]]:
    """Ids of the studies and series of ``records`` (by UID), inserting new ones.

    The rows not stored yet get the attributes of the batch's lowest SOP
    Instance UID in each (what :func:`settle` keeps when they are new);
    stored rows are left for :func:`settle` to decide.
    """
    # The lowest record of each study and series (it wins the dict), whose
    # values alone are computed: a batch has many instances per series.
    ordered = _lowest_first(records)
    study_of = {r.study_instance_uid: r for r in ordered}
    series_of = {r.series_instance_uid: r for r in ordered}
    studies = {
        uid: {"study_instance_uid": uid} | study_values(r)
        for uid, r in study_of.items()
    }
    study_ids = _insert_keyed(conn, t.studies, "study_instance_uid", studies)
    series = {
        uid: {"series_instance_uid": uid, "study_id": study_ids[r.study_instance_uid]}
        | series_values(r)
        for uid, r in series_of.items()
    }
    series_ids = _insert_keyed(conn, t.series, "series_instance_uid", series)
    return study_ids, series_ids


def _write_sources(
    conn: Connection, records: Sequence[InstanceRecord], now: datetime
) -> dict[str, int]:
    """``{location: sources row id}``: one row per location, refreshed."""
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
    return {row.location: row.id for row in upserted}


class _OldInstance(NamedTuple):
    """An instance stored before this write, of a source written again."""

    id: int
    series_id: int
    sop_instance_uid: str


def _replace_sources(
    conn: Connection, batch: Prepared, source_ids: Mapping[str, int], state: WriteState
) -> tuple[list[int], list[_OldInstance]]:
    """Delete the previous instances of the re-indexed locations.

    Those of the locations written (``source_ids``) and of those whose new
    content was all refused as duplicates (``batch.replaced``); once per
    transaction (a later part of a stream keeps what the earlier ones wrote).

    Returns:
        The source ids of ``batch.replaced``, and the instances deleted.
    """
    emptied = [
        row.id
        for row in select_map(
            conn, t.sources.c.location, [t.sources.c.id], batch.replaced
        ).values()
        if row.id not in state.replaced
    ]
    fresh = [sid for sid in source_ids.values() if sid not in state.replaced]
    replaced = _instances_of_sources(conn, [*fresh, *emptied])
    delete_instances(conn, [old.id for old in replaced])
    state.replaced.update(fresh, emptied)
    return emptied, replaced


def _write_instances(
    conn: Connection,
    batch: Prepared,
    series_ids: Mapping[str, int],
    source_ids: Mapping[str, int],
) -> tuple[list[tuple[EncodedInstance, int]], list[ErrorRecord]]:
    """Insert the instance rows (with their DICOM JSON bases).

    Returns:
        The instances inserted, with their row ids, and an error per
        instance stored before from another location (a duplicate).
    """
    # Bases of the DICOM JSON (the module values' bases come with them).
    base_ids = write_rows(
        conn,
        {
            item.dicom_json_base: (batch.bases[item.dicom_json_base], None)
            for item in batch.instances
            if item.dicom_json_base is not None
        },
    )
    # DO NOTHING + RETURNING tells ours from those already stored.
    inserted: dict[str, int] = {
        row.sop_instance_uid: row.id
        for row in insert_rows(
            conn,
            t.instances,
            INSTANCE_COLUMNS,
            [
                _instance_row(item, series_ids, source_ids, base_ids)
                for item in sorted(
                    batch.instances, key=lambda item: item.record.sop_instance_uid
                )
            ],
            conflict="sop_instance_uid",
            returning=["sop_instance_uid", "id"],
        )
    }
    to_write = [
        (item, inserted[item.record.sop_instance_uid])
        for item in batch.instances
        if item.record.sop_instance_uid in inserted
    ]
    rest = [
        item.record
        for item in batch.instances
        if item.record.sop_instance_uid not in inserted
    ]
    return to_write, _duplicates(conn, rest, source_ids)


def _instance_row(
    item: EncodedInstance,
    series_ids: Mapping[str, int],
    source_ids: Mapping[str, int],
    base_ids: Mapping[bytes, int],
) -> tuple[Any, ...]:
    """The ``instances`` row of ``item``, in :data:`INSTANCE_COLUMNS` order."""
    record = item.record
    return (
        record.sop_instance_uid,
        series_ids[record.series_instance_uid],
        record.sop_class_uid,
        int32(record.instance_number),
        record.number_of_frames,
        source_ids[record.source.location],
        item.dicom_json,
        None if item.dicom_json_base is None else base_ids[item.dicom_json_base],
        record.mapping_version,
        *map(_search(record, "instance").get, attrs.INSTANCE_COLUMNS),
    )


def _duplicates(
    conn: Connection,
    records: Sequence[InstanceRecord],
    source_ids: Mapping[str, int],
) -> list[ErrorRecord]:
    """An error per record of ``records`` (not inserted) stored from elsewhere.

    A record stored from its own location was stored by a concurrent writer
    of this very location: nothing to do.
    """
    stored = select_map(
        conn,
        t.instances.c.sop_instance_uid,
        [t.instances.c.id, t.instances.c.source_id],
        (record.sop_instance_uid for record in records),
    )
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
    errors: list[ErrorRecord] = []
    for record in records:
        row = stored[record.sop_instance_uid]
        if row.source_id != source_ids[record.source.location]:
            location = location_of.get(row.source_id) or foreign.get(row.source_id, "?")
            errors.append(duplicate(record, location))
    return errors


def _settle_batch(
    conn: Connection,
    to_write: Sequence[tuple[EncodedInstance, int]],
    series_ids: Mapping[str, int],
    study_ids: Mapping[str, int],
    replaced: Sequence[_OldInstance],
) -> None:
    """:func:`settle` the series and studies the batch touched.

    Studies and series take the attributes of their lowest stored instance;
    those the batch created for duplicates only (or emptied) go again.  A
    series lost an instance if one of it was deleted and not written again.
    """
    written = {item.record.sop_instance_uid: item.record for item, _ in to_write}
    back = {(series_ids[r.series_instance_uid], sop) for sop, r in written.items()}
    lost = {
        old.series_id
        for old in replaced
        if (old.series_id, old.sop_instance_uid) not in back
    }
    settle(
        conn,
        {*series_ids.values(), *(old.series_id for old in replaced)},
        written=written,
        lost=lost,
        study_ids=study_ids,
    )


def _write_all_images(
    conn: Connection,
    batch: Prepared,
    to_write: Sequence[tuple[EncodedInstance, int]],
    type_ids: dict[str, int],
) -> list[ErrorRecord]:
    """Write the images of the instances inserted, eager ones first."""
    errors = write_frames(conn, batch, to_write, type_ids)
    for item, instance_id in to_write:
        if isinstance(item.record.images, LazyImages):
            errors += write_lazy_images(conn, item, instance_id, type_ids)
    return errors


def _replace_errors(
    conn: Connection,
    records: Sequence[InstanceRecord],
    errors: Sequence[ErrorRecord],
    now: datetime,
    state: WriteState,
) -> None:
    """Record ``errors``; a location written again loses its old errors.

    Once per transaction: a later part keeps those the earlier ones recorded.
    """
    locations = {r.source.location for r in records} | {e.location for e in errors}
    locations -= state.cleared
    if is_postgres(conn):
        for where in key_in(conn, t.index_errors.c.location, sorted(locations)):
            conn.execute(sa.delete(t.index_errors).where(where))
    else:
        sql = "DELETE FROM index_errors WHERE location IN {keys}"
        for text, params in sqlite_in(sql, sorted(locations)):
            conn.exec_driver_sql(text, params)
    state.cleared |= locations
    insert_rows(
        conn,
        t.index_errors,
        ["location", "kind", "reason", "at"],
        [(e.location, e.kind, e.reason, now) for e in errors],
    )


def write_lazy_images(
    conn: Connection, item: EncodedInstance, instance_id: int, type_ids: dict[str, int]
) -> list[ErrorRecord]:
    """Build, encode and write the lazy images of one instance, a chunk at a time.

    At most :data:`FRAME_CHUNK` frames are held at once, whatever the
    instance's frame count; all of them are written in the caller's
    transaction, so the instance is stored whole or not at all.
    """
    images = iter(item.record.images)
    found: list[ErrorRecord] = []
    while chunk := list(islice(images, FRAME_CHUNK)):
        part = Prepared([], {}, {}, set(), [])
        holder = EncodedInstance(item.record)
        encode_images([(holder, image) for image in chunk], part)
        del chunk
        missing = part.module_types - type_ids.keys()
        if missing:
            type_ids.update(ensure_module_types(conn, missing))
        found += write_frames(conn, part, [(holder, instance_id)], type_ids)
    return found


def write_frames(
    conn: Connection,
    batch: Prepared,
    to_write: Sequence[tuple[EncodedInstance, int]],
    type_ids: dict[str, int],
) -> list[ErrorRecord]:
    """Write the encoded images of ``to_write`` (instance row ids given).

    Returns:
        An error per imageId already stored for another instance.
    """
    new_errors: list[ErrorRecord] = []
    # Module values, content-addressed: insert-or-ignore, then fetch ids.
    digests = sorted(
        {
            ref.digest
            for item, _ in to_write
            for image in item.images
            for ref in image.refs
        }
    )
    value_ids = write_values(conn, digests, batch)

    # Images, then all their module rows in one statement.
    image_ids = write_images(
        conn,
        [
            (image.image_id, instance_id, image.frame)
            for item, instance_id in to_write
            for image in item.images
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
            module_rows += [
                (row_id, type_ids[module_type], value_ids[d]) for module_type, d in refs
            ]
    write_image_modules(conn, module_rows)
    return new_errors


def _search(found: Searchable, table: str) -> dict[str, Any]:
    """The values of ``table``'s search columns of revision 0003 (``attrs``).

    ``prepare`` fills them in for a record, :func:`_read_back` for the
    attributes read back from a stored instance
    (``store_encode.search_values`` both); a record that has none yet
    (written without ``prepare``) gets them computed here.
    """
    values = found.search_values
    if values is None:
        if not isinstance(found, InstanceRecord):
            raise AssertionError("read-back attributes carry their search values")
        values = search_values(found.dicom_json, found.patient_name)
    return values[table]


def write_images(
    conn: Connection, images: Sequence[tuple[str, int, int]]
) -> dict[str, int]:
    """Insert ``(image_id, instance row id, frame)`` rows; return their ids.

    An imageId already stored (for another instance) is left out of the
    result.
    """
    if not images:
        return {}
    split = {image_id: split_for_storage(image_id) for image_id, _, _ in images}
    prefixes = sorted({prefix for prefix, _ in split.values()})
    p = t.image_id_prefixes
    insert_rows(
        conn, p, ["prefix"], [(prefix,) for prefix in prefixes], conflict="prefix"
    )
    prefix_ids = {
        key: row.id
        for key, row in select_map(conn, p.c.prefix, [p.c.id], prefixes).items()
    }
    key_of = {image_id: image_key(image_id) for image_id, _, _ in images}
    keys = {key: image_id for image_id, key in key_of.items()}
    rows = [
        (
            key_of[image_id],
            prefix_ids[split[image_id][0]],
            split[image_id][1],
            instance_id,
            frame,
        )
        for image_id, instance_id, frame in images
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
        known.update(write_rows(conn, rows, selected=True))
    return known


def _select_ids(conn: Connection, digests: Iterable[bytes]) -> dict[bytes, int]:
    """``{digest: id}`` of the stored module_values rows among ``digests``."""
    mv = t.module_values
    return {
        d: row.id
        for d, row in select_map(conn, mv.c.digest, [mv.c.id], digests).items()
    }


def write_rows(
    conn: Connection,
    rows: dict[bytes, tuple[bytes, int | None]],
    *,
    selected: bool = False,
) -> dict[bytes, int]:
    """Insert-or-ignore module_values ``{digest: (blob, base_id)}``; return ids.

    Rows already stored (by digest) are left as they are.  Inserted in digest
    order so that concurrent writers take row locks in one order.
    ``selected``: the caller looked ``rows`` up in this transaction and found
    none (a row a concurrent writer stored since is still left as it is).
    """
    if not rows:
        return {}
    known = {} if selected else _select_ids(conn, rows)
    missing = sorted(d for d in rows if d not in known)
    if missing:
        # The ids of the rows inserted come back; those a concurrent writer
        # stored first are selected.
        inserted = insert_rows(
            conn,
            t.module_values,
            ["digest", "value", "base_id"],
            [(d, rows[d][0], rows[d][1]) for d in missing],
            conflict="digest",
            returning=["digest", "id"],
        )
        known.update((bytes(row.digest), row.id) for row in inserted)
        rest = [d for d in missing if d not in known]
        known.update(_select_ids(conn, rest))
    return known


def delete_instances_of_sources(
    conn: Connection, source_ids: Sequence[int]
) -> tuple[int, set[int]]:
    """Delete the instances of ``source_ids`` with their images.

    Returns:
        How many instances were deleted, and the ids of the series they were
        in (for :func:`settle`).
    """
    count = 0
    series: set[int] = set()
    ins = t.instances
    for where in key_in(conn, ins.c.source_id, sorted(source_ids)):
        old = conn.execute(sa.select(ins.c.id, ins.c.series_id).where(where)).all()
        series.update(row.series_id for row in old)
        count += delete_instances(conn, [row.id for row in old])
    return count, series


def _instances_of_sources(
    conn: Connection, source_ids: Sequence[int]
) -> list[_OldInstance]:
    """The instances of ``source_ids``."""
    if not is_postgres(conn):
        return [
            _OldInstance(*row)
            for text, params in sqlite_in(
                _SQLITE_INSTANCES_OF_SOURCES, sorted(source_ids)
            )
            for row in conn.exec_driver_sql(text, params)
        ]
    ins = t.instances
    columns = (ins.c.id, ins.c.series_id, ins.c.sop_instance_uid)
    return [
        _OldInstance(id_, series_id, sop)
        for where in key_in(conn, ins.c.source_id, sorted(source_ids))
        for id_, series_id, sop in conn.execute(sa.select(*columns).where(where))
    ]


#: SQLite's statements of :func:`_instances_of_sources`,
#: :func:`delete_instances` and :func:`drop_empty_sources` (:func:`sqlite_in`).
_SQLITE_INSTANCES_OF_SOURCES = (
    "SELECT id, series_id, sop_instance_uid FROM instances WHERE source_id IN {keys}"
)
_SQLITE_DELETE_INSTANCES = (
    "DELETE FROM image_modules WHERE image_id IN "
    "(SELECT images.id FROM images WHERE images.instance_id IN {keys})",
    "DELETE FROM images WHERE instance_id IN {keys}",
    "DELETE FROM instances WHERE id IN {keys}",
)
_SQLITE_DROP_EMPTY_SOURCES = (
    "DELETE FROM sources WHERE id IN {keys} AND NOT (EXISTS "
    "(SELECT instances.id FROM instances WHERE instances.source_id = sources.id))"
)


def delete_instances(conn: Connection, instance_ids: Sequence[int]) -> int:
    """Delete instances by id with their images and image_modules rows."""
    postgres = is_postgres(conn)
    for part in chunked(sorted(instance_ids), CHUNK):
        if not postgres:
            for sql in _SQLITE_DELETE_INSTANCES:
                for text, params in sqlite_in(sql, part):
                    conn.exec_driver_sql(text, params)
            continue
        images = sa.select(t.images.c.id).where(t.images.c.instance_id.in_(part))
        conn.execute(
            sa.delete(t.image_modules).where(t.image_modules.c.image_id.in_(images))
        )
        conn.execute(sa.delete(t.images).where(t.images.c.instance_id.in_(part)))
        conn.execute(sa.delete(t.instances).where(t.instances.c.id.in_(part)))
    return len(instance_ids)


def drop_empty_sources(conn: Connection, source_ids: Sequence[int]) -> None:
    """Delete those of ``source_ids`` that no instance refers to."""
    if not is_postgres(conn):
        for text, params in sqlite_in(_SQLITE_DROP_EMPTY_SOURCES, sorted(source_ids)):
            conn.exec_driver_sql(text, params)
        return
    used = sa.select(t.instances.c.id).where(t.instances.c.source_id == t.sources.c.id)
    for where in key_in(conn, t.sources.c.id, sorted(source_ids)):
        conn.execute(sa.delete(t.sources).where(where, ~used.exists()))


def settle(
    conn: Connection,
    series_ids: Collection[int],
    *,
    written: Mapping[str, InstanceRecord],
    lost: Collection[int] = (),
    study_ids: Mapping[str, int] | None = None,
) -> None:
    """Give series ``series_ids`` and their studies the attributes the rule says.

    **The rule:** a series' attributes (its study included) and a study's
    attributes are those of its stored instance with the lowest SOP Instance
    UID (compared character by character, by code point).  A pure function
    of what is stored, so the order sources come in, batch boundaries, a
    crash and its rerun or concurrent writers cannot change it; a duplicate,
    never stored, cannot either.  A series without instances and a study
    without series are deleted.  A series' ``instance_count`` is set to the
    number of its stored instances, counted by the query that finds the
    lowest one, and a series' and a study's ``first_instance_id`` to the id
    of that lowest instance (whose DICOM JSON QIDO-RS answers their other
    attributes from): the row's columns and its first instance are always
    the same instance.

    Call it in the transaction that changed the instances of ``series_ids``
    (every series a write touched, or a prune emptied): every path that
    inserts or deletes instances must, or the stored counts and first
    instances go wrong.  The attributes of an instance in ``written`` (SOP
    Instance UID -> the record just inserted) come from the record.
    Otherwise a row already holds its lowest instance's attributes, unless
    that instance may have gone: for the series in ``lost`` (they lost
    instances here) and their studies, the attributes are read back from
    the lowest instance's stored DICOM JSON (``metastore.attributes``, as
    the record was made).

    PostgreSQL: the rows are locked (in id order) before their lowest
    instance is looked up, so of two writers adding to one series the second
    sees the first's instances once it gets the lock (and counts them).
    """
    if not series_ids:
        return
    known: dict[str, Searchable] = {}
    known.update(written)
    study_of = dict(study_ids or {})
    studies, recheck = _settle_series(conn, series_ids, lost, known, study_of)
    # (and every study the batch named: a record's study may hold none of
    # its series, when the series is another study's)
    studies |= set((study_ids or {}).values())
    _settle_studies(conn, studies, recheck, known)


def _settle_series(
    conn: Connection,
    series_ids: Collection[int],
    lost: Collection[int],
    known: dict[str, Searchable],
    study_of: dict[str, int],
) -> tuple[set[int], set[int]]:
    """The series half of :func:`settle` (``known``: attributes by SOP UID).

    Returns:
        The ids of the studies of ``series_ids`` (before and after), and of
        those whose lowest instance may be another now: they lost
        instances, or a series moved out of or into them.
    """
    se = t.series
    columns = [
        se.c.study_id,
        *(se.c[f] for f in _HELD_COLUMNS),
        *(se.c[f] for f in SERIES_FIELDS),
    ]
    rows = _locked(conn, se, columns, series_ids)
    held = _held(conn, se, sorted(rows))
    recheck = {rows[id_].study_id for id_ in lost if id_ in rows}
    sops = [held[id_].lowest for id_ in lost if id_ in held]
    _read_back(conn, [sop for sop in sops if sop not in known], known)
    updates: list[dict[str, Any]] = []
    for id_, row in sorted(rows.items()):
        if id_ not in held:
            continue  # no instance left: deleted below
        found = known.get(held[id_].lowest)
        # None: the lowest instance is the one the row's attributes came from
        wanted: dict[str, Any] = {}
        if found is not None:
            wanted = {"study_id": _study_id(conn, found, study_of, row.study_id)}
            wanted |= series_values(found)
        _changed(updates, id_, row, wanted, held[id_].columns(se))
        if found is not None and wanted["study_id"] != row.study_id:
            recheck |= {row.study_id, wanted["study_id"]}
    _update(conn, se, updates)
    _delete_unused(conn, se, [id_ for id_ in rows if id_ not in held], t.instances)
    return {row.study_id for row in rows.values()} | recheck, recheck


def _settle_studies(
    conn: Connection,
    study_ids: Collection[int],
    recheck: Collection[int],
    known: dict[str, Searchable],
) -> None:
    """The study half of :func:`settle`: ``recheck`` are read back."""
    st = t.studies
    columns = [st.c.first_instance_id, *(st.c[f] for f in STUDY_FIELDS)]
    rows = _locked(conn, st, columns, study_ids)
    held = _held(conn, st, sorted(rows))
    recheck = {id_ for id_ in recheck if id_ in held}
    sops = [held[id_].lowest for id_ in recheck]
    _read_back(conn, [sop for sop in sops if sop not in known], known)
    updates: list[dict[str, Any]] = []
    for id_, row in sorted(rows.items()):
        if id_ not in held:
            continue  # no series left: deleted below
        found = known.get(held[id_].lowest)
        # None: the lowest instance is the one the row's attributes came from
        wanted = {} if found is None else study_values(found)
        _changed(updates, id_, row, wanted, held[id_].columns(st))
    _update(conn, st, updates)
    _delete_unused(conn, st, [id_ for id_ in rows if id_ not in held], t.series)


def _changed(
    updates: list[dict[str, Any]],
    id_: int,
    row: sa.Row[Any],
    wanted: dict[str, Any],
    kept: dict[str, Any],
) -> None:
    """Add row ``id_``'s update to ``updates`` if ``wanted`` or ``kept`` changes it.

    ``wanted``: the attributes of its lowest instance (empty if they stand);
    ``kept``: the columns :func:`_held` found (written with the attributes
    when those change, so a batch has few shapes of updates, else alone).
    """
    if any(wanted[f] != getattr(row, f) for f in wanted):
        updates.append({"_id": id_, **wanted, **kept})
    elif any(kept[f] != getattr(row, f) for f in kept):
        updates.append({"_id": id_, **kept})


def _locked(
    conn: Connection, table: sa.Table, columns: Sequence[Any], ids: Collection[int]
) -> dict[int, sa.Row[Any]]:
    """``{id: row}`` of ``table``'s rows ``ids``, locked on PostgreSQL (in id order)."""
    if not is_postgres(conn):  # nothing to lock: the transaction holds the database
        return select_map(conn, table.c.id, columns, ids)
    found: dict[int, sa.Row[Any]] = {}
    for where in key_in(conn, table.c.id, sorted(ids)):
        stmt = sa.select(table.c.id, *columns).where(where).order_by(table.c.id)
        if is_postgres(conn):
            stmt = stmt.with_for_update()
        for row in conn.execute(stmt):
            found[row.id] = row
    return found


#: The columns settle stores from :class:`_Held` (a study has no count).
_HELD_COLUMNS = ("instance_count", "first_instance_id")


class _Held(NamedTuple):
    """What a series or a study holds of the stored instances (:func:`_held`)."""

    #: Its lowest SOP Instance UID, by code point.
    lowest: str
    #: How many instances it has (a series': its ``instance_count``).
    instances: int
    #: The ``instances.id`` of ``lowest``: its ``first_instance_id``.
    first: int

    def columns(self, table: sa.Table) -> dict[str, Any]:
        """The columns of a ``table`` row (series, studies) it gives."""
        found = {"instance_count": self.instances, "first_instance_id": self.first}
        return {name: found[name] for name in _HELD_COLUMNS if name in table.c}


#: SQLite's statements of :func:`_grouped` (by "of series?"), whose ``min``
#: compares text by the BINARY collation: by code point.
_SQLITE_HELD = {
    True: (
        "SELECT series_id, min(sop_instance_uid), count(*) FROM instances "
        "WHERE series_id IN {keys} GROUP BY series_id"
    ),
    False: (
        "SELECT series.study_id, min(instances.sop_instance_uid), count(*) "
        "FROM instances JOIN series ON series.id = instances.series_id "
        "WHERE series.study_id IN {keys} GROUP BY series.study_id"
    ),
}


def _held(conn: Connection, table: sa.Table, ids: Sequence[int]) -> dict[int, _Held]:
    """``{series or study id: its lowest SOP Instance UID, instance count and
    the id of that lowest instance}``.

    One ``GROUP BY`` over the instances of ``ids`` (:func:`_grouped`), then
    the ids of the lowest UIDs, looked up by ``sop_instance_uid`` (unique
    store-wide; the same statement on both backends).  Called with the rows
    locked (PostgreSQL, :func:`_locked`; READ COMMITTED), so the last count
    of a series is exact under concurrent writers: every writer that
    changes its instances settles it under the same lock, so one that took
    the lock first committed before this statement (and is counted), and
    one that waits for it counts after this transaction commits.  For the
    same reason the lowest instance is still there for the lookup, a
    statement later: a writer deleting it settles its series (and study)
    and waits for the lock.  Rows without an instance are left out.
    """
    grouped = _grouped(conn, table, ids)
    ins = t.instances
    uids = (uid for _, uid, _ in grouped)
    first = select_map(conn, ins.c.sop_instance_uid, [ins.c.id], uids)
    return {id_: _Held(uid, n, first[uid].id) for id_, uid, n in grouped}


def _grouped(
    conn: Connection, table: sa.Table, ids: Sequence[int]
) -> list[tuple[int, str, int]]:
    """``(series or study id, lowest SOP Instance UID, instances)`` of ``ids``.

    One ``GROUP BY`` over their instances: the count costs nothing beside
    the ``min``, which reads every one of them already.
    """
    ins, se = t.instances, t.series
    found: list[tuple[int, str, int]] = []
    if not is_postgres(conn):
        sql = _SQLITE_HELD[table is se]
        for text, params in sqlite_in(sql, ids):
            rows = conn.exec_driver_sql(text, params)
            found.extend((id_, uid, n) for id_, uid, n in rows)
        return found
    # code point order, whatever the database's collation
    sop = ins.c.sop_instance_uid.collate("C")
    if table is se:
        group: sa.ColumnElement[int] = ins.c.series_id
        source: Any = ins
    else:
        group = se.c.study_id
        source = ins.join(se, se.c.id == ins.c.series_id)
    for where in key_in(conn, group, ids):
        stmt = (
            sa.select(group, sa.func.min(sop), sa.func.count())
            .select_from(source)
            .where(where)
            .group_by(group)
        )
        found.extend((id_, uid, n) for id_, uid, n in conn.execute(stmt))
    return found


def _read_back(
    conn: Connection, sops: Sequence[str], into: dict[str, Searchable]
) -> None:
    """Put the attributes of stored instances ``sops`` (from DICOM JSON) in ``into``."""
    if not sops:
        return
    ins, base = t.instances, t.module_values.alias("base")
    for where in key_in(conn, ins.c.sop_instance_uid, sorted(set(sops))):
        stmt = (
            sa.select(ins.c.sop_instance_uid, ins.c.dicom_json, base.c.value)
            .outerjoin(base, base.c.id == ins.c.dicom_json_base_id)
            .where(where)
        )
        for sop, blob, base_blob in conn.execute(stmt):
            instance = codec.decode_dicom_json(
                blob, None if base_blob is None else codec.inflate(base_blob)
            )
            # The 0003 columns from the same instance and its JSON, as the
            # write path computes them (store_encode.search_values).
            found = storable_attributes(search_attributes(instance))
            into[sop] = dataclasses.replace(
                found, search_values=search_values(instance, found.patient_name)
            )


def _study_id(
    conn: Connection, found: Searchable, study_of: dict[str, int], current: int
) -> int:
    """The id of the study ``found`` is in (stored now if need be), else ``current``."""
    uid = found.study_instance_uid
    if uid is None:
        return current
    if uid not in study_of:
        row = {"study_instance_uid": uid} | study_values(found)
        study_of.update(
            _insert_keyed(conn, t.studies, "study_instance_uid", {uid: row})
        )
    return study_of[uid]


def _update(conn: Connection, table: sa.Table, updates: list[dict[str, Any]]) -> None:
    """Set columns of rows by id: ``[{"_id": id, column: value, ...}, ...]``.

    One statement per set of columns (rows may set different ones).
    """
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in updates:
        shapes.setdefault(tuple(row), []).append(row)
    for rows in shapes.values():
        _update_shape(conn, table, rows)


def _update_shape(
    conn: Connection, table: sa.Table, updates: list[dict[str, Any]]
) -> None:
    """:func:`_update` of rows that all set the same columns."""
    columns = [name for name in updates[0] if name != "_id"]
    if not is_postgres(conn):
        # A plain text and tuples for sqlite3's executemany; the columns
        # are text and integers, bound as they are.
        sets = ", ".join(f"{_quote(conn, name)} = ?" for name in columns)
        conn.exec_driver_sql(
            f"UPDATE {_quote(conn, table.name)} SET {sets} WHERE id = ?",
            [(*(row[name] for name in columns), row["_id"]) for row in updates],
        )
        return
    stmt = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("_id"))
        .values({name: sa.bindparam(name) for name in columns})
    )
    conn.execute(stmt, updates)


def _delete_unused(
    conn: Connection, table: sa.Table, ids: Sequence[int], users: sa.Table
) -> None:
    """Delete rows ``ids`` of ``table`` (series, studies) no row of ``users`` is in."""
    user = users.c.series_id if users is t.instances else users.c.study_id
    used = sa.select(user).where(user == table.c.id).exists()
    for where in key_in(conn, table.c.id, sorted(ids)):
        conn.execute(sa.delete(table).where(where, ~used))
