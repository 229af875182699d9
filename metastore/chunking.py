"""The one chunk helper: items in lists of at most ``size``.

Statements bind at most so many parameters (``metastore.store``), and worker
tasks take so many entries (``metastore.index``): both cut their items here.
It imports nothing of metastore.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

__all__ = ["chunked"]

T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield ``items`` in order, in lists of at most ``size`` (none if empty).

    ``items`` may be an iterator: it is read one chunk at a time.
    """
    if size < 1:
        raise ValueError(f"a chunk size must be at least 1, not {size!r}")
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk
