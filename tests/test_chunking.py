"""Tests for metastore.chunking, the one chunk helper."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metastore.chunking import chunked


@given(st.lists(st.integers()), st.integers(min_value=1, max_value=7))
def test_chunks_keep_every_item_in_order(items: list[int], size: int) -> None:
    """Chunks are full but the last, never empty, and join back to the items."""
    parts = list(chunked(items, size))
    assert [x for part in parts for x in part] == items
    assert all(len(part) == size for part in parts[:-1])
    assert all(1 <= len(part) <= size for part in parts)


def test_an_iterator_is_read_a_chunk_at_a_time() -> None:
    """A generator is consumed lazily: the first chunk needs only its items."""
    taken: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(10):
            taken.append(n)
            yield n

    first = next(chunked(numbers(), 3))
    assert first == [0, 1, 2]
    assert taken == [0, 1, 2]


def test_a_size_below_one_is_refused() -> None:
    """A zero size would loop forever: it is a ValueError naming the size."""
    with pytest.raises(ValueError, match="at least 1, not 0"):
        next(chunked([1], 0))
