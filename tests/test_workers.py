"""Tests for metastore.index.workers: chunks to worker processes and back in order."""

from __future__ import annotations

import functools
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from metastore.errors import WorkerPoolError
from metastore.index import workers
from metastore.index.workers import TASKS_PER_WORKER, map_chunks

#: A chunk holding this item makes its task fail.
RAISES = -1
#: A chunk holding this item kills its worker process.
KILLS = -2


def double(items: list[int]) -> list[int | str]:
    """The task: each item doubled, unless the chunk asks for a failure."""
    if RAISES in items:
        raise ValueError("a bad chunk")
    if KILLS in items:
        os._exit(3)  # what the kernel's out-of-memory killer leaves behind
    return [2 * n for n in items]


def failed(item: int, reason: str) -> str:
    """The failure of an item whose worker failed."""
    return f"{item}: {reason}"


def keyed(chunks: list[list[int]]) -> list[tuple[str, list[int]]]:
    """The chunks under the keys ``c0``, ``c1``, ..."""
    return [(f"c{k}", chunk) for k, chunk in enumerate(chunks)]


CHUNKS = [[1, 2], [3], [4, 5, 6], [7, 8], [9], [10, 11], [12], [13, 14], [15]]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_results_come_in_the_order_of_the_chunks(workers: int) -> None:
    """Every item comes back once with its key and result, in order, 1 or N workers."""
    results = list(map_chunks(double, keyed(CHUNKS), workers, crashed=failed))
    expected = [(key, n, 2 * n) for key, chunk in keyed(CHUNKS) for n in chunk]
    assert results == expected


@pytest.mark.parametrize(
    ("workers", "chunks"),
    [(0, CHUNKS), (1, CHUNKS), (4, CHUNKS[:1]), (4, [])],
)
def test_one_worker_or_a_tiny_job_runs_here(
    workers: int, chunks: list[list[int]]
) -> None:
    """No worker, or fewer than two chunks: ``here`` runs every chunk, in order."""
    ran: list[list[int]] = []

    def here(items: list[int]) -> list[int | str]:
        ran.append(items)
        return double(items)

    results = list(
        map_chunks(double, keyed(chunks), workers, here=here, crashed=failed)
    )
    assert ran == chunks
    assert [result for _, _, result in results] == [2 * n for c in chunks for n in c]


def test_a_pool_does_not_run_here() -> None:
    """With workers and two chunks or more, ``here`` is never called."""

    def here(items: list[int]) -> list[int | str]:
        raise AssertionError("ran in the main process")

    results = list(map_chunks(double, keyed(CHUNKS), 2, here=here, crashed=failed))
    assert len(results) == sum(len(chunk) for chunk in CHUNKS)


def test_a_failed_task_fails_each_item_of_its_chunk_only() -> None:
    """A task that raises gives one failure per item of its chunk, naming why."""
    chunks = [[1, 2], [RAISES, 3], [4]]
    results = list(map_chunks(double, keyed(chunks), 2, crashed=failed))
    reason = "worker process failed: ValueError: a bad chunk"
    assert results == [
        ("c0", 1, 2),
        ("c0", 2, 4),
        ("c1", RAISES, f"{RAISES}: {reason}"),
        ("c1", 3, f"3: {reason}"),
        ("c2", 4, 8),
    ]


def test_a_dead_worker_fails_each_item_of_its_chunk() -> None:
    """A worker killed while running a chunk fails that chunk's items, in order."""
    # the killing chunk comes last, so every chunk is handed over before the
    # pool breaks; the others may be lost with it (their futures fail too)
    chunks = [[1, 2], [3], [4, KILLS]]
    results = list(map_chunks(double, keyed(chunks), 2, crashed=failed))
    assert [(key, item) for key, item, _ in results] == [
        (key, n) for key, chunk in keyed(chunks) for n in chunk
    ]
    broken = "worker process failed: BrokenProcessPool: "
    for _, item, result in results[-2:]:
        assert str(result).startswith(f"{item}: {broken}")
    for _, item, result in results[:-2]:
        assert result == 2 * item or str(result).startswith(f"{item}: {broken}")


# -- a worker that dies does not stop the run ------------------------------

#: Seconds a killing task waits for the chunk after it to start (a safety
#: net against a hang, never reached when the test passes).
PATIENCE = 60.0

#: The reason a chunk lost with its pool gives.
BROKEN = "worker process failed: BrokenProcessPool: "


def double_or_die(
    items: list[int], marks: str, kill: frozenset[int]
) -> list[int | str]:
    """The task of chunk ``items[0] // 2``: each item doubled, or a dead worker.

    Each chunk marks its start in the folder ``marks``.  A chunk of ``kill``
    kills its worker once the next chunk has started: with two workers the
    other one has then sent back every chunk before, so which chunks are done
    when the pool breaks does not depend on timing.
    """
    chunk = items[0] // 2
    Path(marks, f"started-{chunk}").touch()
    if chunk in kill:
        after = Path(marks, f"started-{chunk + 1}")
        deadline = time.monotonic() + PATIENCE
        while not after.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os._exit(3)  # what the kernel's out-of-memory killer leaves behind
    return [2 * n for n in items]


def pairs(count: int) -> list[list[int]]:
    """``count`` chunks of two items; chunk ``c`` holds ``2c`` and ``2c + 1``."""
    return [[2 * c, 2 * c + 1] for c in range(count)]


#: Chunks handed to a pool after the one that kills it, before the run sees
#: the break: what may be lost with it (two workers).
IN_FLIGHT = 2 * TASKS_PER_WORKER


@pytest.mark.parametrize(
    ("count", "kill", "restarts"),
    [
        (16, {5}, workers.POOL_RESTARTS),  # one dead worker mid-run
        # a pool that gave back a chunk whole does not count towards the
        # limit: with none allowed in a row, three breaks still go by
        (40, {3, 13, 23}, 0),
    ],
)
def test_a_dead_worker_costs_only_the_chunks_in_flight(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    kill: set[int],
    restarts: int,
) -> None:
    """A worker dies mid-run: its pool's unfinished chunks fail, a fresh pool
    reads the rest, every item comes back once and in order, no process is left."""
    monkeypatch.setattr(workers, "POOL_RESTARTS", restarts)
    task = functools.partial(double_or_die, marks=str(tmp_path), kill=frozenset(kill))
    chunks = keyed(pairs(count))
    results = list(map_chunks(task, chunks, 2, crashed=failed))
    assert [(key, item) for key, item, _ in results] == [
        (key, n) for key, chunk in chunks for n in chunk
    ]
    # Done before the break: every chunk before a killing one.  Surely read by
    # a fresh pool: those handed over once the run saw the break.  Between
    # them, a chunk is done or lost with the pool, by timing.
    lost = {c for k in kill for c in range(k, k + IN_FLIGHT + 1)}
    for key, item, result in results:
        c = int(key[1:])
        if c in kill:
            assert str(result).startswith(f"{item}: {BROKEN}")
        elif c in lost:
            assert result == 2 * item or str(result).startswith(f"{item}: {BROKEN}")
        else:
            assert result == 2 * item, (key, result)
    assert max(kill) + IN_FLIGHT + 1 < count  # a fresh pool read the last chunk
    assert multiprocessing.active_children() == []  # the broken pools were joined


def test_pools_that_keep_dying_stop_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk kills its worker: after the restart limit the run raises, having
    yielded only failures, and leaves no process behind."""
    monkeypatch.setattr(workers, "POOL_RESTARTS", 1)
    chunks = keyed([[n, KILLS] for n in range(40)])
    seen = []
    with pytest.raises(WorkerPoolError) as caught:
        for key, item, result in map_chunks(double, chunks, 2, crashed=failed):
            seen.append((key, item))
            assert str(result).startswith(f"{item}: {BROKEN}")
    assert caught.value.pools == 2
    assert caught.value.reason.startswith("BrokenProcessPool: ")
    assert "2 worker pools in a row broke" in str(caught.value)
    assert caught.value.reason in str(caught.value)
    assert seen == [(key, n) for key, chunk in chunks[: len(seen) // 2] for n in chunk]
    assert multiprocessing.active_children() == []
