"""The worker processes of a run: how they start, and how chunks go to them.

:func:`map_chunks` hands chunks of items to a pool of processes
(``metastore.index.pipeline`` reads sources, ``metastore.index.recompute``
rebuilds stored instances), keeps a bounded number in flight and gives the
results back in the order of the chunks.  A worker that dies (out of
memory, a crash in a codec on a corrupt file) breaks its pool: a fresh pool
reads on, and the chunks the broken one held are read again in a process
of their own, halved on every crash until the items that kill a process
are alone (they fail; the others give their results).  Processes that keep
dying, :data:`POOL_RESTARTS` times in a row, stop the run
(:class:`~metastore.errors.WorkerPoolError`).  A job too small for
processes runs in this one.  How a worker starts is here too
(:func:`_process_context`, :func:`_worker_init`).  Of metastore it imports
only ``metastore.errors`` (a leaf): a worker loads only what its task needs.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain, islice
from multiprocessing.context import BaseContext
from typing import Generic, TypeVar

from metastore.errors import WorkerPoolError

__all__ = ["POOL_RESTARTS", "TASKS_PER_WORKER", "map_chunks"]

#: Tasks queued per worker beyond the one it runs: bounds memory in flight.
TASKS_PER_WORKER = 3

#: Worker processes that may die in a row, with no chunk or part of one
#: coming back whole in between, before the run stops
#: (:class:`~metastore.errors.WorkerPoolError`): a broken pool, or the
#: process a lost chunk is read again in.  A corrupt file kills a pool's
#: worker once and the process its chunk is read again in once per halving,
#: each halving also giving back a whole half, so a few such files, even
#: neighbours, do not come near the limit.  Processes that keep dying mean
#: every read fails (memory too short for any chunk, a library that crashes
#: on everything): going on would fail the whole archive, a process at a
#: time, and a report of that many failures hides the cause.  Reading in
#: this process instead is no way out: there the same crash would kill the
#: run itself.
POOL_RESTARTS = 8

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")


def map_chunks(
    task: Callable[[list[T]], list[R]],
    chunks: Iterable[tuple[K, list[T]]],
    workers: int,
    *,
    here: Callable[[list[T]], list[R]] | None = None,
    crashed: Callable[[T, str], R],
) -> Iterator[tuple[K, T, R]]:
    """Run ``task`` on every chunk, in worker processes when there are enough.

    A task that raises fails its chunk only.  A worker process that dies
    breaks the pool: the broken pool is shut down, its processes joined, and
    a fresh one (same start method and initializer) takes the chunks that
    follow, in order.  Every chunk the broken pool held and had not given
    back (which ones is a matter of timing) is read again, in turn, in a
    process of its own: whole if it can be (a chunk lost with another's
    worker), else halved on each crash until a part holds one item, which
    fails (``crashed(item, "worker process failed: BrokenProcessPool:
    ...")``).  So only an item that kills a process alone fails, and a chunk
    with none gives the results it gives in a pool.

    Args:
        task: what a worker does with a chunk's items: one result per item,
            in their order.  Sent to the workers, so it must pickle (a
            module-level function, or a ``functools.partial`` of one).
        chunks: ``(key, items)`` pairs; the key stays in this process.
        workers: worker processes; 0 or 1 runs every chunk in this process.
        here: ``task`` as this process runs it (default: ``task``), for
            state kept from chunk to chunk, such as open archives.
        crashed: the failure of an item whose chunk's worker failed, given
            the item and the reason.

    Yields:
        ``(key, item, result)`` for every item, in the order of the chunks
        and of their items whatever the number of workers, so that 1 or N
        workers give the same run.

    Raises:
        WorkerPoolError: Worker processes died more than
            :data:`POOL_RESTARTS` times in a row, none giving a chunk or a
            part of one back whole; what was yielded before stands.
    """
    run_here = task if here is None else here
    chunks = iter(chunks)
    if workers <= 1:
        yield from _map_here(run_here, chunks)
        return
    first = list(islice(chunks, 2))
    if len(first) < 2:  # a tiny job: starting processes would cost more
        yield from _map_here(run_here, first)
        return
    pools = _Pools(task, workers)
    try:
        pending: deque[tuple[K, list[T], Future[list[R]]]] = deque()
        for key, items in chain(first, chunks):
            pending.append((key, items, pools.submit(items)))
            while len(pending) > workers * TASKS_PER_WORKER:
                yield from pools.result(*pending.popleft(), crashed)
        while pending:
            yield from pools.result(*pending.popleft(), crashed)
    finally:
        pools.shutdown()


class _Pools(Generic[T, R]):
    """The pool of a run, replaced by a fresh one whenever it breaks, and the
    process that chunks lost with a pool are read again in.

    A pool breaks when one of its processes dies: ``concurrent.futures``
    then fails every chunk it holds and refuses new ones
    (``BrokenProcessPool``).  The break shows at the next submit, which
    starts a fresh pool, and in the futures of the chunks it failed, which
    :meth:`result` reads again.
    """

    def __init__(self, task: Callable[[list[T]], list[R]], workers: int) -> None:
        self._task = task
        self._workers = workers
        # chosen once: a fresh pool starts its workers as the first did
        self._context = _process_context()
        #: Processes died in a row (pools broken, or the lone process),
        #: and whether a chunk or part came back whole since the last death.
        self._broken = 0
        self._whole = False
        self._pool = self._start(self._workers)
        #: One process for reading lost chunks again, started when needed.
        self._alone: ProcessPoolExecutor | None = None

    def _start(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            workers, mp_context=self._context, initializer=_worker_init
        )

    def submit(self, items: list[T]) -> Future[list[R]]:
        """Hand a chunk to the pool, to a fresh one if it broke."""
        try:
            future = self._pool.submit(self._task, items)
        except BrokenProcessPool as exc:
            # its processes are dead or terminated; wait=True joins them and
            # the pool's thread, which has settled every future of the pool
            self._pool.shutdown(wait=True)
            self._died(exc)
            self._pool = self._start(self._workers)
            future = self._pool.submit(self._task, items)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future[list[R]]) -> None:
        # in the pool's thread (or this one, for a future already done): a
        # chunk back whole is progress, and the next death does not count
        # towards the limit
        if not future.cancelled() and future.exception() is None:
            self._whole = True

    def _died(self, exc: BaseException) -> None:
        """Count a dead process; past the limit in a row, stop the run."""
        self._broken = 0 if self._whole else self._broken + 1
        self._whole = False
        if self._broken > POOL_RESTARTS:
            raise WorkerPoolError(self._broken, f"{type(exc).__name__}: {exc}")

    def result(
        self,
        key: K,
        items: list[T],
        future: Future[list[R]],
        crashed: Callable[[T, str], R],
    ) -> list[tuple[K, T, R]]:
        """A chunk's results; read again alone if its pool broke; a failure
        per item if its task raised."""
        try:
            results = future.result()
        except BrokenProcessPool:  # a worker of its pool died, maybe not on it
            results = self._again(items, crashed)
        except Exception as exc:  # the task raised
            reason = _failed(exc)
            results = [crashed(item, reason) for item in items]
        return [(key, item, r) for item, r in zip(items, results, strict=True)]

    def _again(self, items: list[T], crashed: Callable[[T, str], R]) -> list[R]:
        """Read ``items`` in a process of their own, halving them on a crash.

        A chunk that was only in flight with another chunk's dying worker
        comes back whole, with the results a pool gives; one holding an item
        that kills its process is halved until that item is alone.
        """
        if self._alone is None:
            self._alone = self._start(1)
        try:
            results = self._alone.submit(self._task, items).result()
        except BrokenProcessPool as exc:
            self._alone.shutdown(wait=True)
            self._alone = None
            self._died(exc)
            if len(items) == 1:
                return [crashed(items[0], _failed(exc))]
            half = len(items) // 2
            return self._again(items[:half], crashed) + self._again(
                items[half:], crashed
            )
        except Exception as exc:  # the task raised
            reason = _failed(exc)
            return [crashed(item, reason) for item in items]
        self._whole = True
        return results

    def shutdown(self) -> None:
        """Stop the pools, dropping chunks not started (the run stopped early)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._alone is not None:
            self._alone.shutdown(wait=True, cancel_futures=True)


def _map_here(
    task: Callable[[list[T]], list[R]], chunks: Iterable[tuple[K, list[T]]]
) -> Iterator[tuple[K, T, R]]:
    """:func:`map_chunks` in this process, chunk by chunk."""
    for key, items in chunks:
        for item, result in zip(items, task(items), strict=True):
            yield key, item, result


def _failed(exc: BaseException) -> str:
    """The reason given for the items of a chunk whose task or worker failed."""
    return f"worker process failed: {type(exc).__name__}: {exc}"


def _process_context() -> BaseContext:
    """Fork where that is safe (Linux, no other threads): workers start at once.

    Elsewhere the platform's default; forked workers inherit the parent's
    database connections but never use them, and exit without finalisers.
    """
    if sys.platform == "linux" and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


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
