"""Deterministic crash and pause points for the subprocess tests.

The crash and concurrency tests (``tests/test_nothing_lost.py``,
``tests/test_url_secrets.py``) run the ``metastore`` command through
``tests/hooked_cli.py``, which installs :class:`CrashPoints` from these
environment variables and then runs the command as it is.  They stop it at
a chosen batch or SQL statement without depending on timing.  Nothing is
installed unless one of the variables is set, and metastore itself never
imports this module: it watches the process through the store's neutral
seam, :func:`metastore.store.db.on_statement` (which sees PostgreSQL's
binary ``COPY`` too), and SQLAlchemy's own events.

``METASTORE_TEST_KILL_AFTER_BATCHES=N``
    SIGKILL the process right after its N-th committed write transaction
    that inserted instances (a batch of the indexer) or set their mapping
    version (a batch of ``metastore reindex``).
``METASTORE_TEST_KILL_AT_SQL=N:TEXT``
    SIGKILL the process just before the N-th SQL statement (of any engine of
    the process, ``COPY`` included) that contains TEXT, ignoring case:
    inside a batch's or a migration's transaction.
``METASTORE_TEST_PAUSE_AT_SQL=N:TEXT`` with ``METASTORE_TEST_PAUSE_FILE=PATH``
    Just before that statement, create ``PATH.paused`` and wait until
    ``PATH`` exists (at most :attr:`CrashPoints.PAUSE_LIMIT` seconds), then
    go on.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool

from metastore.store import db

#: Statements that make a write transaction a batch: an indexer batch stores
#: instances; a reindex batch sets their mapping version.


def is_batch_sql(text: str) -> bool:
    """Whether ``text`` (lower case) is a batch's statement."""
    return "insert into instances" in text or (
        "update instances set" in text and "mapping_version" in text
    )


class CrashPoints:
    """The crash and pause points of one process, read from its environment."""

    __test__ = False  # not a pytest test class

    #: Seconds a pause waits for its file before going on anyway.
    PAUSE_LIMIT = 120.0

    def __init__(self, environ: Mapping[str, str]) -> None:
        kill_after = environ.get("METASTORE_TEST_KILL_AFTER_BATCHES")
        self.kill_after_batches = int(kill_after) if kill_after else None
        self.kill_at = _sql_point(environ.get("METASTORE_TEST_KILL_AT_SQL"))
        self.pause_at = _sql_point(environ.get("METASTORE_TEST_PAUSE_AT_SQL"))
        self.pause_file = environ.get("METASTORE_TEST_PAUSE_FILE")
        #: Batches committed so far.
        self.batches = 0
        self._seen: dict[str, int] = {}
        self._in_batch = False  # the open transaction inserted instances
        self._committed_batch = False  # ... and committed: count at checkin

    @property
    def active(self) -> bool:
        """Whether any point is set."""
        return bool(self.kill_after_batches or self.kill_at or self.pause_at)

    def install(self) -> None:
        """Watch this process's SQL and commits (nothing if no point is set)."""
        if not self.active:
            return
        db.on_statement(self.before_sql)
        if self.kill_after_batches:
            event.listen(Engine, "commit", self._commit)
            event.listen(Engine, "rollback", self._rollback)
            # A connection goes back to the pool once its transaction is
            # over: for a commit, after the database has it.
            event.listen(Pool, "checkin", self._checkin)

    def before_sql(self, statement: str) -> None:
        """Just before each SQL statement: count, and kill or pause on a point."""
        text = statement.lower()
        if is_batch_sql(text):
            self._in_batch = True
        for point in (self.kill_at, self.pause_at):
            if point is not None and point[1] in text:
                self._seen[point[1]] = self._seen.get(point[1], 0) + 1
        if self.kill_at and self._seen.get(self.kill_at[1]) == self.kill_at[0]:
            _kill_self()
        if self.pause_at and self._seen.get(self.pause_at[1]) == self.pause_at[0]:
            self._seen[self.pause_at[1]] += 1  # pause once only
            self._pause()

    def batch_committed(self) -> None:
        """After each committed batch: kill if it is the chosen one."""
        self.batches += 1
        if self.kill_after_batches == self.batches:
            _kill_self()

    def _commit(self, conn: Connection) -> None:
        self._committed_batch, self._in_batch = self._in_batch, False

    def _rollback(self, conn: Connection) -> None:
        self._in_batch = False

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        if self._committed_batch:
            self._committed_batch = False
            self.batch_committed()

    def _pause(self) -> None:
        if not self.pause_file:
            return
        go = Path(self.pause_file)
        Path(f"{go}.paused").touch()
        deadline = time.monotonic() + self.PAUSE_LIMIT
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)


def _kill_self() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _sql_point(text: str | None) -> tuple[int, str] | None:
    """``"N:TEXT"`` -> ``(N, text in lower case)``."""
    if not text:
        return None
    count, _, sql = text.partition(":")
    return int(count), sql.lower()
