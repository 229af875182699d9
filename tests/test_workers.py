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
from metastore.index.workers import map_chunks

#: A chunk holding this item makes its task fail.
RAISES = -1
#: A chunk holding this item kills its worker process.
KILLS = -2
#: The reason of an item that killed its worker process, read alone.
BROKEN = "worker process failed: BrokenProcessPool: "


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


def test_a_dead_worker_fails_only_the_item_that_kills() -> None:
    """A worker killed while running a chunk: the chunks its pool lost are
    read again alone, the killing one halved, and only the killing item fails."""
    chunks = [[1, 2], [3], [4, KILLS]]
    results = list(map_chunks(double, keyed(chunks), 2, crashed=failed))
    assert results[:-1] == [("c0", 1, 2), ("c0", 2, 4), ("c1", 3, 6), ("c2", 4, 8)]
    ((key, item, result),) = results[-1:]
    assert (key, item) == ("c2", KILLS)
    assert str(result).startswith(f"{KILLS}: {BROKEN}")
    assert multiprocessing.active_children() == []


def test_the_item_that_kills_is_found_among_many() -> None:
    """Halving a lost chunk isolates the one item that kills; its neighbours
    come back as a pool gives them, in order."""
    chunks = [[1, 2, 3, 4, 5, KILLS, 7, 8, 9, 10], [11, 12]]
    results = list(map_chunks(double, keyed(chunks), 2, crashed=failed))
    assert [(key, item) for key, item, _ in results] == [
        (key, n) for key, chunk in keyed(chunks) for n in chunk
    ]
    fails = [item for _, item, result in results if isinstance(result, str)]
    assert fails == [KILLS]
    assert all(result == 2 * item for _, item, result in results if item != KILLS)


# -- a worker that dies does not stop the run ------------------------------

#: Seconds a killing task waits for the chunk after it to start (a safety
#: net against a hang, never reached when the test passes).
PATIENCE = 60.0


def double_or_die(
    items: list[int], marks: str, kill: frozenset[int]
) -> list[int | str]:
    """The task of chunk ``items[0] // 2``: each item doubled, or a dead worker.

    Each chunk marks its start in the folder ``marks``.  A chunk of ``kill``
    holding its first item kills its worker once the next chunk has started:
    with two workers the other one has then sent back every chunk before, so
    which chunks are done when the pool breaks does not depend on timing.
    Read again alone, the chunk's second item is doubled.
    """
    chunk = items[0] // 2
    Path(marks, f"started-{chunk}").touch()
    if chunk in kill and 2 * chunk in items:
        after = Path(marks, f"started-{chunk + 1}")
        deadline = time.monotonic() + PATIENCE
        while not after.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os._exit(3)  # what the kernel's out-of-memory killer leaves behind
    return [2 * n for n in items]


def pairs(count: int) -> list[list[int]]:
    """``count`` chunks of two items; chunk ``c`` holds ``2c`` and ``2c + 1``."""
    return [[2 * c, 2 * c + 1] for c in range(count)]


@pytest.mark.parametrize(
    ("count", "kill", "restarts"),
    [
        (16, {5}, workers.POOL_RESTARTS),  # one dead worker mid-run
        # a chunk or half back whole resets the count: each of three crashes
        # kills the pool (a whole chunk came back before: not counted), the
        # lost chunk read alone, and its killing half: two in a row
        (40, {3, 13, 23}, 2),
    ],
)
def test_a_dead_worker_costs_only_the_item_that_kills(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    kill: set[int],
    restarts: int,
) -> None:
    """A worker dies mid-run: a fresh pool reads on, the chunks lost with the
    broken one are read again alone, and only the killing items fail; every
    item comes back once and in order, no process is left."""
    monkeypatch.setattr(workers, "POOL_RESTARTS", restarts)
    task = functools.partial(double_or_die, marks=str(tmp_path), kill=frozenset(kill))
    chunks = keyed(pairs(count))
    results = list(map_chunks(task, chunks, 2, crashed=failed))
    assert [(key, item) for key, item, _ in results] == [
        (key, n) for key, chunk in chunks for n in chunk
    ]
    for key, item, result in results:
        if item // 2 in kill and item % 2 == 0:
            assert str(result).startswith(f"{item}: {BROKEN}")
        else:
            assert result == 2 * item, (key, result)
    assert multiprocessing.active_children() == []  # the broken pools were joined


def die(items: list[int]) -> list[int | str]:
    """A task that kills its worker on every chunk, and on every part of one."""
    os._exit(3)


def test_pools_that_keep_dying_stop_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read kills its worker: after the restart limit the run raises, having
    yielded only failures, and leaves no process behind."""
    monkeypatch.setattr(workers, "POOL_RESTARTS", 1)
    chunks = keyed([[n, n + 100] for n in range(40)])
    seen = []
    with pytest.raises(WorkerPoolError) as caught:
        for key, item, result in map_chunks(die, chunks, 2, crashed=failed):
            seen.append((key, item))
            assert str(result).startswith(f"{item}: {BROKEN}")
    assert caught.value.pools == 2
    assert caught.value.reason.startswith("BrokenProcessPool: ")
    assert "2 worker pools in a row broke" in str(caught.value)
    assert caught.value.reason in str(caught.value)
    assert seen == [(key, n) for key, chunk in chunks[: len(seen) // 2] for n in chunk]
    assert multiprocessing.active_children() == []
