"""The store: instance records in, module values out, on SQLite or PostgreSQL.

Its one public face is :class:`Store` (``metastore.store.Store``, with
:class:`InstanceSource`, where an instance was indexed from, and
:class:`ImageRef`, the image a reference names); the modules below are its
rooms:

- ``api``: :class:`Store`, the store's whole public API;
- ``schema``, ``db``: the tables, engines and Alembic migrations;
- ``codec``: module values and DICOM JSON as stored bytes;
- ``encode``: a batch's validation and pre-encoding (also run in indexer
  worker processes, which never import SQLAlchemy);
- ``write``, ``read``, ``query``, ``prune``: the statements of each job;
- ``refs``: references to images (imageIds in any form, paths, UIDs).

``Store`` loads on first use, so that a worker importing ``encode`` or
``codec`` does not pay for SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metastore.store.api import ImageRef, InstanceSource, Store

__all__ = ["ImageRef", "InstanceSource", "Store"]


def __getattr__(name: str) -> Any:
    """Load :class:`Store` and its value types on first use (PEP 562)."""
    if name in __all__:
        from metastore.store import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'metastore.store' has no attribute {name!r}")
