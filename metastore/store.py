"""The persistent store: :class:`Store` writes instance records and reads modules.

This module owns the store's public API: batched writes of
:class:`~metastore.records.InstanceRecord` (``store_write``), module lookups
per imageId and per series, the full DICOM JSON, search (``store_query``),
export, prune and statistics.  It talks to the database only through
``metastore.db``, ``metastore.schema`` and ``metastore.codec``; it imports no
pydicom.  Values it returns are decoded afresh per call unless documented.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from metastore import codec, store_prune, store_query, store_write
from metastore import schema as t
from metastore.db import create_engine, ensure_schema, redact
from metastore.errors import StoreError
from metastore.records import ErrorRecord, InstanceRecord
from metastore.types import DicomJson, ModuleValue

__all__ = ["Store"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts of one write transaction before a transient error is raised.
MAX_ATTEMPTS = 6
#: SQLSTATEs worth retrying: serialization failure, deadlock, and a foreign
#: key broken by a concurrent prune (the retry re-inserts the parent row).
RETRY_SQLSTATES = frozenset({"40001", "40P01", "23503"})
#: PostgreSQL advisory lock: shared by writers, exclusive for prune.
WRITE_LOCK_KEY = 0x6D65746177726974


def _is_transient(exc: DBAPIError) -> bool:
    """True for errors a retry of the whole transaction can cure."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate in RETRY_SQLSTATES:
        return True
    # SQLite: a writer that outwaited busy_timeout, or a stale snapshot.
    text = str(orig).lower()
    return "database is locked" in text or "database is busy" in text


class Store:
    """A metastore database: write instance records, read module values.

    Args:
        url_or_engine: a database URL (``sqlite:///file``,
            ``postgresql://...``) or an engine made by
            :func:`metastore.db.create_engine`.
        upgrade: migrate an existing database that is behind this version of
            metastore (a brand-new empty database is always set up).

    Raises:
        SchemaNotAtHeadError: the schema is behind and ``upgrade`` is false.
        StoreError: the database cannot be reached or used.
    """

    def __init__(
        self, url_or_engine: str | URL | Engine, *, upgrade: bool = False
    ) -> None:
        self._owns_engine = not isinstance(url_or_engine, Engine)
        self.engine: Engine = create_engine(url_or_engine)
        #: The database URL with its password hidden (safe to log).
        self.url: str = redact(self.engine.url)
        try:
            ensure_schema(self.engine, upgrade=upgrade)
        except BaseException:
            self.close()
            raise
        self._is_sqlite = self.engine.dialect.name == "sqlite"
        self._type_names: dict[int, str] = {}
        self._type_ids: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        """Release the connections (the engine too, if the store made it)."""
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- plumbing ----------------------------------------------------------

    def _write(self, work: Callable[[Connection], T], *, exclusive: bool = False) -> T:
        """Run ``work`` in one write transaction, retrying transient errors.

        On PostgreSQL, writers share an advisory lock that ``exclusive`` work
        (prune) takes alone: prune's sweeps lock rows in an order writers
        cannot follow, so the two never run together.  SQLite writers are
        serialised by ``BEGIN IMMEDIATE`` anyway.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self.engine.connect() as conn:
                    if self._is_sqlite:
                        conn = conn.execution_options(metastore_begin="IMMEDIATE")
                    with conn.begin():
                        if not self._is_sqlite:
                            lock = "" if exclusive else "_shared"
                            conn.execute(
                                sa.text(f"SELECT pg_advisory_xact_lock{lock}(:key)"),
                                {"key": WRITE_LOCK_KEY},
                            )
                        return work(conn)
            except DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or not _is_transient(exc):
                    raise StoreError(
                        f"write to {self.url} failed: {_first_line(exc)}"
                    ) from exc
                delay = 0.02 * 2**attempt * (1 + random.random())
                log.info("retrying write to %s in %.2fs: %s", self.url, delay, exc.orig)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self) -> Connection:
        """A connection for reading (use as a context manager)."""
        return self.engine.connect()

    def _type_names_now(self, conn: Connection) -> dict[int, str]:
        """All module type names by id, fresh from the database."""
        rows = conn.execute(sa.select(t.module_types.c.id, t.module_types.c.name))
        self._type_names = {row.id: row.name for row in rows}
        self._type_ids = {v: k for k, v in self._type_names.items()}
        return self._type_names

    # -- write side --------------------------------------------------------

    def known_sources(self) -> dict[str, tuple[int, int]]:
        """``{location: (size, mtime_ns)}`` of every location stored successfully."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(t.sources.c.location, t.sources.c.size, t.sources.c.mtime_ns)
            )
            return {row.location: (row.size, row.mtime_ns) for row in rows}

    def write_batch(
        self,
        instances: Sequence[InstanceRecord],
        errors: Sequence[ErrorRecord] = (),
    ) -> list[ErrorRecord]:
        """Store a batch of instances and errors in one transaction.

        A location stored before is replaced (its old instances go first).  A
        SOP Instance UID already stored from another location is not stored
        again: it comes back as an ``ErrorRecord(kind="duplicate")`` and is
        recorded with the other errors.  Module values are stored once per
        distinct value.  Writing a location clears the errors recorded for it
        before, then records this batch's.  Concurrent writers are safe.

        Args:
            instances: the records to store.
            errors: sources that failed to index, recorded as they are.

        Returns:
            The errors this write found itself (duplicates, invalid UIDs),
            not including ``errors``.

        Raises:
            StoreError: the database failed (after retrying transient errors).
            ValueError: an error record has an unknown ``kind``.
        """
        batch = store_write.prepare(instances, errors)
        found = batch.errors[len(errors) :]

        def work(conn: Connection) -> list[ErrorRecord]:
            type_ids = store_write.ensure_module_types(conn, batch.module_types)
            return store_write.write(conn, batch, type_ids)

        written = self._write(work)
        return [*found, *written]

    def prune(self, roots: Sequence[str], seen: set[str]) -> int:
        """Forget instances under ``roots`` whose location is not in ``seen``.

        A location is under a root when it equals the root or continues it
        after a ``/`` (a folder) or ``!/`` (a zip archive's members), so
        pruning ``/data/a`` leaves ``/data/ab.dcm`` alone.  Errors recorded
        for such locations go too.  Then series, studies and module values
        nothing refers to any more are deleted (also those left behind by
        re-indexed locations).

        Args:
            roots: the folders, archives or URL prefixes that were indexed.
            seen: every location found under ``roots`` in that run.

        Returns:
            How many instances were deleted.
        """
        roots = [root for root in roots if root]
        return self._write(
            lambda conn: store_prune.prune(conn, roots, seen), exclusive=True
        )

    def errors(self) -> list[ErrorRecord]:
        """The recorded errors, oldest first."""
        e = t.index_errors
        stmt = sa.select(e.c.location, e.c.kind, e.c.reason).order_by(e.c.id)
        with self._read() as conn:
            return [ErrorRecord(*row) for row in conn.execute(stmt)]

    # -- read side ---------------------------------------------------------

    def image_modules(self, image_id: str) -> dict[str, ModuleValue] | None:
        """Every stored module of one image, or ``None`` if the image is unknown.

        The values are new objects, decoded for this call.
        """
        img, prefix = t.images, t.image_id_prefixes
        stmt = _with_modules(
            sa.select(img.c.id).select_from(
                img.join(prefix, prefix.c.id == img.c.prefix_id)
            ),
            img.c.id,
        ).where(
            img.c.image_key == store_write.image_key(image_id),
            # A colliding key of another imageId is not this image.
            prefix.c.prefix + img.c.suffix == image_id,
        )
        with self._read() as conn:
            rows = conn.execute(stmt).all()
            if not rows:
                return None
            names = self._names(conn, rows)
        decode = _Decoder()
        return {
            names[type_id]: decode(names[type_id], value_id, blob, base_id, base)
            for _, type_id, value_id, blob, base_id, base in rows
            if type_id is not None
        }

    def series_image_modules(
        self, series_instance_uid: str
    ) -> dict[str, dict[str, ModuleValue]]:
        """``{image_id: {module type: value}}`` for every image of one series.

        One query.  A value shared by several images (patient, study, series
        modules) is decoded once and the *same object* is returned for each of
        them: treat the values as read-only.
        """
        # Pausing the cyclic GC: thousands of new dicts would trigger
        # collections that walk everything already cached (up to 2x slower).
        with _gc_paused():
            with self._read() as conn:
                rows = conn.execute(
                    _series_statement(), {"uid": series_instance_uid}
                ).all()
                names = self._type_names
                if any(r[0] == _REF and r[2] not in names for r in rows):
                    names = self._type_names_now(conn)
            return _assemble_series(rows, names)

    def _names(self, conn: Connection, rows: Sequence[Any]) -> dict[int, str]:
        """Module type names by id, reloaded if ``rows`` hold an unknown id."""
        names = self._type_names
        if any(row[1] is not None and row[1] not in names for row in rows):
            names = self._type_names_now(conn)
        return names

    def export(
        self, modules: Sequence[str] | None = None
    ) -> Iterator[tuple[str, dict[str, ModuleValue]]]:
        """Stream ``(image_id, {module type: value})`` for every image, by imageId.

        Rows are fetched in chunks (a server-side cursor on PostgreSQL), so
        memory stays flat on big databases.  Values shared by many images may
        be the same object in several results: treat them as read-only.

        Args:
            modules: only these module types (all when ``None``); an image
                with none of them is still yielded, with an empty dict.
        """
        img = t.images
        with self._read() as conn:
            names = self._type_names_now(conn)
            types = None
            if modules is not None:
                wanted = set(modules)
                types = [i for i, name in names.items() if name in wanted]
            prefix = t.image_id_prefixes
            image_id = (prefix.c.prefix + img.c.suffix).label("image_id")
            stmt = _with_modules(
                sa.select(image_id).select_from(
                    img.join(prefix, prefix.c.id == img.c.prefix_id)
                ),
                img.c.id,
                types,
            ).order_by(image_id)
            result = conn.execution_options(yield_per=2000).execute(stmt)
            decode = _Decoder()
            current: str | None = None
            values: dict[str, ModuleValue] = {}
            for image_id, type_id, value_id, blob, base_id, base in result:
                if image_id != current:
                    if current is not None:
                        yield current, values
                    current, values = image_id, {}
                    decode.trim(50_000)
                if type_id is not None:
                    values[names[type_id]] = decode(
                        names[type_id], value_id, blob, base_id, base
                    )
            if current is not None:
                yield current, values

    def query(
        self,
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
        """Find studies, series or instances.

        Text filters ignore case (non-Latin scripts too) and take DICOM
        wildcards: ``*`` for any run of characters, ``?`` for one; every
        other character, ``%`` and ``_`` included, is matched literally.
        UIDs match exactly.  ``description`` is the study description at
        study level and the series description below it; ``modality`` at
        study level finds studies with a series of that modality.

        Args:
            level: ``"study"``, ``"series"`` or ``"instance"``.
            patient_id: (0010,0020) PatientID filter.
            patient_name: (0010,0010) PatientName filter (any component group).
            modality: (0008,0060) Modality filter.
            study_date_from: first (0008,0020) StudyDate, ``YYYYMMDD``.
            study_date_to: last StudyDate, ``YYYYMMDD``, inclusive.
            accession_number: (0008,0050) AccessionNumber filter.
            description: study or series description filter.
            study_instance_uid: exact (0020,000D) StudyInstanceUID.
            series_instance_uid: exact (0020,000E) SeriesInstanceUID.
            limit: at most this many results.

        Returns:
            One dict per match, keys named like the schema's columns; study
            results add ``modalities``, ``number_of_series`` and
            ``number_of_instances``; series results ``number_of_instances``;
            instance results the source ``location``.

        Raises:
            QueryError: an unknown level, a malformed date, a date range
                that ends before it starts, or a bad limit.
        """
        with self._read() as conn:
            return store_query.query(
                conn,
                level,
                patient_id=patient_id,
                patient_name=patient_name,
                modality=modality,
                study_date_from=study_date_from,
                study_date_to=study_date_to,
                accession_number=accession_number,
                description=description,
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                limit=limit,
            )

    def stats(self) -> dict[str, int | None]:
        """Row counts and the database size in bytes (``None`` if unknown)."""
        tables = {
            "studies": t.studies,
            "series": t.series,
            "instances": t.instances,
            "images": t.images,
            "module_values": t.module_values,
            "image_modules": t.image_modules,
            "sources": t.sources,
            "errors": t.index_errors,
        }
        out: dict[str, int | None] = {}
        with self._read() as conn:
            for name, table in tables.items():
                stmt = sa.select(sa.func.count()).select_from(table)
                out[name] = int(conn.execute(stmt).scalar_one())
            out["database_bytes"] = store_query.database_bytes(conn)
        return out

    def dicom_json(self, sop_instance_uid: str) -> DicomJson | None:
        """The stored DICOM JSON of one instance, or ``None`` if unknown."""
        ins, base = t.instances, t.module_values.alias("base")
        stmt = (
            sa.select(ins.c.dicom_json, base.c.value)
            .outerjoin(base, base.c.id == ins.c.dicom_json_base_id)
            .where(ins.c.sop_instance_uid == sop_instance_uid)
        )
        with self._read() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        blob, base_blob = row
        return codec.decode_dicom_json(
            blob, None if base_blob is None else codec.inflate(base_blob)
        )


_NOTHING: Any = object()


class _Composite(dict[str, ModuleValue]):
    """A decoded composite row: one image's own values by module type."""

    __slots__ = ()


class _Decoder:
    """Decodes module value rows, each value and each base only once."""

    __slots__ = ("bases", "values")

    def __init__(self) -> None:
        self.values: dict[int, ModuleValue] = {}
        self.bases: dict[int, bytes] = {}

    def __call__(
        self,
        name: str,
        value_id: int,
        blob: bytes,
        base_id: int | None,
        base: bytes | None,
    ) -> ModuleValue:
        """The value of module ``name`` in row ``value_id`` (shared objects)."""
        value = self.values.get(value_id, _NOTHING)
        if value is _NOTHING:
            base_bytes = None
            if base_id is not None and base is not None:
                base_bytes = self.bases.get(base_id)
                if base_bytes is None:
                    base_bytes = self.bases[base_id] = codec.inflate(base)
            value = codec.decode_value(blob, base_bytes)
            if codec.is_composite(blob):
                value = _Composite(value)
            self.values[value_id] = value
        if type(value) is _Composite:
            return value[name]
        return value

    def trim(self, limit: int) -> None:
        """Forget everything once more than ``limit`` values are kept."""
        if len(self.values) + len(self.bases) > limit:
            self.values.clear()
            self.bases.clear()


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a burst of allocations."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _assemble_series(
    rows: Sequence[Any], names: dict[int, str]
) -> dict[str, dict[str, ModuleValue]]:
    """Build the result of ``series_image_modules`` from its statement's rows.

    Rows come in three kinds (see :func:`_series_statement`): each distinct
    value is decoded once, then the same object goes to every image using it.
    """
    image_ids: dict[int, str] = {}
    values: dict[int, ModuleValue] = {}
    bases: dict[int, bytes] = {}
    refs = []
    for kind, a, b, c, text, blob, base in rows:
        if kind == _REF:
            refs.append((a, b, c))
        elif kind == _IMAGE:
            image_ids[a] = text
        else:
            base_bytes = None
            if b is not None:
                base_bytes = bases.get(b)
                if base_bytes is None:
                    base_bytes = bases[b] = codec.inflate(base)
            value = codec.decode_value(blob, base_bytes)
            values[a] = _Composite(value) if codec.is_composite(blob) else value
    out: dict[str, dict[str, ModuleValue]] = {i: {} for i in image_ids.values()}
    for image_pk, type_id, value_id in refs:
        name = names[type_id]
        value = values[value_id]
        if type(value) is _Composite:
            value = value[name]
        out[image_ids[image_pk]][name] = value
    return out


# Kinds of rows of _series_statement.
_REF, _IMAGE, _VALUE = 0, 1, 2


@functools.cache
def _series_statement() -> sa.CompoundSelect[Any]:
    """One statement that returns everything a series load needs.

    ``UNION ALL`` of three row kinds, so each value blob and imageId crosses
    the driver once, not once per (image, module type):

    * ``(0, image pk, module type id, value id)`` per image module;
    * ``(1, image pk, ..., imageId)`` per image;
    * ``(2, value id, base id, ..., blob, base blob)`` per distinct value.
    """
    img, ins, se, im = t.images, t.instances, t.series, t.image_modules
    mv, prefix = t.module_values, t.image_id_prefixes
    base = t.module_values.alias("base")
    uid = sa.bindparam("uid", type_=sa.String())
    in_series = se.join(ins, ins.c.series_id == se.c.id).join(
        img, img.c.instance_id == ins.c.id
    )
    where = se.c.series_instance_uid == uid
    null_int = sa.cast(sa.null(), sa.Integer())
    null_text = sa.cast(sa.null(), sa.Text())
    null_blob = sa.cast(sa.null(), sa.LargeBinary())
    refs = (
        sa.select(
            sa.literal(_REF, sa.Integer()),
            im.c.image_id,
            sa.cast(im.c.module_type_id, sa.Integer()),
            im.c.value_id,
            null_text,
            null_blob,
            null_blob,
        )
        .select_from(in_series.join(im, im.c.image_id == img.c.id))
        .where(where)
    )
    images = (
        sa.select(
            sa.literal(_IMAGE, sa.Integer()),
            img.c.id,
            null_int,
            null_int,
            prefix.c.prefix + img.c.suffix,
            null_blob,
            null_blob,
        )
        .select_from(in_series.join(prefix, prefix.c.id == img.c.prefix_id))
        .where(where)
    )
    used = (
        sa.select(im.c.value_id)
        .select_from(in_series.join(im, im.c.image_id == img.c.id))
        .where(where)
    )
    values = (
        sa.select(
            sa.literal(_VALUE, sa.Integer()),
            mv.c.id,
            mv.c.base_id,
            null_int,
            null_text,
            mv.c.value,
            base.c.value,
        )
        .select_from(mv.outerjoin(base, base.c.id == mv.c.base_id))
        .where(mv.c.id.in_(used))
    )
    return sa.union_all(refs, images, values)


def _with_modules(
    stmt: sa.Select[Any],
    image_pk: sa.ColumnElement[int],
    types: Sequence[int] | None = None,
) -> sa.Select[Any]:
    """Add each image's module rows (and their bases) to ``stmt``.

    Adds the columns ``module_type_id, value_id, value, base_id, base value``;
    outer joins, so an image without modules still gives one row of NULLs.
    """
    im, mv = t.image_modules, t.module_values
    base = t.module_values.alias("base")
    on = im.c.image_id == image_pk
    if types is not None:
        on = sa.and_(on, im.c.module_type_id.in_(types))
    return (
        stmt.add_columns(
            im.c.module_type_id, im.c.value_id, mv.c.value, mv.c.base_id, base.c.value
        )
        .outerjoin(im, on)
        .outerjoin(mv, mv.c.id == im.c.value_id)
        .outerjoin(base, base.c.id == mv.c.base_id)
    )


def _first_line(exc: BaseException) -> str:
    """The first line of a driver error (statements and parameters left out)."""
    orig: Any = getattr(exc, "orig", exc)
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__
