"""The worker processes of a run: how they start, and how chunks go to them.

:func:`map_chunks` hands chunks of items to a pool of processes
(``metastore.index.pipeline`` reads sources, ``metastore.index.recompute``
rebuilds stored instances), keeps a bounded number in flight and gives the
results back in the order of the chunks; a chunk whose worker died comes
back as one failure per item.  A job too small for processes runs in this
one.  How a worker starts is here too (:func:`_process_context`,
:func:`_worker_init`).  It imports nothing of metastore: a worker loads
only what its task needs.
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
from itertools import chain, islice
from multiprocessing.context import BaseContext
from typing import TypeVar

__all__ = ["TASKS_PER_WORKER", "map_chunks"]

#: Tasks queued per worker beyond the one it runs: bounds memory in flight.
TASKS_PER_WORKER = 3

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
    pool = ProcessPoolExecutor(
        workers, mp_context=_process_context(), initializer=_worker_init
    )
    try:
        pending: deque[tuple[K, list[T], Future[list[R]]]] = deque()
        for key, items in chain(first, chunks):
            pending.append((key, items, pool.submit(task, items)))
            while len(pending) > workers * TASKS_PER_WORKER:
                yield from _result(*pending.popleft(), crashed)
        while pending:
            yield from _result(*pending.popleft(), crashed)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _map_here(
    task: Callable[[list[T]], list[R]], chunks: Iterable[tuple[K, list[T]]]
) -> Iterator[tuple[K, T, R]]:
    """:func:`map_chunks` in this process, chunk by chunk."""
    for key, items in chunks:
        for item, result in zip(items, task(items), strict=True):
            yield key, item, result


def _result(
    key: K,
    items: list[T],
    future: Future[list[R]],
    crashed: Callable[[T, str], R],
) -> list[tuple[K, T, R]]:
    """A chunk's results, or a failure per item if its worker failed."""
    try:
        return [
            (key, item, result)
            for item, result in zip(items, future.result(), strict=True)
        ]
    except Exception as exc:  # a worker died (out of memory, a crash in a codec)
        reason = f"worker process failed: {type(exc).__name__}: {exc}"
        return [(key, item, crashed(item, reason)) for item in items]


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
