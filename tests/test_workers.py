"""Tests for metastore.index.workers: chunks to worker processes and back in order."""

from __future__ import annotations

import os

import pytest

from metastore.index.workers import map_chunks

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
