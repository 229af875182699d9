"""The indexing pipeline: discovery, parallel reading, batched writes, the report.

:func:`index_paths` streams sources from ``metastore.discovery`` past the
store's known sources (unchanged ones are not read again), sends the rest in
chunks to worker processes (``metastore.reading``), and writes what comes
back through ``Store.write_batch``, one transaction per batch.  Memory stays
flat whatever the archive size: only a bounded number of chunks is in flight
and only one batch is held.  Returns an :class:`IndexReport`.

``shard=(K, N)`` keeps only the sources whose location hashes to share K of N
(:func:`shard_of`), so N processes cover an archive exactly once.  A batch
whose write loses the PostgreSQL connection is written again after a
reconnect (:data:`RECONNECT_ATTEMPTS`).  The test hooks that make crash tests
deterministic (``METASTORE_TEST_*`` environment variables) are all in
:class:`TestHooks`.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import hashlib
import logging
import multiprocessing
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import chain, islice
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from metastore.discovery import Entry, discover, location_of
from metastore.errors import StoreError
from metastore.reading import Outcome, ReadCache, read_entry
from metastore.records import ErrorRecord, InstanceRecord
from metastore.store_encode import EncodeMemo, pre_encode

if TYPE_CHECKING:
    from metastore.store import Store

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "IndexReport",
    "TestHooks",
    "index_paths",
    "parse_shard",
    "shard_of",
]

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
#: Writes of one batch (or of prune) when the PostgreSQL connection is lost.
RECONNECT_ATTEMPTS = 3
#: Seconds before the first reconnect; doubled for each further attempt.
RECONNECT_DELAY = 0.5

#: ``progress(report_so_far)``: called every :data:`PROGRESS_INTERVAL` and at the end.
ProgressCallback = Callable[["IndexReport"], None]

_T = TypeVar("_T")


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
        #: Batches committed so far.
        self.written = 0

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
        instances, errors = self._instances, self._errors
        try:
            found = _reconnecting(
                self._store, lambda: self._store.write_batch(instances, errors)
            )
        except Exception as exc:
            if _refused(exc) is None:
                raise
            found = self._write_each_source(instances, errors)
        self._tally.count("duplicates", sum(e.kind == "duplicate" for e in found))
        for error in found:
            self._tally.error(error)
        self._instances, self._errors, self._images = [], [], 0
        self.written += 1
        TestHooks.get().batch_committed(self.written)

    def _write_each_source(
        self, instances: list[InstanceRecord], errors: list[ErrorRecord]
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
            except Exception as exc:
                reason = _refused(exc)
                if reason is None:
                    raise
                why = f"the database refused it: {reason}"
                refused.append(ErrorRecord(location, "invalid", why))
                self._tally.count("indexed", -1)
                self._tally.count("failed")
                self._tally.count("instances", -len(group))
                self._tally.count("images", -sum(len(i.images) for i in group))
        rest = [*errors, *refused]
        found += _reconnecting(self._store, lambda: self._store.write_batch([], rest))
        return [*refused, *found]


def _refused(exc: BaseException) -> str | None:
    """Why the database refused a batch's *data*, or ``None`` for other errors.

    A value it cannot take (PostgreSQL SQLSTATE class 22, data exception, or
    54000, a limit such as B-tree entry size; SQLite's DataError; a value the
    driver cannot encode) is the data's fault: retrying source by source
    finds the culprit.  Anything else (a lost or refused connection, a full
    disk, a lock) would fail every source alike, so it stops the run.
    """
    if isinstance(exc, UnicodeError | OverflowError):
        return f"{type(exc).__name__}: {exc}"
    orig = getattr(exc.__cause__, "orig", None) if isinstance(exc, StoreError) else None
    state = getattr(orig, "sqlstate", None) or ""
    if (
        state.startswith("22")
        or state == "54000"
        or isinstance(orig, sqlite3.DataError)
    ):
        return " ".join(str(orig).split()) or type(orig).__name__
    return None


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
        prune: Also remove from the store what is no longer under ``paths``.
        progress: Called with the report so far, every
            :data:`PROGRESS_INTERVAL` seconds and once at the end.
        shard: ``(K, N)``: only the sources of share K of N (1-based; see
            :func:`shard_of`); the report counts those only, and ``prune``
            removes only locations of this share.

    Returns:
        The counts, errors and timing of the run.

    Raises:
        StoreError: The database cannot be read or written (a lost
            PostgreSQL connection is retried first).
        ValueError: ``shard`` is not ``(K, N)`` with ``1 <= K <= N``.
    """
    if shard is not None:
        shard = _check_shard(*shard)
    with _frozen_heap():
        return _index(
            store, paths, wadors_root, workers, batch_size, prune, progress, shard
        )


def _index(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    wadors_root: str | None,
    workers: int | None,
    batch_size: int,
    prune: bool,
    progress: ProgressCallback | None,
    shard: tuple[int, int] | None,
) -> IndexReport:
    """:func:`index_paths`, its arguments checked."""
    TestHooks.install()
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    # What the store knows the roots by (file names that are not UTF-8 are
    # escaped in locations, see discovery.location_of).
    root_locations = [location_of(root) for root in roots]
    tally = _Tally()
    known = _reconnecting(store, lambda: store.known_sources(root_locations))
    batches = _Batches(store, batch_size, tally)
    # Locations to keep; only needed for prune.  Under a shard, prune may
    # forget only locations of this share (``owns``).
    seen: set[str] = set()
    owns = None if shard is None else _ShardOwns(*shard)
    note = seen.add if prune else _ignore
    found = discover(roots)
    if shard is not None:
        found = _in_shard(found, *shard)
    todo = _to_read(found, known, tally, batches, note)
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
        _reconnecting(store, lambda: store.prune(root_locations, seen, owns=owns))
    report = tally.report()
    if progress is not None:
        progress(report)
    return report


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


def shard_of(location: str, count: int) -> int:
    """The share (1 to ``count``) a source location belongs to.

    The first 8 bytes of the BLAKE2b digest of the location's UTF-8 text, as a
    big-endian integer, modulo ``count``, plus one.  Stable across runs,
    processes and machines; a zip member is placed by its own location
    (``/abs/a.zip!/member``), so one archive's members spread over the shares.
    """
    digest = hashlib.blake2b(
        location.encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") % count + 1


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (``metastore index --shard``) into ``(K, N)``.

    Raises:
        ValueError: Not two integers with ``1 <= K <= N``; one-line message.
    """
    part, sep, count = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError(text)
        k, n = int(part), int(count)
    except ValueError:
        raise ValueError(f"shard must be K/N (e.g. 2/3), not {text!r}") from None
    return _check_shard(k, n)


def _check_shard(k: int, n: int) -> tuple[int, int]:
    if isinstance(k, bool) or isinstance(n, bool) or not (1 <= k <= n):
        raise ValueError(f"shard {k}/{n}: need 1 <= K <= N (K/N, e.g. 2/3)")
    return k, n


@dataclass(frozen=True)
class _ShardOwns:
    """``Store.prune``'s ``owns`` under ``--shard K/N``: a location of share K.

    A sharded run prunes only its own share, whatever the other shares hold.
    """

    k: int
    n: int

    def __call__(self, location: str) -> bool:
        """``location`` belongs to share ``k`` of ``n`` (:func:`shard_of`)."""
        return shard_of(location, self.n) == self.k


def _in_shard(
    found: Iterator[Entry | ErrorRecord], k: int, n: int
) -> Iterator[Entry | ErrorRecord]:
    """Keep the sources (and discovery errors) whose location is in share K."""
    for item in found:
        location = (
            item.location if isinstance(item, ErrorRecord) else (item.source.location)
        )
        if shard_of(location, n) == k:
            yield item


def _reconnecting(store: Store, work: Callable[[], _T]) -> _T:
    """Run ``work`` (one transaction), again after a lost PostgreSQL connection.

    A batch is one transaction, so a write cut by a dropped connection left
    nothing behind and is simply written again (rewriting a location is
    idempotent, should the commit have gone through).  Gives up after
    :data:`RECONNECT_ATTEMPTS` with the last :class:`StoreError`.
    """
    for attempt in range(1, RECONNECT_ATTEMPTS + 1):
        try:
            return work()
        except (StoreError, OperationalError) as exc:
            if attempt == RECONNECT_ATTEMPTS or not _lost_connection(store, exc):
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


def _lost_connection(store: Store, exc: Exception) -> bool:
    """Whether ``exc`` is PostgreSQL going away (worth a reconnect), not a bug.

    Writes raise :class:`StoreError` with the driver error as its cause;
    reads (``known_sources``) raise the driver error itself.
    """
    if store.engine.dialect.name != "postgresql":
        return False
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    if getattr(cause, "connection_invalidated", False):
        return True
    # Connecting failed (server restarting, not accepting connections yet).
    return isinstance(cause, OperationalError)


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
    zips = ReadCache()
    try:
        for chunk in chunks:
            for entry in chunk:
                yield read_entry(entry, root, zips)
    finally:
        zips.close()


def _worker_init() -> None:
    """Leave Ctrl-C to the main process; die with it if it is killed.

    A main process killed outright (SIGKILL, out of memory) cannot stop its
    pool; on Linux each worker asks the kernel for SIGKILL when its parent
    dies, so no reader is left behind.

    Everything a worker starts with (modules, the parent's objects when
    forked) lives as long as the worker: frozen, the garbage collector no
    longer walks it again and again while reading (~8 % of a worker's time).
    """
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl
            pass
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


#: prctl option: the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


# One per worker process (a pool lives for one run): consecutive chunks of one
# archive share the open zip, and folders are resolved once.
_WORKER_ZIPS = ReadCache()


def _read_chunk(chunk: list[Entry], root: str | None) -> list[Outcome]:
    """Worker task: read a chunk of entries, encoded for the store.

    Encoding the values here (``store_encode.pre_encode``) keeps that work
    off the writing process, and bytes pickle faster than nested dicts.
    """
    outcomes = [read_entry(entry, root, _WORKER_ZIPS) for entry in chunk]
    memo = EncodeMemo()  # equal values of the chunk are encoded and pickled once
    return [
        replace(o, instances=pre_encode(o.instances, memo)) if o.instances else o
        for o in outcomes
    ]


def _chunks(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    while chunk := list(islice(entries, size)):
        yield chunk


class TestHooks:
    """Deterministic crash and pause points for tests, set by environment variables.

    Tests drive ``python -m metastore`` in subprocesses and need it to stop at
    a chosen point without depending on timing.  Nothing here runs unless one
    of these variables is set (docs/guarantees.md lists them):

    ``METASTORE_TEST_KILL_AFTER_BATCHES=N``
        SIGKILL this process right after batch N is committed.
    ``METASTORE_TEST_KILL_AT_SQL=N:TEXT``
        SIGKILL this process just before the N-th SQL statement (of any
        engine of this process, ``COPY`` included) that contains TEXT,
        ignoring case: inside a batch's or a migration's transaction.
    ``METASTORE_TEST_PAUSE_AT_SQL=N:TEXT`` with ``METASTORE_TEST_PAUSE_FILE=PATH``
        Just before that statement, create ``PATH.paused`` and wait until
        ``PATH`` exists (at most :attr:`PAUSE_LIMIT` seconds), then go on.
    """

    __test__ = False  # not a pytest test class, whatever its name

    #: Seconds a pause waits for its file before going on anyway.
    PAUSE_LIMIT = 120.0
    _instance: TestHooks | None = None

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.kill_after_batches = _int_or_none(
            environ.get("METASTORE_TEST_KILL_AFTER_BATCHES")
        )
        self.kill_at = _sql_point(environ.get("METASTORE_TEST_KILL_AT_SQL"))
        self.pause_at = _sql_point(environ.get("METASTORE_TEST_PAUSE_AT_SQL"))
        self.pause_file = environ.get("METASTORE_TEST_PAUSE_FILE")
        self._seen: dict[str, int] = {}

    @classmethod
    def get(cls) -> TestHooks:
        """The hooks of this process, read from the environment once."""
        if cls._instance is None:
            cls._instance = TestHooks(os.environ)
        return cls._instance

    @classmethod
    def install(cls) -> None:
        """Watch every engine's SQL if a SQL hook is set (a no-op otherwise).

        ``COPY`` statements (PostgreSQL's ``image_modules`` rows) bypass
        SQLAlchemy's cursor events; the store reports them through
        ``store_write.BEFORE_COPY``, so the hooks see them as statements too.
        """
        from metastore import store_write

        hooks = cls.get()
        if not (hooks.kill_at or hooks.pause_at):
            return
        if not event.contains(Engine, "before_cursor_execute", _before_sql):
            event.listen(Engine, "before_cursor_execute", _before_sql)
        if _before_copy not in store_write.BEFORE_COPY:
            store_write.BEFORE_COPY.append(_before_copy)

    def batch_committed(self, written: int) -> None:
        """Called after each committed batch with the number committed so far."""
        if self.kill_after_batches == written:
            _kill_self()

    def before_sql(self, statement: str) -> None:
        """Called before every SQL statement while a SQL hook is set."""
        text = statement.lower()
        for point in (self.kill_at, self.pause_at):
            if point is not None and point[1] in text:
                self._seen[point[1]] = self._seen.get(point[1], 0) + 1
        if self.kill_at and self._seen.get(self.kill_at[1]) == self.kill_at[0]:
            _kill_self()
        if self.pause_at and self._seen.get(self.pause_at[1]) == self.pause_at[0]:
            self._seen[self.pause_at[1]] += 1  # pause once only
            self._pause()

    def _pause(self) -> None:
        if not self.pause_file:
            return
        go = Path(self.pause_file)
        Path(f"{go}.paused").touch()
        deadline = time.monotonic() + self.PAUSE_LIMIT
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def _before_sql(
    conn: Any, cursor: Any, statement: str, *args: Any, **kwargs: Any
) -> None:
    TestHooks.get().before_sql(statement)


def _before_copy(statement: str) -> None:
    TestHooks.get().before_sql(statement)


def _kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text else None


def _sql_point(text: str | None) -> tuple[int, str] | None:
    """``"N:TEXT"`` -> ``(N, text in lower case)``."""
    if not text:
        return None
    count, _, sql = text.partition(":")
    return int(count), sql.lower()
