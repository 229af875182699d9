"""The indexing pipeline: discovery, parallel reading, batched writes, the report.

:func:`index_paths` streams sources from ``metastore.index.discovery`` past the
store's known sources (unchanged ones are not read again), sends the rest in
chunks to worker processes (``metastore.index.workers``) that read them
(``metastore.index.read``), and writes what comes back through
``Store.write_batch``, one transaction per batch.  Memory stays
flat whatever the archive size: only a bounded number of chunks is in flight
and only one batch is held.  Returns an :class:`IndexReport`.

``shard=(K, N)`` keeps only the sources whose location hashes to share K of N
(``metastore.index.sharding``), so N processes cover an archive exactly once.  A
batch whose write loses the PostgreSQL connection is written again after a
reconnect (:data:`RECONNECT_ATTEMPTS`); a batch the database refuses is
written again source by source.  The store says which is which
(``ConnectionLostError``, ``DataRefusedError``).  The run's counts are kept
in a ``metastore.index.report.Tally``.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, TypeVar

from metastore.chunking import gc_paused
from metastore.errors import ConnectionLostError, DataRefusedError
from metastore.imageid import check_wadors_root
from metastore.index.discovery import Entry, discover, shadowed_error
from metastore.index.read import (
    NotDicom,
    ReadCache,
    SourceStream,
    Unreadable,
    read_entry,
)
from metastore.index.report import IndexInterrupted, IndexReport, Tally
from metastore.index.sharding import (
    ShardOwns,
    check_shard,
    in_shard,
)
from metastore.index.workers import map_chunks
from metastore.locations import legacy_location, location_of
from metastore.records import ErrorRecord, InstanceRecord, Outcome
from metastore.store.encode import EncodeMemo, pack

if TYPE_CHECKING:
    from metastore.store import Store

__all__ = ["DEFAULT_BATCH_SIZE", "index_paths"]

log = logging.getLogger(__name__)

#: Instances written per transaction (a crash loses at most one batch).
DEFAULT_BATCH_SIZE = 500
#: A batch is also written once it holds this many images (big multi-frames).
BATCH_IMAGES = 20_000
#: Instances collected past a full batch before they are screened (one
#: query for many sources, even in a long run of duplicates).
SCREEN_AT = 64
#: Sources per chunk.  A chunk is a run of discovered sources (those of it
#: that need reading) read by one worker task, encoded together
#: (``store_encode.pack``: each of its series compressed against a base of
#: its own) and written in one batch.  Cut on the discovery order, not on
#: what is left to read, a chunk a crash interrupted is the same chunk when
#: the run is done again.  A new folder starts a new chunk once a quarter of
#: one is filled.  Large enough that a base serves many siblings: chunks of
#: 16 made the database 5 % larger, of 128 (with the folder cuts) as large
#: as bases chosen per batch of 500 (scripts/bench_size.py).  A smaller
#: batch size makes chunks as small.
CHUNK_SIZE = 128
#: A chunk also ends after this many bytes of sources, so that a worker
#: task holds a bounded amount of what large files give (their DICOM JSON).
CHUNK_BYTES = 64 << 20
#: Seconds between two progress callbacks.
PROGRESS_INTERVAL = 0.5
#: A run that hands the store at least this many instances refreshes the
#: planner's statistics at its end (Store.analyze; PostgreSQL only).
ANALYZE_AFTER = 1_000
#: Writes of one batch (or of prune) when the PostgreSQL connection is lost.
RECONNECT_ATTEMPTS = 3
#: Seconds before the first reconnect; doubled for each further attempt.
RECONNECT_DELAY = 0.5

#: ``progress(report_so_far)``: called every :data:`PROGRESS_INTERVAL` and at the end.
ProgressCallback = Callable[["IndexReport"], None]

_T = TypeVar("_T")


class _Batches:
    """Collects outcomes and writes them to the store a batch at a time.

    All the instances of one chunk (:data:`CHUNK_SIZE`, whole sources) go
    into the same batch: the store replaces a changed source's rows in one
    transaction, and the rows the workers encoded together for a chunk
    (``store_encode.pack``) are written together.  A batch closes after the
    chunk that brings it to ``batch_size`` instances (or
    :data:`BATCH_IMAGES` images) *the store keeps*: what is collected is
    screened first (``Store.screen``, one query for many sources), and the
    instances it refuses (duplicates, invalid ones) are only reported.  A
    rerun after a crash, which reads the refused sources and the chunks not
    written again (they are not known), makes the same chunks of them, so
    it encodes and stores the rest as a clean run did.
    """

    def __init__(self, store: Store, batch_size: int, tally: Tally) -> None:
        self._store, self._size, self._tally = store, max(1, batch_size), tally
        #: The screened instances (the store keeps them), then the others.
        self._instances: list[InstanceRecord] = []
        self._screened = 0
        #: Images of the screened instances, and of the others.
        self._images = self._new_images = 0
        #: SOP Instance UID -> location of the screened instances.
        self._sops: dict[str, str] = {}
        self._errors: list[ErrorRecord] = []
        #: The sources of the instances not written yet (``Tally.pending``).
        self._locations: set[str] = set()
        #: Sources whose instances were all duplicates: what they held goes.
        self._replaced: list[str] = []
        #: Write transactions committed so far.
        self.written = 0
        #: The sources of the current batch, when given to :meth:`add`.
        self._entries: dict[str, Entry] = {}
        #: Sources with duplicates (of those given to :meth:`add`): how many.
        self.duplicates: dict[str, tuple[Entry, int]] = {}
        #: Those of them whose every instance was a duplicate (not indexed).
        self.only_duplicates: set[str] = set()
        #: The chunk of each collected source with instances, and the last one.
        self._chunk_of: dict[str, object] = {}
        self._chunk: object = None

    def add(
        self,
        instances: Iterable[InstanceRecord],
        errors: Iterable[ErrorRecord],
        entry: Entry | None = None,
        chunk: object = None,
    ) -> None:
        """Collect a source's instances and errors; write the batches now full.

        Args:
            instances: What the source holds.
            errors: Its errors (or errors of no source's, e.g. discovery's).
            entry: The source, to remember it (prune).
            chunk: The chunk it was read in (``None``: a chunk of its own).
                A batch is cut when a new chunk begins, so each is written
                whole.
        """
        if entry is not None:
            self._entries[entry.source.location] = entry
        instances = list(instances)
        if instances:
            if chunk is None:
                chunk = object()  # a chunk of its own
            if chunk != self._chunk:
                self._fill()  # every chunk collected so far is complete
                self._chunk = chunk
        for instance in instances:
            self._instances.append(instance)
            self._new_images += len(instance.images)
            self._locations.add(instance.source.location)
            self._chunk_of[instance.source.location] = chunk
        self._tally.pending = len(self._locations)
        self._errors.extend(errors)
        if len(self._errors) >= self._size:
            self._write_errors()

    def _fill(self) -> None:
        """Write the batches that what is collected fills (whole chunks)."""
        new = len(self._instances) - self._screened
        images = self._images + self._new_images
        full = len(self._instances) >= self._size or images >= BATCH_IMAGES
        if full and (
            new >= min(self._size, SCREEN_AT)
            or self._new_images >= BATCH_IMAGES // SCREEN_AT
        ):
            self._screen()
            while (cut := self._cut()) is not None:
                self._write(cut)

    def flush(self) -> None:
        """Write everything collected (at the end of a run)."""
        self._screen()
        while (cut := self._cut()) is not None:
            self._write(cut)
        if self._instances or self._errors or self._replaced:
            self._write(len(self._instances))

    def _screen(self) -> None:
        """Screen the instances added since the last time; drop the refused."""
        new = self._instances[self._screened :]
        if not new:
            return
        earlier = self._sops
        kept, refused = _reconnecting(
            self._store, lambda: self._store.screen(new, earlier)
        )
        self._instances[self._screened :] = kept
        self._screened = len(self._instances)
        self._images += sum(len(r.images) for r in kept)
        self._new_images = 0
        self._sops.update((r.sop_instance_uid, r.source.location) for r in kept)
        if refused:
            self._refused(new, kept, refused)
            self._pending({r.source.location for r in self._instances})

    def _pending(self, locations: set[str]) -> None:
        """The sources not written yet are ``locations`` (``Tally.pending``)."""
        self._locations = locations
        self._tally.pending = len(locations)

    def _refused(
        self,
        new: list[InstanceRecord],
        kept: list[InstanceRecord],
        refused: list[ErrorRecord],
    ) -> None:
        """Count and keep the errors of refused instances.

        A source none of whose instances the store keeps was not indexed
        after all: it is skipped if they were all duplicates (not a
        problem), else failed.
        """
        self._tally.written(refused)
        self._errors.extend(refused)
        self._note_duplicates(refused)
        kept_at = {r.source.location for r in kept}
        problems = {e.location for e in self._errors if e.kind != "duplicate"}
        duplicates = {e.location for e in refused if e.kind == "duplicate"}
        for location in {r.source.location for r in new} - kept_at:
            self._chunk_of.pop(location, None)
            only_duplicates = location not in problems
            self._tally.count("indexed", -1)
            self._tally.count("skipped" if only_duplicates else "failed")
            if location in duplicates:
                self._replaced.append(location)
            if only_duplicates and location in self._entries:
                self.only_duplicates.add(location)
            self._entries.pop(location, None)

    def _cut(self) -> int | None:
        """How many screened instances make the next batch, if that many are."""
        images = 0
        records = self._instances
        for i in range(self._screened):
            images += len(records[i].images)
            if i + 1 >= self._size or images >= BATCH_IMAGES:
                # the rest of this chunk (so of this source) comes along
                chunk_of = self._chunk_of
                chunk = chunk_of[records[i].source.location]
                end = i + 1
                while (
                    end < self._screened
                    and chunk_of[records[end].source.location] == chunk
                ):
                    end += 1
                return end
        return None

    def _write(self, cut: int) -> None:
        """Write the first ``cut`` instances with the errors of their batch."""
        instances = self._instances[:cut]
        self._instances = self._instances[cut:]
        self._screened = max(0, self._screened - cut)
        self._images -= sum(len(r.images) for r in instances)
        for instance in instances:
            self._sops.pop(instance.sop_instance_uid, None)
        # a location still collecting keeps its errors: writing it clears them
        pending = {r.source.location for r in self._instances}
        errors = [e for e in self._errors if e.location not in pending]
        self._errors = [e for e in self._errors if e.location in pending]
        self._commit(instances, errors)
        for location in {r.source.location for r in instances}:
            self._entries.pop(location, None)
            self._chunk_of.pop(location, None)
        self._pending(pending)

    def _write_errors(self) -> None:
        """Write the errors collected for sources that have no instance to write."""
        pending = {r.source.location for r in self._instances}
        errors = [e for e in self._errors if e.location not in pending]
        if errors:
            self._errors = [e for e in self._errors if e.location in pending]
            self._commit([], errors)

    def _commit(
        self, instances: list[InstanceRecord], errors: list[ErrorRecord]
    ) -> None:
        """One write transaction; count what it found.

        The sources all of whose instances were duplicates go with it.
        """
        replaced, self._replaced = self._replaced, []
        if not instances and not errors and not replaced:
            return
        try:
            found = _reconnecting(
                self._store,
                lambda: self._store.write_batch(instances, errors, replaced),
            )
        except DataRefusedError:
            found = self._write_each_source(instances, errors, replaced)
        self._tally.written(found)
        self._note_duplicates(found)
        self.written += 1

    def _note_duplicates(self, errors: list[ErrorRecord]) -> None:
        """Remember the sources (under prune) that had duplicates, and how many."""
        for error in errors:
            entry = self._entries.get(error.location)
            if error.kind == "duplicate" and entry is not None:
                _, n = self.duplicates.get(error.location, (entry, 0))
                self.duplicates[error.location] = (entry, n + 1)

    def stream(self, stream: SourceStream, *, keep: bool) -> str:
        """Write a source too large to hold (``status="stream"``) in its own batch.

        What came before it is written first (discovery order decides which
        copy of a duplicate is kept).  The source is read while it is
        written, a part at a time, in one transaction: it is stored whole or
        not at all.  ``keep``: remember it if it has duplicates (prune).
        The store screens it as it screens a batch: a source none of whose
        instances it keeps is skipped if they were all duplicates, else
        failed (as in :meth:`_refused`).

        Returns:
            Its outcome: ``indexed``, ``failed`` or ``skipped``.
        """
        self.flush()
        location = stream.location
        try:
            found = _reconnecting(
                self._store, lambda: self._store.write_stream(stream.items)
            )
        except NotDicom:
            self._tally.streamed("skipped", 0, 0, [], 0)
            return "skipped"
        except Unreadable as exc:
            error = ErrorRecord(location, "unreadable", _why(exc))
        except DataRefusedError as exc:
            why = f"the database refused it: {exc.reason}"
            error = ErrorRecord(location, "invalid", why)
        else:
            status = "indexed" if stream.instances else "failed"
            if status == "indexed" and not self._stored(location):
                problems = stream.error_count or any(
                    e.kind != "duplicate" for e in found
                )
                status = "failed" if problems else "skipped"
                if status == "skipped" and keep:
                    self.only_duplicates.add(location)
            self._tally.streamed(
                status,
                stream.instances,
                stream.images,
                stream.errors,
                stream.error_count,
            )
            self._tally.written(found)
            dups = sum(e.kind == "duplicate" for e in found)
            if keep and dups:
                self.duplicates[location] = (stream.entry, dups)
            self.written += 1
            return status
        self._tally.streamed("failed", 0, 0, [error], 1)
        self.add((), (error,))
        return "failed"

    def _stored(self, location: str) -> bool:
        """Whether the store holds ``location`` (it kept one of its instances)."""
        known = functools.partial(self._store.known_sources, [location])
        return location in _reconnecting(self._store, known)

    def _write_each_source(
        self,
        instances: list[InstanceRecord],
        errors: list[ErrorRecord],
        replaced: list[str],
    ) -> list[ErrorRecord]:
        """Write a batch the database refused, one source per transaction.

        The database refused some value of the batch (PostgreSQL's limits
        are stricter than SQLite's); the sources it still refuses alone are
        recorded as ``invalid`` with its reason, the others are stored, and
        the run goes on.
        """
        by_source: dict[str, list[InstanceRecord]] = {}
        for instance in instances:
            by_source.setdefault(instance.source.location, []).append(instance)
        found: list[ErrorRecord] = []
        refused: list[ErrorRecord] = []
        for location, group in by_source.items():
            try:
                write = functools.partial(self._store.write_batch, group, [])
                found += _reconnecting(self._store, write)
            except DataRefusedError as exc:
                why = f"the database refused it: {exc.reason}"
                refused.append(ErrorRecord(location, "invalid", why))
                self._tally.count("indexed", -1)
                self._tally.count("failed")
                self._tally.count("instances", -len(group))
                self._tally.count("images", -sum(len(i.images) for i in group))
        rest = [*errors, *refused]
        last = functools.partial(self._store.write_batch, [], rest, replaced)
        found += _reconnecting(self._store, last)
        return [*refused, *found]


def _why(exc: BaseException) -> str:
    """One line saying why a streamed source could not be read."""
    return " ".join(str(exc).split()) or type(exc).__name__


def index_paths(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    *,
    wadors_root: str | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prune: bool = False,
    progress: ProgressCallback | None = None,
    shard: tuple[int, int] | None = None,
) -> IndexReport:
    """Index files, folders, zip archives and DICOM JSON files into ``store``.

    Sources the store already has at the same size and modification time are
    not read again; changed ones replace their rows.  A source that cannot be
    read is reported (never fatal); an unusable database is.

    Args:
        store: Where to write.
        paths: Files, folders and zip archives (DICOM recognised by content).
        wadors_root: Make ``wadors:`` imageIds under this DICOMweb root for
            every source; without it, Part 10 files get ``wadouri:file://``
            imageIds and DICOM JSON files get ``wadors:`` imageIds under their
            own ``file://`` URI (docs/indexing.md).
        workers: Worker processes reading files; ``None`` means one per CPU,
            0 or 1 reads in this process.
        batch_size: Instances per write transaction.
        prune: Also remove from the store what is no longer under ``paths``;
            what could not be read (an unreadable folder, a damaged
            archive) is kept, and a path deleted since it was indexed (with
            sources stored under it) is forgotten whole (docs/indexing.md).
        progress: Called with the report so far, every
            :data:`PROGRESS_INTERVAL` seconds and once at the end.
        shard: ``(K, N)``: only the sources of share K of N (1-based; see
            :func:`shard_of`); the report counts those only, and ``prune``
            removes only locations of this share.

    Returns:
        The counts, errors and timing of the run.

    Raises:
        IndexInterrupted: Ctrl-C (a ``KeyboardInterrupt``) stopped the run;
            the batches committed before it are kept, the one being
            written is rolled back, and the exception's ``report`` and
            ``saved`` say how far it got.
        WadorsRootError: The store's imageIds were made under another
            ``wadors_root`` (or without one, or with one when this run has
            none): nothing is read or written (``Store.claim_wadors_root``).
        StoreError: The database cannot be read or written (a lost
            PostgreSQL connection is retried first).
        WorkerPoolError: Worker processes kept dying (after a dead one a
            fresh pool reads on and what its pool lost is read again alone,
            only a source that kills a process failing; see
            ``metastore.index.workers``); the batches committed before stay.
        ValueError: ``shard`` is not ``(K, N)`` with ``1 <= K <= N``, or
            ``wadors_root`` is not an http(s) URL with a host, without
            credentials, query or fragment
            (:func:`metastore.imageid.check_wadors_root`).
    """
    if shard is not None:
        shard = check_shard(*shard)
    if wadors_root is not None:
        check_wadors_root(wadors_root)
    tally = Tally()
    with _frozen_heap():
        try:
            return _index(
                store,
                paths,
                wadors_root,
                workers,
                batch_size,
                prune,
                progress,
                shard,
                tally,
            )
        except KeyboardInterrupt:
            # the batch being written rolled back with its transaction
            raise IndexInterrupted(tally.report(), tally.pending) from None


def _index(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    wadors_root: str | None,
    workers: int | None,
    batch_size: int,
    prune: bool,
    progress: ProgressCallback | None,
    shard: tuple[int, int] | None,
    tally: Tally,
) -> IndexReport:
    """:func:`index_paths`, its arguments checked, counting into ``tally``."""
    # one root per store: another would keep unchanged sources' old imageIds
    _reconnecting(store, lambda: store.claim_wadors_root(wadors_root))
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    # What the store knows the roots by (file names that are not UTF-8 are
    # escaped in locations, see metastore.locations).
    root_locations = [location_of(root) for root in roots]
    known = _reconnecting(store, lambda: store.known_sources(root_locations))
    batches = _Batches(store, batch_size, tally)
    # Locations to keep; only needed for prune.  Under a shard, prune may
    # forget only locations of this share (``owns``).  ``kept``: what
    # discovery could not read (folders, archives), whose stored content
    # prune must keep whatever the share.
    seen: set[str] = set()
    kept: set[str] = set()
    owns = None if shard is None else ShardOwns(*shard)
    note = seen.add if prune else _ignore
    # A source that failed is kept under its old spelling too (see _remember).
    note_failed = functools.partial(_remember, seen) if prune else _ignore
    if prune:
        # A root deleted since it was indexed: nothing to read, and prune
        # forgets what is stored under it (docs/indexing.md).
        gone = _deleted_roots(roots, root_locations, known)
        roots = [root for root in roots if root not in gone]
    found = discover(roots)
    if prune:
        found = _noting_unreadable(found, functools.partial(_remember, kept))
    if shard is not None:
        found = in_shard(found, *shard)
    # a batch holds whole chunks: smaller batches asked for, smaller chunks
    chunk_size = min(CHUNK_SIZE, max(1, batch_size))
    todo = _to_read(found, known, tally, batches, note, note_failed, chunk_size)
    root = wadors_root.removesuffix("/") if wadors_root else None
    next_call = time.perf_counter() + PROGRESS_INTERVAL
    if workers is None:
        workers = os.cpu_count() or 1
    streams = ReadCache()  # for the sources this process reads while writing
    try:
        for chunk, entry, outcome in _read_all(todo, root, workers):
            status: str = outcome.status
            if status == "stream":
                stream = SourceStream(entry, root, streams)
                status = batches.stream(stream, keep=prune)
            else:
                tally.outcome(outcome)
                # Under prune, sources with instances are remembered for the
                # batch they are in (bounded by it): one may be a duplicate.
                keep = prune and bool(outcome.instances)
                batches.add(
                    outcome.instances, outcome.errors, entry if keep else None, chunk
                )
            if status == "failed":
                note_failed(outcome.location)
            elif status != "skipped" or outcome.location in batches.only_duplicates:
                # a skipped source has no rows to keep, but for the errors
                # of its duplicates
                note(outcome.location)
            if progress is not None and time.perf_counter() >= next_call:
                progress(tally.report())
                next_call = time.perf_counter() + PROGRESS_INTERVAL
        batches.flush()
    finally:
        streams.close()
    if prune:
        pruned = _reconnecting(
            store, lambda: store.prune(root_locations, seen, owns=owns, keep=kept)
        )
        if pruned and batches.duplicates:
            _store_orphaned_duplicates(
                store, batches.duplicates, batches.only_duplicates, root, tally
            )
    report = tally.report()
    if report.instances >= ANALYZE_AFTER:
        # fresh statistics, or PostgreSQL plans series loads as for an
        # empty table until autovacuum gets to it (Store.analyze)
        _reconnecting(store, store.analyze)
    if progress is not None:
        progress(report)
    return report


def _deleted_roots(
    roots: list[str], root_locations: list[str], known: Mapping[str, tuple[int, int]]
) -> set[str]:
    """The roots that no longer exist and under which sources are stored.

    Only a name that is absent from a folder that can be read counts
    (``lstat`` says ENOENT): a dangling symlink, a path through a file, an
    unreadable parent are not deletions.  A path with nothing stored under
    it (mistyped) is not either: discovery reports it as unreadable.
    """
    gone: set[str] = set()
    for root, location in zip(roots, root_locations, strict=True):
        try:
            os.lstat(root)
        except FileNotFoundError:
            below = (location + "/", location + "!/")
            if any(k == location or k.startswith(below) for k in known):
                gone.add(root)
        except OSError:
            pass
    return gone


def _noting_unreadable(
    found: Iterator[Entry | ErrorRecord], note: Callable[[str], None]
) -> Iterator[Entry | ErrorRecord]:
    """Pass ``found`` on, noting where discovery could not read (for prune)."""
    for item in found:
        if isinstance(item, ErrorRecord):
            note(item.location)
        yield item


def _remember(locations: set[str], location: str) -> None:
    """Add ``location`` to ``locations``, with its spelling from before names
    ending in ``!`` were escaped (``metastore.locations.legacy_location``).

    For what could not be read: rows stored under the old spelling are
    converted only when the source is written again, so until then prune
    must keep them too.
    """
    locations.add(location)
    old = legacy_location(location)
    if old is not None:
        locations.add(old)


def _store_orphaned_duplicates(
    store: Store,
    duplicates: dict[str, tuple[Entry, int]],
    only_duplicates: set[str],
    root: str | None,
    tally: Tally,
) -> None:
    """After a prune, store the duplicates whose stored copy it removed.

    A duplicate found during the run was not stored because another source
    held its SOP Instance UID; if prune then forgot that source (deleted
    from the archive), the duplicate is now the only copy.  Each source with
    duplicates is read again and written: what is still held elsewhere is
    reported as a duplicate again, the rest is stored, and the report
    counts what the second write found instead of the first (a source
    counted as skipped for holding duplicates only is indexed once stored).
    """
    zips = ReadCache()
    try:
        for location, (entry, counted) in duplicates.items():
            outcome = read_entry(entry, root, zips)
            if outcome.status == "stream":
                stream = SourceStream(entry, root, zips)
                write = functools.partial(store.write_stream, stream.items)
            elif outcome.instances:
                write = functools.partial(store.write_batch, outcome.instances, [])
            else:
                continue
            try:
                found = _reconnecting(store, write)
            except (NotDicom, Unreadable):
                continue  # changed since it was read: the next run reads it
            tally.retract_duplicates(location, counted)
            tally.written(found)
            known = functools.partial(store.known_sources, [location])
            if location in only_duplicates and location in _reconnecting(store, known):
                tally.count("skipped", -1)
                tally.count("indexed")
    finally:
        zips.close()


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Keep the garbage collector off what exists before a run, during it.

    A run makes and drops many objects (unpickled results, batches), and
    each full collection walked the whole heap of imported modules again:
    ~12 % of the writing process's CPU.  Frozen (``gc.freeze``), those are
    skipped, and forked workers do not touch (copy) their pages for it.
    Unfrozen at the end; left alone if the caller froze objects itself.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _reconnecting(store: Store, work: Callable[[], _T]) -> _T:
    """Run ``work`` (one transaction), again after a lost PostgreSQL connection.

    A batch is one transaction, so a write cut by a dropped connection left
    nothing behind and is simply written again (rewriting a location is
    idempotent, should the commit have gone through).  Gives up after
    :data:`RECONNECT_ATTEMPTS` with the last :class:`ConnectionLostError`.
    """
    for attempt in range(1, RECONNECT_ATTEMPTS + 1):
        try:
            return work()
        except ConnectionLostError as exc:  # its text hides the URL's secrets
            if attempt == RECONNECT_ATTEMPTS:
                raise
            delay = RECONNECT_DELAY * 2 ** (attempt - 1)
            log.warning(
                "lost the connection to %s (%s); trying again in %.1f s "
                "(attempt %d of %d)",
                store.url,
                exc,
                delay,
                attempt + 1,
                RECONNECT_ATTEMPTS,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _to_read(
    found: Iterator[Entry | ErrorRecord],
    known: Mapping[str, tuple[int, int]],
    tally: Tally,
    batches: _Batches,
    note: Callable[[str], None],
    note_failed: Callable[[str], None],
    chunk_size: int,
) -> Iterator[tuple[int, Entry]]:
    """Count what needs no reading (unchanged, discovery errors); yield the rest.

    Each with the number of its chunk: ``found`` is cut into runs of
    ``chunk_size`` items or :data:`CHUNK_BYTES` bytes of sources, whatever
    of them needs reading (so the same tree makes the same chunks).
    """
    chunk = count = size = 0
    folder = ""
    for item in found:
        if isinstance(item, Entry):
            here = os.path.dirname(item.source.location)
            # a new folder (often a new series) starts a chunk of its own,
            # unless the chunk is still small: fewer bases for one series
            new_folder = here != folder and count >= chunk_size // 4
            folder = here
        else:
            new_folder = False
        if count == chunk_size or size >= CHUNK_BYTES or new_folder:
            chunk, count, size = chunk + 1, 0, 0
        count += 1
        if isinstance(item, Entry):
            size += max(0, item.source.size)
        if isinstance(item, ErrorRecord):
            tally.count("files_seen")
            tally.count("failed")
            tally.error(item)
            batches.add((), (item,))
            note_failed(item.location)
            continue
        source = item.source
        if known.get(source.location) == (source.size, source.mtime_ns):
            tally.count("files_seen")
            tally.count("unchanged")
            note(source.location)
            if item.shadowed:  # reported on every run, like a failed source
                error = shadowed_error(item)
                tally.error(error)
                batches.add((), (error,))
            continue
        yield chunk, item


def _ignore(location: str) -> None:
    """Forget a location (without prune nothing needs to remember it)."""


def _chunks(entries: Iterator[tuple[int, Entry]]) -> Iterator[tuple[int, list[Entry]]]:
    """The entries grouped by the chunk :func:`_to_read` gave each."""
    for key, group in groupby(entries, key=itemgetter(0)):
        yield key, [entry for _, entry in group]


def _read_all(
    entries: Iterator[tuple[int, Entry]], root: str | None, workers: int
) -> Iterator[tuple[int, Entry, Outcome]]:
    """Read every entry, in worker processes when there are enough of them.

    Yields each entry with its chunk and outcome, in discovery order
    whatever the number of workers (``metastore.index.workers``); chunks are
    read and encoded alike in both ways, so a run gives the same store with
    1 or N workers.
    """
    zips = ReadCache()  # for the chunks read in this process, if any
    try:
        yield from map_chunks(
            functools.partial(_read_chunk, root=root),
            _chunks(entries),
            workers,
            here=functools.partial(_read_chunk, root=root, zips=zips),
            crashed=_crashed,
        )
    finally:
        zips.close()


def _crashed(entry: Entry, reason: str) -> Outcome:
    """The outcome of an entry whose worker process failed."""
    location = entry.source.location
    return Outcome(
        location, "failed", errors=[ErrorRecord(location, "unreadable", reason)]
    )


# One per worker process (a pool lives for one run): consecutive chunks of one
# archive share the open zip, and folders are resolved once.
_WORKER_ZIPS = ReadCache()


def _read_chunk(
    chunk: list[Entry], root: str | None, zips: ReadCache = _WORKER_ZIPS
) -> list[Outcome]:
    """Worker task: read a chunk of entries, encoded for the store.

    The chunk's instances are encoded here down to their rows' bytes
    (``store_encode.pack``, siblings compressed against each other): that
    work stays off the writing process, and compressed bytes pickle far
    faster than nested dicts.

    The garbage collector is paused meanwhile: what a chunk makes lives
    until the chunk is packed and holds no reference cycles, so the
    collections its allocations set off only walked it again and again
    (~5 % of a worker's CPU on the perf archive).  It is dropped before the
    collector is back (the next collection then meets the packed outcomes
    only); any cycle an odd source leaves is collected after the chunk.
    """
    with gc_paused():
        return _read_packed(chunk, root, zips)


def _read_packed(
    chunk: list[Entry], root: str | None, zips: ReadCache
) -> list[Outcome]:
    """:func:`_read_chunk`'s reading and packing."""
    outcomes = [read_entry(entry, root, zips) for entry in chunk]
    records = pack([r for o in outcomes for r in o.instances], EncodeMemo())
    out: list[Outcome] = []
    start = 0
    for outcome in outcomes:
        if outcome.instances:
            end = start + len(outcome.instances)
            outcome = replace(outcome, instances=records[start:end])
            start = end
        out.append(outcome)
    return out
