"""The indexing pipeline: discovery, parallel reading, batched writes, the report.

:func:`index_paths` streams sources from ``metastore.discovery`` past the
store's known sources (unchanged ones are not read again), sends the rest in
chunks to worker processes (``metastore.reading``), and writes what comes
back through ``Store.write_batch``, one transaction per batch.  Memory stays
flat whatever the archive size: only a bounded number of chunks is in flight
and only one batch is held.  Returns an :class:`IndexReport`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import chain, islice
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING

from metastore.discovery import Entry, discover
from metastore.reading import Outcome, ZipCache, read_entry
from metastore.records import ErrorRecord, InstanceRecord

if TYPE_CHECKING:
    from metastore.store import Store

__all__ = ["DEFAULT_BATCH_SIZE", "IndexReport", "index_paths"]

log = logging.getLogger(__name__)

#: Instances written per transaction (a crash loses at most one batch).
DEFAULT_BATCH_SIZE = 500
#: A batch is also written once it holds this many images (big multi-frames).
BATCH_IMAGES = 20_000
#: Sources per worker task: enough to make inter-process traffic cheap.
CHUNK_SIZE = 16
#: Tasks queued per worker beyond the one it runs: bounds memory in flight.
TASKS_PER_WORKER = 3
#: How many errors an :class:`IndexReport` keeps (``error_count`` has them all).
MAX_REPORTED_ERRORS = 100
#: Seconds between two progress callbacks.
PROGRESS_INTERVAL = 0.5

#: ``progress(report_so_far)``: called every :data:`PROGRESS_INTERVAL` and at the end.
ProgressCallback = Callable[["IndexReport"], None]


@dataclass(frozen=True, slots=True)
class IndexReport:
    """What an indexing run did; every count is of sources (files or members).

    ``files_seen == indexed + unchanged + skipped + failed``.  A DICOM JSON
    file with some invalid instances counts as indexed; its invalid instances
    are in ``errors``.
    """

    #: Sources found under the given paths (files, archive members).
    files_seen: int = 0
    #: Sources read and stored (new or changed).
    indexed: int = 0
    #: Sources skipped because the store already has them at this size and time.
    unchanged: int = 0
    #: Sources that are not DICOM (or are DICOMDIRs): not an error.
    skipped: int = 0
    #: Sources that look like DICOM but could not be read, or held no valid instance.
    failed: int = 0
    #: Instances handed to the store.
    instances: int = 0
    #: Instances not stored because another source has the same SOP Instance UID.
    duplicates: int = 0
    #: Images (frames) of the instances handed to the store.
    images: int = 0
    #: Wall-clock seconds.
    seconds: float = 0.0
    #: The first :data:`MAX_REPORTED_ERRORS` problems (unreadable, invalid, duplicate).
    errors: tuple[ErrorRecord, ...] = ()
    #: How many problems there were in all.
    error_count: int = 0
    #: Problems other than duplicates: unreadable sources and invalid instances.
    problem_count: int = 0

    @property
    def rate(self) -> float:
        """Sources per second (seen, including unchanged and skipped ones)."""
        return self.files_seen / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when nothing failed (duplicates and skipped files are fine)."""
        return self.problem_count == 0

    @property
    def exit_status(self) -> int:
        """The ``metastore index`` exit status: 0 if :attr:`ok`, else 1."""
        return 0 if self.ok else 1


@dataclass
class _Tally:
    """The mutable counts behind an :class:`IndexReport`."""

    started: float = field(default_factory=time.perf_counter)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[ErrorRecord] = field(default_factory=list)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def error(self, error: ErrorRecord) -> None:
        self.count("error_count")
        if error.kind != "duplicate":
            self.count("problem_count")
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def outcome(self, outcome: Outcome) -> None:
        self.count("files_seen")
        self.count(outcome.status)
        self.count("instances", len(outcome.instances))
        self.count("images", sum(len(i.images) for i in outcome.instances))
        for error in outcome.errors:
            self.error(error)

    def report(self) -> IndexReport:
        return IndexReport(
            seconds=time.perf_counter() - self.started,
            errors=tuple(self.errors),
            **self.counts,
        )


class _Batches:
    """Collects outcomes and writes them to the store a batch at a time.

    All the instances of one source go into the same batch, so the store
    replaces a changed source's rows in one transaction.
    """

    def __init__(self, store: Store, batch_size: int, tally: _Tally) -> None:
        self._store, self._size, self._tally = store, max(1, batch_size), tally
        self._instances: list[InstanceRecord] = []
        self._errors: list[ErrorRecord] = []
        self._images = 0

    def add(
        self, instances: Iterable[InstanceRecord], errors: Iterable[ErrorRecord]
    ) -> None:
        for instance in instances:
            self._instances.append(instance)
            self._images += len(instance.images)
        self._errors.extend(errors)
        if (
            len(self._instances) >= self._size
            or len(self._errors) >= self._size
            or self._images >= BATCH_IMAGES
        ):
            self.flush()

    def flush(self) -> None:
        if not self._instances and not self._errors:
            return
        duplicates = self._store.write_batch(self._instances, self._errors)
        self._tally.count("duplicates", len(duplicates))
        for duplicate in duplicates:
            self._tally.error(duplicate)
        self._instances, self._errors, self._images = [], [], 0


def index_paths(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    *,
    wadors_root: str | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    prune: bool = False,
    progress: ProgressCallback | None = None,
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
        prune: Also remove from the store what is no longer under ``paths``.
        progress: Called with the report so far, every
            :data:`PROGRESS_INTERVAL` seconds and once at the end.

    Returns:
        The counts, errors and timing of the run.

    Raises:
        StoreError: The database cannot be read or written.
    """
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    tally = _Tally()
    known = store.known_sources()
    batches = _Batches(store, batch_size, tally)
    seen: set[str] = set()  # locations to keep; only needed for prune
    note = seen.add if prune else _ignore
    todo = _to_read(discover(roots), known, tally, batches, note)
    root = wadors_root.removesuffix("/") if wadors_root else None
    next_call = time.perf_counter() + PROGRESS_INTERVAL
    if workers is None:
        workers = os.cpu_count() or 1
    for outcome in _read_all(todo, root, workers):
        tally.outcome(outcome)
        batches.add(outcome.instances, outcome.errors)
        if outcome.status != "skipped":  # a skipped source has no rows to keep
            note(outcome.location)
        if progress is not None and time.perf_counter() >= next_call:
            progress(tally.report())
            next_call = time.perf_counter() + PROGRESS_INTERVAL
    batches.flush()
    if prune:
        store.prune(roots, seen)
    report = tally.report()
    if progress is not None:
        progress(report)
    return report


def _to_read(
    found: Iterator[Entry | ErrorRecord],
    known: Mapping[str, tuple[int, int]],
    tally: _Tally,
    batches: _Batches,
    note: Callable[[str], None],
) -> Iterator[Entry]:
    """Count what needs no reading (unchanged, discovery errors); yield the rest."""
    for item in found:
        if isinstance(item, ErrorRecord):
            tally.count("files_seen")
            tally.count("failed")
            tally.error(item)
            batches.add((), (item,))
            note(item.location)
            continue
        source = item.source
        if known.get(source.location) == (source.size, source.mtime_ns):
            tally.count("files_seen")
            tally.count("unchanged")
            note(source.location)
            continue
        yield item


def _ignore(location: str) -> None:
    """Forget a location (without prune nothing needs to remember it)."""


def _read_all(
    entries: Iterator[Entry], root: str | None, workers: int
) -> Iterator[Outcome]:
    """Read every entry, in worker processes when there are enough of them.

    Outcomes come back in discovery order whatever the number of workers, so
    a run gives the same store with 1 or N workers.
    """
    chunks = _chunks(entries, CHUNK_SIZE)
    if workers <= 1:
        yield from _read_here(chunks, root)
        return
    first = list(islice(chunks, 2))
    if len(first) < 2:  # a tiny job: starting processes would cost more
        yield from _read_here(iter(first), root)
        return
    context = _process_context()
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)
    try:
        pending: deque[tuple[list[Entry], Future[list[Outcome]]]] = deque()
        for chunk in chain(first, chunks):
            pending.append((chunk, pool.submit(_read_chunk, chunk, root)))
            while len(pending) > workers * TASKS_PER_WORKER:
                yield from _result(*pending.popleft())
        while pending:
            yield from _result(*pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _process_context() -> BaseContext:
    """Fork where that is safe (Linux, no other threads): workers start at once.

    Elsewhere the platform's default; forked workers inherit the parent's
    database connections but never use them, and exit without finalisers.
    """
    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _result(chunk: list[Entry], future: Future[list[Outcome]]) -> list[Outcome]:
    try:
        return future.result()
    except Exception as exc:  # a worker died (out of memory, a crash in a codec)
        reason = f"worker process failed: {type(exc).__name__}: {exc}"
        return [_crashed(entry, reason) for entry in chunk]


def _crashed(entry: Entry, reason: str) -> Outcome:
    location = entry.source.location
    return Outcome(
        location, "failed", errors=[ErrorRecord(location, "unreadable", reason)]
    )


def _read_here(chunks: Iterator[list[Entry]], root: str | None) -> Iterator[Outcome]:
    zips = ZipCache()
    try:
        for chunk in chunks:
            for entry in chunk:
                yield read_entry(entry, root, zips)
    finally:
        zips.close()


def _worker_init() -> None:
    """Leave Ctrl-C to the main process, which stops the pool cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# One per worker process: consecutive chunks of one archive share the open zip.
_WORKER_ZIPS = ZipCache()


def _read_chunk(chunk: list[Entry], root: str | None) -> list[Outcome]:
    """Worker task: read a chunk of entries."""
    return [read_entry(entry, root, _WORKER_ZIPS) for entry in chunk]


def _chunks(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    while chunk := list(islice(entries, size)):
        yield chunk
