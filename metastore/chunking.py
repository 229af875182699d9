"""Work in chunks: items in lists of at most ``size``, and the garbage
collector paused while a chunk's objects are made.

Statements bind at most so many parameters (``metastore.store``), and worker
tasks take so many entries (``metastore.index``): both cut their items here.
A chunk's rows or records are many new objects without reference cycles,
which the cyclic collector would only walk again and again: both build
them under :func:`gc_paused`.  It imports nothing of metastore.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

__all__ = ["chunked", "gc_paused"]

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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a burst of allocations."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
