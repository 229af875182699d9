"""The persistent store: :class:`Store` writes instance records and reads modules.

This module owns the store's public API: batched writes of
:class:`~metastore.records.InstanceRecord` (``store_write``), module lookups
per imageId and per series, the full DICOM JSON, QIDO-style queries
(``store_qido``), export, prune and statistics.  It talks to the database
only through its siblings ``db``, ``schema`` and ``codec``; it imports
pydicom only in :meth:`Store.dataset`.
Values it returns are decoded afresh per call unless documented.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import orjson
import sqlalchemy as sa
import sqlalchemy.dialects.sqlite  # the default backend's, loaded with the store
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from metastore.chunking import chunked, gc_paused
from metastore.errors import QueryError, WadorsRootError
from metastore.records import ErrorRecord, InstanceRecord, LazyImages, StoredInstance
from metastore.store import codec
from metastore.store import encode as store_encode
from metastore.store import read as store_read
from metastore.store import refs as store_refs
from metastore.store.db import (
    create_engine,
    ensure_schema,
    map_driver_errors,
    redact,
    require_database,
    scrub,
)
from metastore.store.refs import ImageRef
from metastore.types import DicomJson, ModuleValue

__all__ = ["FilterValue", "ImageRef", "InstanceSource", "Level", "Store"]

#: A level of :meth:`Store.query`.
Level = Literal["studies", "series", "instances"]
#: A filter value of :meth:`Store.query`: text, a date, or a list ("any of").
FilterValue = str | Sequence[str] | date


class _OnFirstUse:
    """Stands for a module until its first attribute access, then imports it.

    The schema and the write, prune and query modules (SQLAlchemy's
    PostgreSQL dialect, asyncio) cost tens of ms of imports that a
    process reading series through ``store_read``'s text statements never
    needs.  On first use the module replaces this stand-in in the globals.
    """

    __slots__ = ("_load", "_name")

    def __init__(self, name: str, load: Callable[[], ModuleType]) -> None:
        self._name = name
        self._load = load

    def __getattr__(self, attr: str) -> Any:
        module = self._load()
        globals()[self._name] = module
        return getattr(module, attr)


def _schema() -> ModuleType:
    from metastore.store import schema

    return schema


def _store_prune() -> ModuleType:
    from metastore.store import prune as store_prune

    return store_prune


def _store_query() -> ModuleType:
    from metastore.store import query as store_query

    return store_query


def _store_rewrite() -> ModuleType:
    from metastore.store import rewrite as store_rewrite

    return store_rewrite


def _store_qido() -> ModuleType:
    from metastore.store import qido as store_qido

    return store_qido


def _store_write() -> ModuleType:
    from metastore.store import write as store_write

    return store_write


if TYPE_CHECKING:
    import pydicom

    from metastore.store import prune as store_prune
    from metastore.store import qido as store_qido
    from metastore.store import query as store_query
    from metastore.store import rewrite as store_rewrite
    from metastore.store import schema as t
    from metastore.store import write as store_write
else:
    t = _OnFirstUse("t", _schema)
    store_prune = _OnFirstUse("store_prune", _store_prune)
    store_qido = _OnFirstUse("store_qido", _store_qido)
    store_query = _OnFirstUse("store_query", _store_query)
    store_rewrite = _OnFirstUse("store_rewrite", _store_rewrite)
    store_write = _OnFirstUse("store_write", _store_write)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts of one write transaction before a transient error is raised.
MAX_ATTEMPTS = 6
#: SQLSTATEs worth retrying: serialization failure, deadlock, and a foreign
#: key broken by a concurrent prune (the retry re-inserts the parent row).
RETRY_SQLSTATES = frozenset({"40001", "40P01", "23503"})
#: PostgreSQL advisory lock: shared by writers, exclusive for prune.
WRITE_LOCK_KEY = 0x6D65746177726974
#: Instances (or errors) per part of :meth:`Store.write_stream`.
STREAM_PART = 500
#: A part of :meth:`Store.write_stream` also ends at this many eager images.
STREAM_PART_IMAGES = 5000


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
            :func:`metastore.store.db.create_engine`.
        upgrade: migrate an existing database that is behind this version of
            metastore (a brand-new empty database is always set up).
        read_only: the store will only be read: a SQLite file in a folder
            this process cannot write is opened read-only instead of failing
            (:func:`metastore.store.db.create_engine`); writes then fail.
        create: set up a database that does not exist yet (a SQLite file
            that is not there, an empty database).  Readers pass ``False``:
            then nothing is created, and there being nothing to read is an
            error instead of an empty store.

    Raises:
        DatabaseNotFoundError: ``create`` is false and the SQLite file does
            not exist, or the database is empty.
        SchemaNotAtHeadError: the schema is behind and ``upgrade`` is false.
        ConnectionLostError: the PostgreSQL server cannot be reached.
        StoreError: the database cannot be reached or used.

    Every method raises only metastore's errors for the database's: a
    :class:`~metastore.errors.StoreError`, a
    :class:`~metastore.errors.ConnectionLostError` when the PostgreSQL
    server went away (the work may succeed if tried again), a
    :class:`~metastore.errors.DataRefusedError` when it refused a value
    (:func:`metastore.store.db.map_driver_errors` says which is which).
    """

    def __init__(
        self,
        url_or_engine: str | URL | Engine,
        *,
        upgrade: bool = False,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        if not create:
            require_database(url_or_engine)  # before connecting creates it
        self._owns_engine = not isinstance(url_or_engine, Engine)
        self.engine: Engine = create_engine(url_or_engine, read_only=read_only)
        #: The database URL with its password hidden (safe to log).
        self.url: str = redact(self.engine.url)
        try:
            ensure_schema(self.engine, upgrade=upgrade, create=create)
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
        """:meth:`_transaction`, its driver errors raised as :class:`StoreError`.

        (:func:`metastore.store.db.map_driver_errors` says which.)
        """
        with map_driver_errors(self.engine, f"write to {self.url} failed"):
            return self._transaction(work, exclusive=exclusive)

    def _transaction(
        self, work: Callable[[Connection], T], *, exclusive: bool = False
    ) -> T:
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
                    raise  # for _write to classify
                delay = 0.02 * 2**attempt * (1 + random.random())
                reason = scrub(str(exc.orig), self.engine.url)
                log.info("retrying write to %s in %.2fs: %s", self.url, delay, reason)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _read(self, *, for_write: bool = False) -> Iterator[Connection]:
        """A connection for reading; driver errors come out as :class:`StoreError`.

        Every read method runs its statements inside this block
        (:func:`metastore.store.db.map_driver_errors`).  ``for_write``: the
        read is a write's first step (its errors say the write failed).
        """
        failed = "write to" if for_write else "read from"
        with (
            map_driver_errors(self.engine, f"{failed} {self.url} failed"),
            self.engine.connect() as conn,
        ):
            yield conn

    def _type_names_now(self, conn: Connection) -> dict[int, str]:
        """All module type names by id, fresh from the database.

        Interned: they key every module dict handed out, and callers ask with
        literal (interned) type names, so a lookup matches by identity
        instead of comparing the characters.
        """
        rows = conn.execute(store_read.TYPE_NAMES_STATEMENT)
        self._type_names = {row.id: sys.intern(row.name) for row in rows}
        self._type_ids = {v: k for k, v in self._type_names.items()}
        return self._type_names

    # -- write side --------------------------------------------------------

    def known_sources(
        self, roots: Sequence[str] | None = None
    ) -> dict[str, tuple[int, int]]:
        """``{location: (size, mtime_ns)}`` of the locations stored successfully.

        Args:
            roots: Only locations under these (as :meth:`prune` says: equal
                to a root, or continuing it after ``/`` or ``!/``), so that
                an indexing run holds the sources of its own paths rather
                than of the whole database.  ``None``: every location.
        """
        c = t.sources.c
        select = sa.select(c.location, c.size, c.mtime_ns)
        found: dict[str, tuple[int, int]] = {}
        with self._read() as conn:
            if roots is None:
                queries = [select]
            else:
                ranges = [
                    r
                    for root in dict.fromkeys(roots)
                    for r in store_query.root_ranges(root)
                ]
                # a few ranges per query: SQLite's expression depth is limited
                queries = [
                    select.where(store_query.in_ranges(conn, c.location, part))
                    for part in chunked(ranges, 100)
                ]
            for query in queries:
                for row in conn.execute(query):
                    found[row.location] = (row.size, row.mtime_ns)
        return found

    def write_batch(
        self,
        instances: Sequence[InstanceRecord],
        errors: Sequence[ErrorRecord] = (),
        replaced: Sequence[str] = (),
    ) -> list[ErrorRecord]:
        """Store a batch of instances and errors in one transaction.

        A location stored before is replaced (its old instances go first),
        also when everything it holds now is a duplicate.  A SOP Instance
        UID already stored from another location is not stored again: it
        comes back as an ``ErrorRecord(kind="duplicate")`` and is recorded
        with the other errors; it changes nothing else (no study, series or
        module value).  Module values are stored once per distinct value.
        Writing a location clears the errors recorded for it before, then
        records this batch's.  A location stored under its spelling from
        before names ending in ``!`` were escaped goes when this batch
        writes the same rows under the new one (``store_prune.adopt_legacy``).
        Concurrent writers are safe.

        A study's and a series' attributes are those of their stored
        instance with the lowest SOP Instance UID (``store_write.settle``);
        when that instance goes, they are read again from the DICOM JSON of
        the next one, so a record's search attributes must be those its
        DICOM JSON gives (as ``metastore.index.extract`` builds them).

        Args:
            instances: the records to store; those the indexer's workers
                encoded (``store.encode.pack``) only have their rows
                assembled, each chunk with the value rows it brought.
            errors: sources that failed to index, recorded as they are.
            replaced: locations whose instances were all refused as
                duplicates by :meth:`screen` (so not in ``instances``): what
                they held before goes.

        Returns:
            The errors this write found itself (duplicates, invalid UIDs),
            not including ``errors``.

        Raises:
            DataRefusedError: the database refused a value of the batch;
                nothing of it was written.
            ConnectionLostError: the PostgreSQL connection was lost (the
                transaction did not commit) or cannot be opened.
            StoreError: the database failed (after retrying transient errors).
            ValueError: an error record has an unknown ``kind``.
        """
        stored_at = self._stored_at(instances, for_write=True)
        batch = store_encode.prepare(instances, errors, stored_at, replaced)
        found = batch.errors[len(errors) :]

        def work(conn: Connection) -> list[ErrorRecord]:
            type_ids = store_write.ensure_module_types(conn, batch.module_types)
            store_prune.adopt_legacy(conn, batch.instances)
            return store_write.write(conn, batch, type_ids)

        written = self._write(work)
        return [*found, *written]

    def write_stream(
        self,
        items: Callable[[], Iterable[InstanceRecord | ErrorRecord]],
        *,
        part_size: int = STREAM_PART,
    ) -> list[ErrorRecord]:
        """Store all that ``items()`` yields in one transaction, a part at a time.

        For one source too large to hold at once (a DICOM JSON file of 10^5
        instances): the records are prepared and written :data:`STREAM_PART`
        instances (or as many errors) at a time, so memory holds one part,
        while the transaction makes the source all or nothing, as
        :meth:`write_batch` does.  Rows stored before for the same locations
        are replaced; a SOP Instance UID seen twice from one location keeps
        its first record.  Each part is screened against the store as
        :meth:`write_batch` screens a batch (in the transaction, so it sees
        the earlier parts): a duplicate changes nothing stored, and studies
        and series take the attributes of their lowest stored instance.

        Args:
            items: Makes the records (called again when the transaction is
                retried).  An exception it raises rolls the transaction back
                and comes out of this call as it is (but for the
                ``UnicodeEncodeError`` and ``OverflowError`` drivers raise
                for a value they cannot send: ``DataRefusedError``).
            part_size: Instances (or errors) per part.

        Returns:
            The errors this write found itself, as :meth:`write_batch`.

        Raises:
            DataRefusedError: the database refused a value (nothing of the
                source is written).
            ConnectionLostError: the PostgreSQL connection was lost (the
                transaction did not commit) or cannot be opened.
            StoreError: the database failed (after retrying transient errors).
        """

        def work(conn: Connection) -> list[ErrorRecord]:
            state = store_write.WriteState()
            type_ids: dict[str, int] = {}
            found: list[ErrorRecord] = []
            for instances, errors in _stream_parts(items(), max(1, part_size)):
                stored_at = _stored_at(conn, instances)
                batch = store_encode.prepare(instances, errors, stored_at)
                found += batch.errors[len(errors) :]
                missing = batch.module_types - type_ids.keys()
                if missing:
                    type_ids.update(store_write.ensure_module_types(conn, missing))
                found += store_write.write(conn, batch, type_ids, state)
            return found

        return self._write(work)

    def screen(
        self,
        instances: Sequence[InstanceRecord],
        earlier: Mapping[str, str] | None = None,
    ) -> tuple[list[InstanceRecord], list[ErrorRecord]]:
        """Which of ``instances`` a :meth:`write_batch` of them would store.

        Reads the store, writes nothing.  Returns the records it would store
        (their search attributes made storable) and an error for each of the
        others: ``invalid`` (a UID longer than 64 characters...), or
        ``duplicate`` (a SOP Instance UID stored from another location, or
        seen earlier in ``instances``, or in ``earlier``, from another
        location).  The indexer screens what it collects before it decides a
        batch is full, so that only instances the store keeps count towards
        its size.

        Args:
            instances: the records to screen.
            earlier: ``{SOP Instance UID: location}`` of the records screened
                before for the same batch.
        """
        stored_at = self._stored_at(instances)
        return store_encode.screen(instances, stored_at, earlier)

    def _stored_at(
        self, instances: Sequence[InstanceRecord], *, for_write: bool = False
    ) -> dict[str, str]:
        """``{SOP Instance UID: location}`` of those of ``instances`` stored."""
        with self._read(for_write=for_write) as conn:
            return _stored_at(conn, instances)

    def prune(
        self,
        roots: Sequence[str],
        seen: set[str],
        owns: Callable[[str], bool] | None = None,
        keep: Collection[str] = (),
    ) -> int:
        """Forget instances under ``roots`` whose location is not in ``seen``.

        A location is under a root when it equals the root or continues it
        after a ``/`` (a folder) or ``!/`` (a zip archive's members), so
        pruning ``/data/a`` leaves ``/data/ab.dcm`` alone.  With ``owns``,
        only the locations it accepts are candidates: a sharded indexer run
        passes its share's predicate and leaves the other shares' locations
        alone.  Locations under one of ``keep`` (by the same rule) are never
        candidates: the indexer passes the folders and archives it could
        not read.  Errors recorded for pruned locations go too.  Then series,
        studies and module values nothing refers to any more are deleted
        (also those left behind by re-indexed locations).

        Args:
            roots: the folders, archives or URL prefixes that were indexed.
            seen: every location found under ``roots`` in that run (of those
                ``owns`` accepts, when it is given).
            owns: which stored locations this run may forget; ``None``
                means every location under ``roots``.
            keep: locations whose content this run could not see (an
                unreadable folder, a damaged archive): what is stored under
                them stays.

        Returns:
            How many instances were deleted.
        """
        roots = [root for root in roots if root]
        return self._write(
            lambda conn: store_prune.prune(conn, roots, seen, owns, keep),
            exclusive=True,
        )

    def analyze(self) -> None:
        """Refresh the query planner's statistics after a bulk write.

        PostgreSQL plans a series load or a QIDO query from table statistics
        that autovacuum gathers only a while after a bulk index (measured:
        a 500-image series load took 1.5 s at 100,000 instances before
        ``ANALYZE``, about 50 ms after; docs/benchmarks.md).  Its
        ``ANALYZE`` samples a fixed number of rows per table, so this costs
        well under a second whatever the store's size.  SQLite plans from
        the indexes alone and needs nothing: a no-op there.
        """
        if self._is_sqlite:
            return
        names = ", ".join(table.name for table in t.metadata.sorted_tables)
        statement = sa.text(f"ANALYZE {names}")  # our own table names, no input
        self._write(lambda conn: conn.execute(statement))

    # -- mapping versions and reindex ---------------------------------------

    def stale_instances(self, current: str) -> int:
        """How many instances hold modules computed by another mapping.

        Args:
            current: the running mapping's version
                (``metastore.modules.MAPPING_VERSION``); instances stored
                by any other, or by an unknown one (before schema revision
                0004), are stale.
        """
        with self._read() as conn:
            return store_rewrite.count_stale(conn, current)

    def instances_to_reindex(
        self, current: str | None, *, after: int = 0, limit: int = 100
    ) -> list[StoredInstance]:
        """The next ``limit`` instances to recompute, by ``instances.id``.

        Each with its stored DICOM JSON, source and the imageIds of its
        stored frames: all :meth:`replace_modules` needs, no source file.

        Args:
            current: only instances stale against this mapping version;
                ``None``: every instance.
            after: only ids above this (the last id of the previous call).
            limit: at most this many.
        """
        with self._read() as conn:
            return store_rewrite.read_instances(conn, current, after, limit)

    def replace_modules(
        self, pairs: Sequence[tuple[StoredInstance, InstanceRecord]]
    ) -> tuple[store_rewrite.Replaced, list[ErrorRecord]]:
        """Replace the modules of stored instances, in one transaction.

        Each pair is an instance as :meth:`instances_to_reindex` read it and
        its record recomputed from that DICOM JSON (same SOP Instance UID,
        frames named by the stored imageIds).  An instance deleted or
        written again since it was read is left alone.  Images keep their
        rows; frames that became images are added, those no longer images
        deleted; each instance records the record's ``mapping_version``.
        Concurrent readers see the old modules of an image or the new ones,
        never a mix.  Replaced values stay until :meth:`sweep`.

        Returns:
            What was done (instances replaced, left alone, images added,
            removed and taken by another instance), and the records refused
            as :meth:`write_batch` would refuse them.
        """
        stored = {old.sop_instance_uid: old for old, _ in pairs}
        for old, new in pairs:
            if new.sop_instance_uid != old.sop_instance_uid:
                raise ValueError(
                    f"record {new.sop_instance_uid} is not instance "
                    f"{old.sop_instance_uid}"
                )
        batch = store_encode.prepare([new for _, new in pairs], [])

        def work(conn: Connection) -> store_rewrite.Replaced:
            type_ids = store_write.ensure_module_types(conn, batch.module_types)
            return store_rewrite.replace(conn, batch, type_ids, stored)

        return self._write(work), batch.errors

    def sweep(self) -> None:
        """Delete module values and imageId prefixes no row refers to any more.

        What :meth:`prune` sweeps after deleting, without deleting anything
        else first: after :meth:`replace_modules`.  Exclusive of writers, like
        prune.
        """
        self._write(store_rewrite.sweep, exclusive=True)

    def claim_wadors_root(self, root: str | None) -> None:
        """Record that imageIds are made under ``root``; refuse another root.

        A store's ``wadors:`` imageIds are made under one DICOMweb root
        (``--wadors-root``), or none (``wadouri:`` file imageIds); an index
        run under another would keep every unchanged source under the old
        one while it reported success.  The first run records its root (the
        ``settings`` row ``wadors_root``, revision 0005); later runs must
        give the same one (a final ``/`` aside) while the store holds any
        instance.  Runs that claim together take turns (PostgreSQL: the
        exclusive write lock), so of two concurrent first runs under
        different roots, one is refused.

        Args:
            root: the run's root, or ``None`` for a run without one.

        Raises:
            WadorsRootError: the store holds instances made under another
                root (or without one, or with one when ``root`` is
                ``None``); the message says how to go on.
        """
        root = None if root is None else root.removesuffix("/")
        s = t.settings
        select = sa.select(s.c.value).where(s.c.name == WADORS_ROOT_SETTING)
        with self._read() as conn:
            row = conn.execute(select).first()
        if row is not None and row.value == root:
            return  # the common case, without a write

        def work(conn: Connection) -> None:
            row = conn.execute(select).first()
            if row is None:
                conn.execute(sa.insert(s).values(name=WADORS_ROOT_SETTING, value=root))
            elif row.value != root:
                held = conn.execute(sa.select(t.instances.c.id).limit(1)).first()
                if held is not None:
                    raise WadorsRootError(_root_refusal(row.value, root))
                where = s.c.name == WADORS_ROOT_SETTING
                conn.execute(sa.update(s).where(where).values(value=root))

        self._write(work, exclusive=True)

    def errors(self, kinds: Collection[str] | None = None) -> list[ErrorRecord]:
        """The recorded errors, oldest first.

        Args:
            kinds: only these kinds (``"unreadable"``, ``"invalid"``,
                ``"duplicate"``); ``None``: every kind.

        Raises:
            QueryError: an unknown kind.
        """
        e = t.index_errors
        stmt = sa.select(e.c.location, e.c.kind, e.c.reason).order_by(e.c.id)
        if kinds is not None:
            unknown = sorted(set(kinds) - store_encode.ERROR_KINDS)
            if unknown:
                valid = ", ".join(sorted(store_encode.ERROR_KINDS))
                raise QueryError(f"unknown error kind {unknown[0]!r}; kinds: {valid}")
            stmt = stmt.where(e.c.kind.in_(sorted(kinds)))
        with self._read() as conn:
            return [ErrorRecord(*row) for row in conn.execute(stmt)]

    # -- read side ---------------------------------------------------------

    def image_modules(
        self,
        image_id: str,
        *,
        shared: dict[tuple[bytes, bytes | None], ModuleValue] | None = None,
    ) -> dict[str, ModuleValue] | None:
        """Every stored module of one image, or ``None`` if the image is unknown.

        The values are new objects, decoded for this call, unless ``shared``
        is given: a dict the caller keeps (and bounds) across calls, in which
        values are remembered by their stored bytes, so the images sharing a
        value (patient, study, series modules) get the *same* object.

        Args:
            image_id: the imageId as stored.
            shared: see above; treat the values as read-only then.
        """
        if not store_encode.is_storable(image_id):
            return None  # never stored; and the driver could not send it
        params = {"key": store_encode.image_key(image_id), "image_id": image_id}
        with self._read() as conn:
            rows = conn.execute(store_read.IMAGE_STATEMENT, params).all()
            if not rows:
                return None
            names = self._names(conn, rows)
        decode = store_read.Decoder(shared)
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
        if not store_encode.is_storable(series_instance_uid):
            return {}  # never stored; and the driver could not send it
        # Pausing the cyclic GC: thousands of new dicts would trigger
        # collections that walk everything already cached (up to 2x slower).
        with gc_paused(), self._read() as conn:
            # Names first: a composite's references are filled in by name.
            names = self._type_names or self._type_names_now(conn)
            store_read.no_jit(conn)
            rows = conn.execute(
                store_read.series_statement(self.engine.dialect.name),
                {"uid": series_instance_uid},
            )
            return store_read.assemble_series(
                rows, names, lambda: self._type_names_now(conn)
            )

    def nearby_image_modules(
        self, image_id: str, limit: int
    ) -> dict[str, dict[str, ModuleValue]]:
        """``{image_id: {module type: value}}`` for an image and its neighbours.

        One query: the ``limit`` images of ``image_id``'s series nearest to
        it in stack order ((0020,0013) InstanceNumber, unnumbered last, then
        (0008,0018) SOPInstanceUID, then frame; ties to the earlier image),
        ``image_id`` among them; the whole series when it has at most
        ``limit`` images.  ``{}`` for an unknown imageId.  Values are shared
        as :meth:`series_image_modules` shares them: treat them as read-only.

        Args:
            image_id: the imageId as stored.
            limit: how many images at most (at least 1).
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if not store_encode.is_storable(image_id):
            return {}  # never stored; and the driver could not send it
        params = {
            "key": store_encode.image_key(image_id),
            "image_id": image_id,
            "limit": limit,
        }
        with gc_paused(), self._read() as conn:
            names = self._type_names or self._type_names_now(conn)
            store_read.no_jit(conn)
            rows = conn.execute(
                store_read.nearby_statement(self.engine.dialect.name), params
            )
            return store_read.assemble_series(
                rows, names, lambda: self._type_names_now(conn)
            )

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
        Each dict has its module types in code point order of their names,
        so the same store exports the same bytes on either backend, however
        its rows lie on disk.

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
            stmt = store_read.with_modules(
                sa.select(image_id).select_from(
                    img.join(prefix, prefix.c.id == img.c.prefix_id)
                ),
                img.c.id,
                types,
            ).order_by(image_id)
            result = conn.execution_options(yield_per=2000).execute(stmt)
            decode = store_read.Decoder()
            current: str | None = None
            values: dict[str, ModuleValue] = {}
            for image_id, type_id, value_id, blob, base_id, base in result:
                if image_id != current:
                    if current is not None:
                        yield current, _by_name(values)
                    current, values = image_id, {}
                    decode.trim(50_000)
                if type_id is not None:
                    values[names[type_id]] = decode(
                        names[type_id], value_id, blob, base_id, base
                    )
            if current is not None:
                yield current, _by_name(values)

    def query(
        self,
        level: Level,
        filters: Mapping[str, FilterValue] | None = None,
        *,
        include: Sequence[str] | Literal["all"] = (),
        limit: int | None = None,
        offset: int = 0,
        fuzzy: bool = False,
    ) -> Iterator[DicomJson]:
        """Find studies, series or instances as QIDO-RS does; stream DICOM JSON rows.

        The query is checked before this returns (a bad one raises here);
        the rows are read when iterated, a chunk at a time (a server-side
        cursor on PostgreSQL), so memory stays flat for any result size.
        The iterator holds one pooled connection until it is exhausted or
        closed; the store stays usable meanwhile.  Matching rules per VR,
        ordering and what is indexed: ``docs/query.md``.

        Args:
            level: ``"studies"``, ``"series"`` or ``"instances"``.
            filters: ``{attribute: value}``; the attribute is a keyword
                (``PatientName``), an 8-hex-digit tag (``00100010``) or a
                path into sequences (``RequestAttributesSequence.
                RequestedProcedureID``).
                Values as QIDO-RS gives them: one value, ``*``/``?``
                wildcards, UID lists (``a,b``; a list also means "any of"),
                date/time ranges (``20200101-20201231``, ``20200101-``,
                ``-20201231``), a ``datetime.date``; ``""`` and ``*`` match
                anything.  Parent UIDs filter lower levels.
            include: more attributes per row (keywords or tags, any of the
                stored DICOM JSON; for a study or series, from its first
                stored instance), or ``"all"`` for every stored attribute.
            limit: at most this many rows.
            offset: skip this many matching rows first.
            fuzzy: person names also ignore accents and match any name
                component by prefix (``jose`` finds ``Gómez^José``).

        Returns:
            An iterator of DICOM JSON objects (``{"0020000D": {"vr": "UI",
            "Value": [...]}, ...}``) in a fixed order: studies by date, time
            and UID; series by study UID, series number and UID; instances
            by study UID, series number, series UID, instance number and UID.
            Each row has the level's required QIDO-RS return attributes the
            store keeps, the computed counts and modalities, the UIDs of its
            parents, and what ``include`` names.

        Raises:
            QueryError: an unknown level or attribute, a malformed value or
                range, a negative limit or offset (the message names it).
        """
        p = store_qido.plan(
            self.engine.dialect.name, level, filters, include, limit, offset, fuzzy
        )
        return self._rows(p)

    def _rows(self, p: Any) -> Iterator[DicomJson]:
        """Stream a planned query's rows (:meth:`query`) inside :meth:`_read`."""
        with self._read() as conn:
            yield from store_qido.run(conn, p)

    def stats(self) -> dict[str, int | None]:
        """Row counts and the database size in bytes (``None`` if unknown).

        ``errors`` counts the sources and instances that failed (kinds
        ``unreadable`` and ``invalid``); ``duplicates`` the instances not
        stored because their SOP Instance UID is stored from another
        source, which are no failure.
        """
        tables = {
            "studies": t.studies,
            "series": t.series,
            "instances": t.instances,
            "images": t.images,
            "module_values": t.module_values,
            "image_modules": t.image_modules,
            "sources": t.sources,
        }
        out: dict[str, int | None] = {}
        e = t.index_errors
        duplicate = e.c.kind == "duplicate"
        with self._read() as conn:
            for name, table in tables.items():
                stmt = sa.select(sa.func.count()).select_from(table)
                out[name] = int(conn.execute(stmt).scalar_one())
            for name, where in (("errors", ~duplicate), ("duplicates", duplicate)):
                stmt = sa.select(sa.func.count()).select_from(e).where(where)
                out[name] = int(conn.execute(stmt).scalar_one())
            out["database_bytes"] = store_query.database_bytes(conn)
        return out

    def resolve(self, ref: str, frame: int | None = None) -> ImageRef:
        """The stored image a reference names, in any of its spellings.

        ``ref`` is an imageId in any form Cornerstone resolves to the same
        image (the stored string; ``wadouri:`` without ``?frame=N`` for
        frame 1, or with ``&frame=N``; ``dicomweb:`` for ``wadouri:``;
        ``wadors:`` without ``/frames/N``), the path of an indexed file or
        an archive member (``a.zip!/dir/x.dcm``), relative or absolute, a
        ``file:`` URI, or a (0008,0018) SOP Instance UID.  A ``wadors:``
        imageId under another DICOMweb root than the stored one is another
        server's image: see :class:`DatabaseProvider`'s ``wadors_root``.

        Args:
            ref: the reference.
            frame: the 1-based frame; ``None``: the frame ``ref`` names, else 1.

        Returns:
            The stored imageId of that frame, its SOP Instance UID and frame.

        Raises:
            InvalidImageIdError: ``ref`` has an imageId scheme but is malformed.
            AmbiguousReferenceError: ``ref`` names another frame than
                ``frame``, or a file holding several instances.
            ImageNotFoundError: nothing stored answers to ``ref`` (the
                message says what the store holds instead, if anything).
        """
        with self._read() as conn:
            return store_refs.resolve(conn, ref, frame)

    def image_id_for(
        self,
        sop_instance_uid: str,
        frame: int = 1,
        *,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
    ) -> str | None:
        """The stored imageId of one frame of an instance, whatever its form.

        ``None`` when the instance is not stored, is stored in another study
        or series than the UIDs given, or has no image for that frame.
        """
        with self._read() as conn:
            return store_refs.image_id_for(
                conn, sop_instance_uid, frame, study_instance_uid, series_instance_uid
            )

    def dataset(
        self,
        sop_instance_uid: str,
        bulk_data: Callable[[str, str, str], Any] | None = None,
    ) -> pydicom.Dataset | None:
        """The stored DICOM JSON of one instance as a pydicom ``Dataset``.

        It holds every element the file held before its pixel data
        (``docs/indexing.md``); (0002,0010) TransferSyntaxUID is put in
        ``file_meta``.  ``None`` if the instance is unknown.

        Args:
            sop_instance_uid: (0008,0018) SOPInstanceUID of the instance.
            bulk_data: called as ``bulk_data(tag, vr, uri)`` for each element
                stored as a ``BulkDataURI`` (Pixel Data among them); returns
                its value.  Default: such elements are present and empty
                (metastore stores no pixels).
        """
        instance = self.dicom_json(sop_instance_uid)
        if instance is None:
            return None
        import pydicom

        handler = bulk_data or (lambda tag, vr, uri: None)
        meta = {k: v for k, v in instance.items() if k.startswith("0002")}
        ds = pydicom.Dataset.from_json(
            {k: v for k, v in instance.items() if k not in meta}, handler
        )
        if meta:
            ds.file_meta = pydicom.dataset.FileMetaDataset(
                pydicom.Dataset.from_json(meta)
            )
        return ds

    def image_ids(self, sop_instance_uid: str) -> list[str]:
        """Every stored imageId of an instance (one per frame, frame 1 first).

        ``[]`` when the instance is not stored.
        """
        with self._read() as conn:
            return store_refs.image_ids(conn, sop_instance_uid)

    def dicom_json(self, sop_instance_uid: str) -> DicomJson | None:
        """The stored DICOM JSON of one instance, or ``None`` if unknown."""
        if not store_encode.is_storable(sop_instance_uid):
            return None  # never stored; and the driver could not send it
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

    def dicom_json_texts(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> Iterator[tuple[str, str, bytes]]:
        """Stream ``(series UID, SOP UID, JSON text)`` of a study's instances.

        The stored DICOM JSON of every instance of the study, of one of its
        series (``series_instance_uid``), or of one instance of that series
        (both UIDs), as JSON text, without building the values: series by
        series (SeriesNumber, then UID), instances by InstanceNumber then
        UID.  Rows are fetched in chunks, so a big study streams in flat
        memory.  Nothing for UIDs the store does not hold, or that do not
        belong together.

        Raises:
            ValueError: ``sop_instance_uid`` without ``series_instance_uid``.
        """
        if sop_instance_uid is not None and series_instance_uid is None:
            raise ValueError("sop_instance_uid needs series_instance_uid")
        uids = (study_instance_uid, series_instance_uid, sop_instance_uid)
        if not all(uid is None or store_encode.is_storable(uid) for uid in uids):
            return  # never stored; and the driver could not send it
        stmt = store_read.dicom_json_statement(
            series_instance_uid is not None, sop_instance_uid is not None
        )
        params = {
            "study": study_instance_uid,
            "series": series_instance_uid,
            "sop": sop_instance_uid,
        }
        with self._read() as conn:
            rows = conn.execution_options(yield_per=200).execute(stmt, params)
            yield from store_read.dicom_json_texts(rows)

    def series_dicom_json(
        self, study_instance_uid: str, series_instance_uid: str
    ) -> Iterator[DicomJson]:
        """Stream the stored DICOM JSON of every instance of one series.

        One statement for the whole series (see :meth:`dicom_json_texts`
        for the order), where :meth:`dicom_json` per instance costs one
        each.  Nothing when the series is not in that study.
        """
        texts = self.dicom_json_texts(study_instance_uid, series_instance_uid)
        for _, _, text in texts:
            yield orjson.loads(text)

    def instance_source(self, sop_instance_uid: str) -> InstanceSource | None:
        """Where one instance was indexed from, or ``None`` if unknown."""
        if not store_encode.is_storable(sop_instance_uid):
            return None  # never stored; and the driver could not send it
        with self._read() as conn:
            row = conn.execute(
                store_read.INSTANCE_SOURCE_STATEMENT, {"sop": sop_instance_uid}
            ).first()
        return None if row is None else InstanceSource(*row)

    def series_sources(self, study: str, series: str) -> dict[str, InstanceSource]:
        """:meth:`instance_source` of every instance of a series, by SOP UID.

        One statement for a whole series (a viewer asks for its frames one
        instance at a time); empty when the series is not in that study.
        """
        if not (store_encode.is_storable(study) and store_encode.is_storable(series)):
            return {}
        with self._read() as conn:
            rows = conn.execute(
                store_read.SERIES_SOURCES_STATEMENT,
                {"study": study, "series": series},
            ).all()
        return {row[0]: InstanceSource(*row[1:]) for row in rows}


class InstanceSource(NamedTuple):
    """Where an instance was indexed from (:meth:`Store.instance_source`)."""

    study_instance_uid: str
    series_instance_uid: str
    number_of_frames: int
    #: ``sources.location``: a path, or ``archive.zip!/member``.
    location: str
    #: Size in bytes (of the archive, for a member) when it was indexed.
    size: int
    #: Modification time in nanoseconds (of the archive) when it was indexed.
    mtime_ns: int


#: The ``settings`` row of the DICOMweb root (:meth:`Store.claim_wadors_root`).
WADORS_ROOT_SETTING = "wadors_root"


def _root_refusal(stored: str | None, root: str | None) -> str:
    """Why an index run under ``root`` is refused, and how to go on."""
    made = (
        "without --wadors-root (wadouri: file imageIds)"
        if stored is None
        else f"under --wadors-root {stored}"
    )
    asked = "without --wadors-root" if root is None else f"under --wadors-root {root}"
    again = (
        "without --wadors-root" if stored is None else f"with --wadors-root {stored}"
    )
    return (
        f"the imageIds of this store were made {made}; indexing {asked} would "
        "mix two roots (sources already stored keep the old one): index "
        f"{again}, or into another database (a viewer using another root is "
        "answered by DatabaseProvider(url, wadors_root=ROOT))"
    )


def _by_name(values: dict[str, ModuleValue]) -> dict[str, ModuleValue]:
    """``values`` with its keys sorted.

    An image's rows come in the order they lie on disk: module type id
    order on SQLite (ids depend on which batch met a type first), physical
    order on PostgreSQL (changed by any rewrite or concurrent writer).
    """
    return {name: values[name] for name in sorted(values)}


def _stored_at(conn: Connection, instances: Sequence[InstanceRecord]) -> dict[str, str]:
    """``{SOP Instance UID: location}`` of those of ``instances`` stored."""
    sops = [
        r.sop_instance_uid
        for r in instances
        if len(r.sop_instance_uid) <= store_encode.MAX_UID
        and store_encode.is_storable(r.sop_instance_uid)
    ]
    if not sops:
        return {}
    found: dict[str, str] = {}
    if conn.dialect.name == "sqlite":  # twice a batch: no per-key SQLAlchemy work
        sql = (
            "SELECT i.sop_instance_uid, s.location FROM instances AS i "
            "JOIN sources AS s ON s.id = i.source_id WHERE i.sop_instance_uid IN {keys}"
        )
        for text, params in store_write.sqlite_in(sql, sorted(set(sops))):
            found.update((sop, loc) for sop, loc in conn.exec_driver_sql(text, params))
        return found
    ins, src = t.instances, t.sources
    for where in store_write.key_in(conn, ins.c.sop_instance_uid, sorted(set(sops))):
        stmt = (
            sa.select(ins.c.sop_instance_uid, src.c.location)
            .join(src, src.c.id == ins.c.source_id)
            .where(where)
        )
        found.update((sop, loc) for sop, loc in conn.execute(stmt))
    return found


def _stream_parts(
    items: Iterable[InstanceRecord | ErrorRecord], size: int
) -> Iterator[tuple[list[InstanceRecord], list[ErrorRecord]]]:
    """``items`` as ``(instances, errors)`` parts of at most ``size`` each.

    A part also ends once its instances hold :data:`STREAM_PART_IMAGES`
    eager images (lazy images are written a chunk at a time anyway).
    """
    instances: list[InstanceRecord] = []
    errors: list[ErrorRecord] = []
    images = 0
    for item in items:
        if isinstance(item, ErrorRecord):
            errors.append(item)
        else:
            instances.append(item)
            if not isinstance(item.images, LazyImages):
                images += len(item.images)
        if (
            len(instances) >= size
            or len(errors) >= size
            or images >= STREAM_PART_IMAGES
        ):
            yield instances, errors
            instances, errors, images = [], [], 0
    if instances or errors:
        yield instances, errors
