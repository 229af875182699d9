"""Indexing: paths in, instance records written to a :class:`~metastore.store.Store`.

Its public face is :func:`index_paths`, the :class:`IndexReport` it
returns (or :class:`IndexInterrupted`, on Ctrl-C), its
:data:`DEFAULT_BATCH_SIZE`, :func:`parse_shard` (``K/N`` as ``--shard``
takes it), :func:`count_sources` (a quick pre-count, for progress) and
:func:`sniff` (what a source is, by its first :data:`HEAD_SIZE` bytes: a
:class:`Kind`).  The rooms, in the order a
source passes through them:

- ``discovery``: walking files, folders and zips, telling kinds apart;
- ``sharding``: ``--shard K/N``, which sources a run owns;
- ``read``: one source -> instance records, in a worker process;
- ``extract``: one DICOM JSON instance -> its record (UIDs, search
  attributes, one image per frame);
- ``report``: the run's tally and report;
- ``pipeline``: the run itself (workers, batches, reconnects, prune);
- ``recompute``: stale stored answers recomputed from the stored DICOM JSON
  (:func:`reindex`, its :class:`ReindexReport`, :func:`stale_instances`).

The names load on first use, so that a worker importing ``read`` does not
import the pipeline.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metastore.index.discovery import HEAD_SIZE, Kind, sniff
    from metastore.index.pipeline import DEFAULT_BATCH_SIZE, index_paths
    from metastore.index.recompute import ReindexReport, reindex, stale_instances
    from metastore.index.report import IndexInterrupted, IndexReport
    from metastore.index.sharding import count_sources, parse_shard

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "HEAD_SIZE",
    "IndexInterrupted",
    "IndexReport",
    "Kind",
    "ReindexReport",
    "count_sources",
    "index_paths",
    "parse_shard",
    "reindex",
    "sniff",
    "stale_instances",
]

_EXPORTS = {
    "HEAD_SIZE": "metastore.index.discovery",
    "Kind": "metastore.index.discovery",
    "sniff": "metastore.index.discovery",
    "DEFAULT_BATCH_SIZE": "metastore.index.pipeline",
    "IndexInterrupted": "metastore.index.report",
    "IndexReport": "metastore.index.report",
    "count_sources": "metastore.index.sharding",
    "index_paths": "metastore.index.pipeline",
    "parse_shard": "metastore.index.sharding",
    "ReindexReport": "metastore.index.recompute",
    "reindex": "metastore.index.recompute",
    "stale_instances": "metastore.index.recompute",
}


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metastore.index' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
