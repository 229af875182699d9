"""The one exception hierarchy of metastore.

Every error metastore raises on purpose derives from :class:`MetastoreError`, so
callers (and the CLI, in one place) can catch them together::

    MetastoreError
    ├── InvalidImageIdError      (a ValueError)       a malformed imageId
    ├── ModuleError              (a ValueError)       an unknown module type
    ├── DicomError                                    input that is not usable DICOM
    │   └── IndexingError                             one source that failed to index
    ├── StoreError                                    the database cannot be used
    │   ├── ConnectionLostError                       the server went away or cannot be
    │   │                                             reached (a retry may help)
    │   ├── DataRefusedError                          the database refused a value sent
    │   ├── DatabaseNotFoundError                     no file, or no schema, to read
    │   └── SchemaError                               the schema is wrong or missing
    │       └── SchemaNotAtHeadError                  the schema is behind the code
    ├── QueryError               (a ValueError)       a bad query filter
    ├── ImageNotFoundError       (a LookupError)      a reference to no stored image
    ├── AmbiguousReferenceError  (a ValueError)       a reference to several images
    ├── WadorsRootError          (a ValueError)       indexing under another root
    └── WorkerPoolError                               worker processes kept dying

The store raises its errors from the database driver's in one place
(``metastore.store.db.map_driver_errors``); nothing outside the store sees a
SQLAlchemy or driver exception.  This module is a leaf: it imports nothing
from metastore.
"""

from __future__ import annotations


class MetastoreError(Exception):
    """Base class of every error metastore raises on purpose."""


class InvalidImageIdError(MetastoreError, ValueError):
    """An imageId that cannot be parsed; the message names the imageId."""

    def __init__(self, image_id: object, reason: str) -> None:
        self.image_id = image_id
        self.reason = reason
        super().__init__(f"invalid imageId {image_id!r}: {reason}")


class ModuleError(MetastoreError, ValueError):
    """A module type that metastore does not know."""


class DicomError(MetastoreError):
    """Input that is not usable DICOM (Part 10 or DICOM JSON)."""


class IndexingError(DicomError):
    """One source (file path, archive member or URL) that could not be indexed."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class StoreError(MetastoreError):
    """The database cannot be reached or used; URLs in messages hide passwords."""


class ConnectionLostError(StoreError):
    """The database server went away or could not be reached.

    Raised for PostgreSQL only (a SQLite file has no connection to lose): a
    connection dropped mid-transaction (the transaction did not commit), or
    one that could not be opened (server down or restarting, refused, a
    database or role that is missing).  The work may succeed if tried again
    later; the indexer does so for its batches.
    """


class DataRefusedError(StoreError):
    """The database (or its driver) refused a value it was sent.

    PostgreSQL SQLSTATE class 22 (data exception) or 54000 (a limit, such as
    the size of a B-tree entry), SQLite's ``DataError``, or a value the
    driver cannot encode (text it cannot send, an integer past 64 bits).
    The value is at fault, not the database: the same work without it may
    succeed.

    Attributes:
        reason: The database's (or driver's) own words, on one line, without
            secrets.
        sqlstate: PostgreSQL's SQLSTATE code, or ``None`` (SQLite, driver).
    """

    def __init__(self, message: str, *, reason: str, sqlstate: str | None) -> None:
        self.reason = reason
        self.sqlstate = sqlstate
        super().__init__(message)


class DatabaseNotFoundError(StoreError):
    """Nothing to read: a SQLite file that does not exist, or a database
    without metastore's schema, opened by a reader (which creates nothing)."""


class SchemaError(StoreError):
    """The database schema is missing, foreign or damaged."""


class SchemaNotAtHeadError(SchemaError):
    """The database schema is behind this version of metastore."""


class QueryError(MetastoreError, ValueError):
    """A query filter that cannot be used (bad date range, unknown level...)."""


class ImageNotFoundError(MetastoreError, LookupError):
    """A reference (imageId, file location, SOP Instance UID) to no stored image."""


class AmbiguousReferenceError(MetastoreError, ValueError):
    """A reference that names several stored instances (a DICOM JSON file's)."""


class WadorsRootError(MetastoreError, ValueError):
    """Indexing under a DICOMweb root other than the store's imageIds were made
    under (``--wadors-root``); the message says how to go on."""


class WorkerPoolError(MetastoreError):
    """A run's worker processes kept dying: the run stops.

    A worker that dies breaks its pool: a fresh pool reads on, and the
    chunks the broken one held are read again in a pool of one process,
    halved on each crash (docs/indexing.md).  When pools break more than
    ``metastore.index.workers.POOL_RESTARTS`` times in a row, none giving
    a chunk or a part of one back whole, every read is failing (memory too
    short for the workers, a library that crashes on anything) and the run
    stops.  What it committed before stays.

    Attributes:
        pools: The worker pools (of the run, or of one process for a lost
            chunk) that broke in a row.
        reason: Why the last one broke.
    """

    def __init__(self, pools: int, reason: str) -> None:
        self.pools = pools
        self.reason = reason
        super().__init__(
            f"worker processes keep dying: {pools} worker pools in a row broke"
            f" before a chunk was done (the last: {reason}); is memory short"
            " for this many workers?"
        )
