"""``metastore reindex``: stale stored answers recomputed from the stored DICOM JSON.

Every instance records the mapping version that computed its modules
(``instances.mapping_version``).  :func:`reindex` reads the instances stored
by another version than this metastore's ``MAPPING_VERSION`` (every
instance with ``everything=True``) back from the store, with their DICOM
JSON and the imageIds of their frames; worker processes rebuild their
records with the indexer's own :func:`~metastore.index.extract.build_instance`
(frames named by the stored imageIds, so no imageId changes); the records
go back through ``Store.replace_modules``, one transaction per batch.  No
source file is opened.  A crash loses the batch in flight only: a rerun
picks up the instances still stale.  At the end, values no row refers to
any more are swept.  Returns a :class:`ReindexReport`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from metastore.chunking import chunked
from metastore.errors import IndexingError, InvalidImageIdError
from metastore.imageid import ImageId, parse_image_id
from metastore.index.extract import build_instance
from metastore.index.pipeline import (
    BATCH_IMAGES,
    DEFAULT_BATCH_SIZE,
    PROGRESS_INTERVAL,
    _frozen_heap,
    _reconnecting,
)
from metastore.index.report import MAX_REPORTED_ERRORS
from metastore.index.workers import map_chunks
from metastore.modules import MAPPING_VERSION
from metastore.records import ErrorRecord, InstanceRecord, StoredInstance
from metastore.store.encode import EncodeMemo, pre_encode

if TYPE_CHECKING:
    from metastore.store import Store

__all__ = ["ReindexReport", "reindex", "stale_instances"]

#: Instances read from the store per query.
READ_SIZE = 256
#: Stands for a frame no stored imageId names (never a storable imageId:
#: it holds a NUL).
_UNNAMED = "\x00unnamed frame "

#: ``progress(report_so_far)``: every :data:`PROGRESS_INTERVAL` and at the end.
ReindexProgress = Callable[["ReindexReport"], None]


@dataclass(frozen=True, slots=True)
class ReindexReport:
    """What a reindex run did; counts are of instances unless named otherwise."""

    #: Instances read to be recomputed (the stale ones, or all under ``--all``).
    instances: int = 0
    #: Instances whose modules were replaced by this mapping's.
    reindexed: int = 0
    #: Instances this mapping cannot recompute: left as they were (still stale).
    failed: int = 0
    #: Instances deleted or written again by another process meanwhile (left
    #: to it).
    changed: int = 0
    #: Images of the reindexed instances.
    images: int = 0
    #: Frames that became images (stored under an imageId named like their
    #: siblings').
    images_added: int = 0
    #: Images deleted: frames this mapping does not answer for.
    images_removed: int = 0
    #: Instances at another mapping than this metastore's after the run.
    stale: int = 0
    #: Wall-clock seconds.
    seconds: float = 0.0
    #: The first :data:`MAX_REPORTED_ERRORS` failures.
    errors: tuple[ErrorRecord, ...] = ()
    #: How many failures there were in all.
    error_count: int = 0

    @property
    def rate(self) -> float:
        """Instances per second."""
        return self.instances / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every instance read was recomputed (or left to a writer)."""
        return self.failed == 0

    @property
    def exit_status(self) -> int:
        """The ``metastore reindex`` exit status: 0 if :attr:`ok`, else 1."""
        return 0 if self.ok else 1


@dataclass
class _Tally:
    """The mutable counts behind a :class:`ReindexReport`."""

    started: float = field(default_factory=time.perf_counter)
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[ErrorRecord] = field(default_factory=list)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def error(self, error: ErrorRecord) -> None:
        self.count("failed")
        self.count("error_count")
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(error)

    def report(self, **extra: int) -> ReindexReport:
        return ReindexReport(
            seconds=time.perf_counter() - self.started,
            errors=tuple(self.errors),
            **self.counts,
            **extra,
        )


def stale_instances(store: Store) -> int:
    """How many instances of ``store`` hold answers of another mapping."""
    return store.stale_instances(MAPPING_VERSION)


def reindex(
    store: Store,
    *,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    everything: bool = False,
    progress: ReindexProgress | None = None,
) -> ReindexReport:
    """Recompute the modules of stale instances from their stored DICOM JSON.

    Args:
        store: the store to bring up to date.
        workers: worker processes (``None``: one per CPU; 0 or 1: none).
        batch_size: instances per transaction (a crash loses at most one).
        everything: recompute every instance, not only the stale ones.
        progress: called with the report so far now and then, and at the end.

    Returns:
        The counts, failures and timing of the run.

    Raises:
        StoreError: the database cannot be read or written (a lost
            PostgreSQL connection is retried first).
        WorkerPoolError: worker processes kept dying (after a dead one a
            fresh pool goes on and what its pool lost is recomputed again
            alone, only an instance that kills a process failing; see
            ``metastore.index.workers``); the batches written before stay.
    """
    with _frozen_heap():
        return _reindex(store, workers, batch_size, everything, progress)


def _reindex(
    store: Store,
    workers: int | None,
    batch_size: int,
    everything: bool,
    progress: ReindexProgress | None,
) -> ReindexReport:
    """:func:`reindex`, its arguments given."""
    tally = _Tally()
    batch: list[tuple[StoredInstance, InstanceRecord]] = []
    images = 0
    written = 0  # batches written

    def flush() -> None:
        nonlocal images, written
        if not batch:
            return
        pairs = list(batch)
        done, refused = _reconnecting(store, lambda: store.replace_modules(pairs))
        for error in refused:
            tally.error(error)
        tally.count("reindexed", done.instances)
        tally.count("changed", done.gone)
        tally.count("images_added", done.images_added)
        tally.count("images_removed", done.images_removed)
        tally.count("images", images)
        batch.clear()
        images = 0
        written += 1

    if workers is None:
        workers = os.cpu_count() or 1
    todo = _stored(store, None if everything else MAPPING_VERSION, READ_SIZE)
    next_call = time.perf_counter() + PROGRESS_INTERVAL
    for old, new in _recompute_all(todo, workers):
        tally.count("instances")
        if isinstance(new, ErrorRecord):
            tally.error(new)
        else:
            batch.append((old, new))
            images += len(new.images)
            if len(batch) >= max(1, batch_size) or images >= BATCH_IMAGES:
                flush()
        if progress is not None and time.perf_counter() >= next_call:
            progress(tally.report())
            next_call = time.perf_counter() + PROGRESS_INTERVAL
    flush()
    if written:
        # What the replaced modules held and nothing else uses any more.
        _reconnecting(store, store.sweep)
    stale = _reconnecting(store, lambda: stale_instances(store))
    report = tally.report(stale=stale)
    if progress is not None:
        progress(report)
    return report


def _stored(store: Store, current: str | None, size: int) -> Iterator[StoredInstance]:
    """The instances to recompute, by id, read ``size`` at a time."""
    after = 0
    while True:
        read = functools.partial(
            store.instances_to_reindex, current, after=after, limit=size
        )
        chunk = _reconnecting(store, read)
        yield from chunk
        if len(chunk) < size:
            return
        after = chunk[-1].id


# --- workers -------------------------------------------------------------

Result = InstanceRecord | ErrorRecord

#: Stored instances per worker task.  Their records are encoded per value
#: only (``pre_encode``); the writing process compresses them per batch
#: (``Store.replace_modules``), so no chunk needs to be large.
CHUNK_SIZE = 16


def _recompute_all(
    todo: Iterator[StoredInstance], workers: int
) -> Iterator[tuple[StoredInstance, Result]]:
    """Recompute every instance, in worker processes when there are enough.

    Yields each instance with its result in the order read, whatever the
    number of workers (``metastore.index.workers``), so a run gives the same
    store with 1 or N workers.
    """
    chunks = enumerate(chunked(todo, CHUNK_SIZE))
    for _, old, new in map_chunks(_recompute_chunk, chunks, workers, crashed=_failure):
        yield old, new


def _recompute_chunk(chunk: list[StoredInstance]) -> list[Result]:
    """Worker task: recompute a chunk of instances, encoded for the store."""
    results = [recompute(old) for old in chunk]
    memo = EncodeMemo()  # equal values of the chunk are encoded and pickled once
    records = pre_encode([r for r in results if isinstance(r, InstanceRecord)], memo)
    encoded = iter(records)
    return [r if isinstance(r, ErrorRecord) else next(encoded) for r in results]


def recompute(old: StoredInstance) -> InstanceRecord | ErrorRecord:
    """The record of a stored instance by this mapping, or why there is none.

    Its frames keep their stored imageIds; a frame that had no image is
    named like its siblings (``ImageId.with_frame``, as the indexer named
    them).  The record carries no DICOM JSON (the stored one stays).
    """
    names = _StoredNames(old.image_ids)
    try:
        record = build_instance(old.dicom_json, old.source, lambda *_: names)
    except IndexingError as exc:
        return _failure(old, getattr(exc, "reason", str(exc)))
    if record.sop_instance_uid != old.sop_instance_uid:
        return _failure(
            old,
            f"its DICOM JSON now reads as SOP Instance UID "
            f"{record.sop_instance_uid}: index its source again",
        )
    for image in record.images:
        if image.image_id.startswith(_UNNAMED):
            return _failure(
                old,
                f"frame {image.frame} is an image now, but no stored imageId "
                "of the instance names it: index its source again",
            )
    return replace(record, dicom_json={})


def _failure(old: StoredInstance, reason: str) -> ErrorRecord:
    """A failure to recompute ``old``, naming its location and SOP Instance UID."""
    return ErrorRecord(
        old.source.location,
        "invalid",
        f"reindex of SOP Instance UID {old.sop_instance_uid}: {reason}",
    )


class _StoredNames:
    """The frames of a stored instance, named as stored."""

    __slots__ = ("_base", "_names")

    def __init__(self, names: Mapping[int, str]) -> None:
        self._names = names
        self._base = _base(names)

    def with_frame(self, frame: int) -> str:
        """The stored imageId of ``frame``, else one named like its siblings."""
        name = self._names.get(frame)
        if name is not None:
            return name
        if self._base is not None:
            return self._base.with_frame(frame)
        return f"{_UNNAMED}{frame}"


def _base(names: Mapping[int, str]) -> ImageId | None:
    """A stored imageId that names its frame as ``with_frame`` does, if any."""
    for frame, name in sorted(names.items()):
        try:
            parsed = parse_image_id(name)
        except InvalidImageIdError:
            continue
        if parsed.with_frame(frame) == name:
            return parsed
    return None
