"""Scale-out: which share of an archive one ``metastore index --shard K/N`` run takes.

Owns the deterministic split of sources over N processes or machines
(:func:`shard_of`, a hash of the location), the ``K/N`` syntax
(:func:`parse_shard`), and the filters the indexer applies with it: the
sources a share reads and the stored locations its ``--prune`` may forget,
and the quick pre-count of a share's sources (:func:`count_sources`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from metastore.index.discovery import Entry, count_files
from metastore.records import ErrorRecord

__all__ = [
    "ShardOwns",
    "check_shard",
    "count_sources",
    "in_shard",
    "parse_shard",
    "shard_of",
]


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
    return check_shard(k, n)


def check_shard(k: int, n: int) -> tuple[int, int]:
    if isinstance(k, bool) or isinstance(n, bool) or not (1 <= k <= n):
        raise ValueError(f"shard {k}/{n}: need 1 <= K <= N (K/N, e.g. 2/3)")
    return k, n


@dataclass(frozen=True)
class ShardOwns:
    """``Store.prune``'s ``owns`` under ``--shard K/N``: a location of share K.

    A sharded run prunes only its own share, whatever the other shares hold.
    """

    k: int
    n: int

    def __call__(self, location: str) -> bool:
        """``location`` belongs to share ``k`` of ``n`` (:func:`shard_of`)."""
        return shard_of(location, self.n) == self.k


def in_shard(
    found: Iterator[Entry | ErrorRecord], k: int, n: int
) -> Iterator[Entry | ErrorRecord]:
    """Keep the sources (and discovery errors) whose location is in share K."""
    for item in found:
        location = (
            item.location if isinstance(item, ErrorRecord) else (item.source.location)
        )
        if shard_of(location, n) == k:
            yield item


def count_sources(
    paths: Iterable[str | os.PathLike[str]], shard: tuple[int, int] | None = None
) -> int:
    """A quick count of the sources under ``paths`` (of share K of N), for progress.

    See :func:`metastore.index.discovery.count_files`: a walk that reads
    nothing but zip directories, so it may differ a little from what
    discovery finds (it goes by the ``.zip`` name, discovery by content).
    """
    owns = None if shard is None else ShardOwns(*check_shard(*shard))
    return count_files(paths, owns)
